"""videoseal-litert: VideoSeal-family watermark extractors and embedders from PyTorch to verified, quantized LiteRT.

The project's folders (``core.layers.LAYERS``: ``core/``, ``models/``, ``calibration_data/``, ``runtime/``,
``convert/``, ``quantize/``, ``package/``, ``web/``, ``demo/``, ``video/``, ``evaluate/``) are installed as subpackages of this one (``package-dir`` in
``pyproject.toml``), so installing the project adds a single top-level name to an environment.
"""

__version__ = "0.1.0"
