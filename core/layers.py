"""The project's folders, bottom layer first: each imports only the folders below it.

One list for the two things that need it: ``tests/test_layering.py`` asserts the imports follow it, and the stage
fingerprint (``convert/options.code_fingerprint``) hashes every folder in it, so a change anywhere a stage can
import reruns the stage.
"""

from __future__ import annotations

LAYERS: tuple[str, ...] = (
    "core",
    "models",
    "calibration_data",
    "runtime",
    "convert",
    "quantize",
    "package",
    "web",
    "demo",
    "video",
    "evaluate",
    "videoseal_litert",  # the command line
)
