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

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from videoseal_litert.convert.options import RunOptions
from videoseal_litert.convert.parts import Part
from videoseal_litert.convert.split import float_pieces, hwm_mb, join, remove, scratch_dir
from videoseal_litert.core.artifacts import collect_if_large
from videoseal_litert.core.console import progress
from videoseal_litert.core.errors import CalibrationError
from videoseal_litert.core.images import Tally
from videoseal_litert.models.variants import Variant
from videoseal_litert.quantize.calibrate import calibration_mode, pin_input_ranges
from videoseal_litert.quantize.recipes import build_quantizer, calibration_quantizer
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
            res = q.calibrate(feed, previous_calibration_result=res, num_threads=threads, mode=calibration_mode())
        cal.qsvs.append(res)
        del q
        collect_if_large(path.stat().st_size)
        later = {n for s_in, _ in signatures[k + 1 :] for n in s_in}
        if later:
            runner = open_runner(path, threads)
            for i, files in enumerate(spilled):
                for name, y in runner({n: np.load(files[n]) for n in ins}).items():
                    if name in later:
                        files[name] = workdir / f"act-{i}-{name}.npy"
                        np.save(files[name], y)
            del runner
            collect_if_large(path.stat().st_size)
        for files in spilled:  # what no later piece reads
            for name in [n for n in files if n not in later]:
                files.pop(name).unlink()
        log.info("  calibrated piece %d/%d on %d inputs", k + 1, len(piece_paths), len(spilled))
    return cal


class PieceSource:
    """What the quantize stage quantizes from when the part is in pieces: the float piece files and
    their calibration. ``quantize`` writes a joined variant, ``op_errors`` the per-op error of one for
    the whole model; op names are the joined file's (``piece<k>/<name in piece k>``), so the
    fallback can keep an op of any piece float."""

    def __init__(self, part: Part, paths: list[Path], qsvs: list, record: dict, work: Path, threads: int) -> None:
        self.part, self.paths, self.qsvs, self.record, self.work, self.threads = part, paths, qsvs, record, work, threads
        self._quantized: dict[Path, list[Path]] = {}  # a joined file -> its quantized pieces (for op_errors)
        self._feeds: dict[int, list[list[dict[str, np.ndarray]]]] = {}

    def quantize(self, out: Path, row: Variant, keep_float: list[str]) -> None:
        """``out``: every piece quantized as ``row`` (ops in ``keep_float`` left float), joined."""
        qpaths, name = [], row.name
        for k, p in enumerate(progress(self.paths, desc=f"quantizing {name} piece by piece", unit="pieces")):
            keep = [n.split("/", 1)[1] for n in keep_float if n.startswith(f"piece{k}/")]
            q = build_quantizer(str(p), row, self.part.family.quant, keep)
            res = q.quantize(self.qsvs[k] if q.need_calibration else None, enable_progress_report=False)
            qp = self.work / f"piece{k}-{name}.tflite"
            qp.write_bytes(res.quantized_model)
            qpaths.append(qp)
            del q, res
            collect_if_large(p.stat().st_size)
        join(qpaths, out, self.part.contract.input_names, self.part.contract.output_names)
        self._quantized[out] = qpaths
        self.record["peak_rss_mb_after"][f"quantize_{name}"] = round(hwm_mb())
        log.info("  %s joined; peak RSS so far %.0f MB", name, hwm_mb())

    def feeds(self, inputs: list[dict[str, np.ndarray]]) -> list[list[dict[str, np.ndarray]]]:
        """Each piece's float inputs for ``inputs`` (the part's inputs), through the float pieces in order."""
        key = id(inputs)
        if key not in self._feeds:
            pools = [dict(x) for x in inputs]
            per_piece = []
            for p in self.paths:
                runner = open_runner(p, self.threads)
                names = tuple(runner.input_shapes)
                per_piece.append([{n: pool[n] for n in names} for pool in pools])
                for pool in pools:
                    pool.update(runner({n: pool[n] for n in names}))
                del runner
            self._feeds[key] = per_piece
        return self._feeds[key]

    def op_errors(self, quantized: Path, inputs: list[dict[str, np.ndarray]]) -> list[dict]:
        """Per-op error of a joined file from :meth:`quantize`: each piece against its float piece on
        that piece's float inputs, merged and ranked for the whole model."""
        from videoseal_litert.convert.verify import FAILED_SUFFIX
        from videoseal_litert.quantize.op_error import op_errors, rank

        # A file that failed verification was moved to its failed name: its pieces are those of its shipping name.
        joined = (
            quantized.with_name(quantized.name.removesuffix(FAILED_SUFFIX) + ".tflite")
            if quantized.name.endswith(FAILED_SUFFIX)
            else quantized
        )
        rows = []
        for k, (fp, qp, feed) in enumerate(zip(self.paths, self._quantized[joined], self.feeds(inputs), strict=True)):
            rows += [{**r, "tensor": f"piece{k}/{r['tensor']}"} for r in op_errors(fp, qp, feed, self.threads)]
        return rank(rows)


@contextmanager
def quantize_partitioned(
    opts: RunOptions, part: Part, rows: tuple[Variant, ...], calib_dir: Path | None, tally: Tally
) -> Iterator[PieceSource]:
    """The part cut into float pieces and calibrated piece by piece (for the variants that need it),
    as a :class:`PieceSource`; the pieces are removed on exit. ``tally`` counts the calibration
    inputs (``used``) and names every rejected file."""
    work = scratch_dir(opts.model_dir.path)
    try:
        paths, record = float_pieces(opts, part, work)
        phases = record["peak_rss_mb_after"] = {"convert_parts": round(hwm_mb())}
        qsvs: list = [None] * len(paths)
        if any(row.needs_calibration for row in rows):
            stream = part.calibration_inputs(calib_dir, tally)
            cal = calibrate_pieces(calibration_quantizer, paths, stream, work, threads=opts.threads)
            if not cal.used:
                raise CalibrationError("no usable calibration image: every source was rejected or empty (see the rejected files above)")
            tally.used = cal.used
            # The part's own inputs keep their declared ranges in whichever piece reads them.
            qsvs = [pin_input_ranges(p, q, part.contract) for p, q in zip(paths, cal.qsvs, strict=True)]
            phases["calibrate"] = round(hwm_mb())
        yield PieceSource(part, paths, qsvs, record, work, opts.threads)
    finally:
        remove(work)
