"""videoseal-litert: VideoSeal-family watermark extractors and embedders from PyTorch to verified, quantized LiteRT.

The project's folders (``models/``, ``calibration_data/``, ``runtime/``, ``convert/``, ``quantize/``,
``package/``, ``demo/``) are installed as subpackages of this one (``package-dir`` in
``pyproject.toml``), so installing the project adds a single top-level name to an environment.
"""

__version__ = "0.1.0"
