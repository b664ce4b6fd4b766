"""Quantizing a part whose float ``.tflite`` is over the 2 GB flatbuffer limit (ChunkySeal's extractor
and embedder), or any part when ``max_part_bytes`` asks for it.

ai-edge-quantizer cannot read such a file, so the part is cut into pieces joined by named tensors
(``convert/split.py``: the extractor's chain, the U-Net's levels with their skips), each converted to
its own float ``.tflite``. Every piece is calibrated on the float outputs of the pieces before it for
the same images, quantized with the same recipe as a small model, and the quantized pieces are
joined back into one file by their tensor names. The joined file is verified against PyTorch like
any other variant.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from videoseal_litert.calibration_data.images import Tally
from videoseal_litert.convert.console import progress
from videoseal_litert.convert.split import float_pieces, hwm_mb, join, remove, scratch_dir
from videoseal_litert.models.errors import CalibrationError
from videoseal_litert.runtime.runners import open_runner

log = logging.getLogger(__name__)


@dataclass
class PieceCalibration:
    """Statistics of every piece, and how many inputs went through."""

    qsvs: list[dict] = field(default_factory=list)
    used: int = 0


def calibrate_pieces(
    make_quantizer: Callable[[str], object],
    piece_paths: list[Path],
    inputs: Iterator[dict[str, np.ndarray]],
    workdir: Path,
    chunk: int = 8,
    threads: int = 2,
) -> PieceCalibration:
    """Calibrate piece by piece: piece k sees the float outputs of the pieces before it for the same inputs.

    Piece-major, so only one piece's quantizer and interpreter are in memory at a time; every named
    tensor between pieces (a U-Net's skips included) is spilled to ``workdir`` (.npy) and removed once
    no later piece reads it, so memory does not grow with the number of inputs.
    """
    signatures = []
    for p in piece_paths:
        sig = open_runner(p, threads)
        signatures.append((tuple(sig.input_shapes), tuple(sig.output_shapes)))
        del sig
    spilled: list[dict[str, Path]] = []
    for i, feed in enumerate(inputs):
        files = {}
        for name, x in feed.items():
            files[name] = workdir / f"act-{i}-{name}.npy"
            np.save(files[name], np.ascontiguousarray(x, dtype=np.float32))
        spilled.append(files)
    cal = PieceCalibration(used=len(spilled))
    for k, path in enumerate(piece_paths):
        ins, outs = signatures[k]
        q = make_quantizer(str(path))
        res = None
        for i in range(0, len(spilled), chunk):
            feed = {"serving_default": [{n: np.load(f[n]) for n in ins} for f in spilled[i : i + chunk]]}
            res = q.calibrate(feed, previous_calibration_result=res, num_threads=threads, mode=_mode())
        cal.qsvs.append(res)
        del q
        gc.collect()
        later = {n for s_in, _ in signatures[k + 1 :] for n in s_in}
        if later:
            runner = open_runner(path, threads)
            for i, files in enumerate(spilled):
                for name, y in runner({n: np.load(files[n]) for n in ins}).items():
                    if name in later:
                        files[name] = workdir / f"act-{i}-{name}.npy"
                        np.save(files[name], y)
            del runner
            gc.collect()
        for files in spilled:  # what no later piece reads
            for name in [n for n in files if n not in later]:
                files.pop(name).unlink()
        log.info("  calibrated piece %d/%d on %d inputs", k + 1, len(piece_paths), len(spilled))
    return cal


def _mode():
    from videoseal_litert.quantize.calibrate import calibration_mode

    return calibration_mode()


def quantize_partitioned(opts, part, variants: tuple[str, ...], calib_dir: Path | None, tally: Tally) -> dict:
    """Write the part's ``<prefix><variant>.tflite`` for each variant via pieces; return a record of the
    pieces. ``tally`` counts the calibration inputs (``used``) and names every rejected file."""
    from videoseal_litert.quantize.calibrate import pin_input_ranges
    from videoseal_litert.quantize.recipes import build_quantizer, calibration_quantizer
    from videoseal_litert.runtime.variants import variant

    md = opts.model_dir
    work = scratch_dir(md.path)
    try:
        paths, record = float_pieces(opts, part, work)
        phases = record["peak_rss_mb_after"] = {"convert_parts": round(hwm_mb())}
        qsvs: list = [None] * len(paths)
        if any(variant(v).needs_calibration for v in variants):
            stream = part.calibration_inputs(calib_dir, tally)
            cal = calibrate_pieces(calibration_quantizer, paths, stream, work, threads=opts.threads)
            if not cal.used:
                raise CalibrationError("no usable calibration image: every source was rejected or empty (see the rejected files above)")
            tally.used = cal.used
            # The part's own inputs keep their declared ranges in whichever piece reads them.
            qsvs = [pin_input_ranges(p, q, part.contract) for p, q in zip(paths, cal.qsvs, strict=True)]
            phases["calibrate"] = round(hwm_mb())
        for v in variants:
            qpaths = []
            for k, p in enumerate(progress(paths, desc=f"quantizing {v} piece by piece")):
                q = build_quantizer(str(p), v, part.family.quant)
                res = q.quantize(qsvs[k] if q.need_calibration else None, enable_progress_report=False)
                qp = work / f"piece{k}-{v}.tflite"
                qp.write_bytes(res.quantized_model)
                qpaths.append(qp)
                del q, res
                gc.collect()
            join(qpaths, md / part.file(v), part.contract.input_names, part.contract.output_names)
            for qp in qpaths:
                qp.unlink()
            phases[f"quantize_{v}"] = round(hwm_mb())
            log.info("  %s joined; peak RSS so far %.0f MB", v, phases[f"quantize_{v}"])
        return record
    finally:
        remove(work)
