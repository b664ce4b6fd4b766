"""Calibration: stream calibration items through the float model in small chunks.

ai-edge-quantizer's ``calibrate`` materialises its dataset to count it, so the items are fed in
chunks of CHUNK, each continuing the previous chunk's statistics: memory stays flat in the
number of images.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from itertools import islice
from pathlib import Path

from videoseal_litert.calibration_data.build import Item
from videoseal_litert.convert.console import progress
from videoseal_litert.models.errors import CalibrationError

log = logging.getLogger(__name__)

CHUNK = 8


def calibration_mode():
    """TFLite's profiler-based min/max collection: XNNPACK stays on and intermediate tensors are not
    all kept alive (the default mode preserves every tensor of the graph: ChunkySeal peaked over
    11 GB with it). Min/max is all the INT8 recipes here use."""
    from ai_edge_quantizer.calibrator import CalibrationMode

    return CalibrationMode.CALIBRATION_PROFILER_BASED


def calibrate(quantizer, float_path: Path, stream: Iterable[Item], counts: dict[str, int]) -> tuple[dict, dict]:
    """Run calibration over ``stream`` (``RunOptions.calibration_stream``, which fills ``counts``);
    return the quantizer's statistics and the counts (sources, items, rejected, used)."""
    stream = iter(progress(stream, desc="calibrating"))
    result = None
    done = 0
    while chunk := [{"image": it.pixels.transpose(0, 2, 3, 1).copy()} for it in islice(stream, CHUNK)]:
        result = quantizer.calibrate({"serving_default": chunk}, previous_calibration_result=result, num_threads=2, mode=calibration_mode())
        done += len(chunk)
        log.info("  calibrated %d images", done)
    if not done:
        raise CalibrationError("no usable calibration image: every source was rejected or empty (see the calibration counts above)")
    counts["used"] = done
    return pin_input_range(float_path, result), counts


def pin_input_range(float_path: Path, qsvs: dict, lo: float = 0.0, hi: float = 1.0) -> dict:
    """Set the input's range to its declared [0, 1] rather than what the photos happened to span.

    An int8 input then maps 8-bit pixels one to one (scale 1/255, zero point -128) and never
    clips a brighter or darker image than the calibration set held.
    """
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    name = Interpreter(model_path=str(float_path)).get_input_details()[0]["name"]
    old = qsvs.get(name)
    if old is not None:
        shape = np.shape(old["min"])
        qsvs[name] = {**old, "min": np.full(shape, lo, np.float32), "max": np.full(shape, hi, np.float32)}
    return qsvs
