"""Stage 4: compare a ``.tflite`` variant with the PyTorch extractor on held-out real photos.

Checks names, then shapes, then values. Per output: max abs difference and SQNR; mask agreement
(sign of the mask logit) and bit agreement (sign of each bit logit). Writes
``verify-<variant>.json`` and ``.md``; raises VerificationError when a threshold is missed.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from videoseal_litert.calibration_data.build import Item, is_watermarked
from videoseal_litert.convert.artifacts import machine_description, write_json, write_text
from videoseal_litert.convert.console import progress
from videoseal_litert.convert.load import sha256_file
from videoseal_litert.convert.runtime import TFLiteExtractor
from videoseal_litert.models.errors import ImageError, VerificationError
from videoseal_litert.models.registry import Thresholds

log = logging.getLogger(__name__)


def sqnr_db(ref: np.ndarray, got: np.ndarray) -> float | None:
    """Signal-to-quantization-noise ratio in dB; None when the two are identical."""
    noise = float(np.sum((ref.astype(np.float64) - got) ** 2))
    signal = float(np.sum(ref.astype(np.float64) ** 2))
    if noise == 0.0:
        return None
    return 10.0 * math.log10(signal / noise) if signal > 0 else -math.inf


@dataclass
class VerifyReport:
    model_id: str
    variant: str
    tflite: str
    num_images: int
    images: list[str]
    max_abs_logit_diff: float
    max_abs_mask_diff: float
    max_abs_bit_diff: float
    mask_agreement: float
    bit_agreement: float
    sqnr_db: float | None
    mask_sqnr_db: float | None
    bit_sqnr_db: float | None
    bit_rows: str
    bit_agreement_unwatermarked: float | None
    random_init: bool
    thresholds: dict[str, Any]
    passed: bool
    failures: list[str] = field(default_factory=list)
    machine: str = ""
    num_threads: int = 2
    tflite_sha256: str = ""


def check_thresholds(r: dict[str, Any], t: Thresholds) -> list[str]:
    """Every threshold the measured figures miss, as readable lines."""
    fails = []
    if t.max_abs_logit_diff is not None and r["max_abs_logit_diff"] > t.max_abs_logit_diff:
        fails.append(f"max abs logit diff {r['max_abs_logit_diff']:.3g} > {t.max_abs_logit_diff:.3g}")
    if r["mask_agreement"] < t.min_mask_agreement:
        fails.append(f"mask agreement {r['mask_agreement']:.4%} < {t.min_mask_agreement:.4%}")
    if r["bit_agreement"] < t.min_bit_agreement:
        fails.append(f"bit agreement {r['bit_agreement']:.4%} < {t.min_bit_agreement:.4%}")
    if t.min_sqnr_db is not None and r["sqnr_db"] is not None and r["sqnr_db"] < t.min_sqnr_db:
        fails.append(f"SQNR {r['sqnr_db']:.2f} dB < {t.min_sqnr_db:.2f} dB")
    return fails


def pytorch_logits(module: torch.nn.Module, items: Iterable[Item]) -> tuple[list[str], np.ndarray]:
    """Names and (N, 1 + nbits) PyTorch logits of the items, computed one at a time."""
    names, out = [], []
    for it in items:
        with torch.no_grad():
            out.append(module(torch.from_numpy(it.pixels)).numpy()[0])
        names.append(it.name)
    if not names:
        raise ImageError("no usable images to verify on")
    return names, np.stack(out)


@dataclass
class Reference:
    """PyTorch logits on the verification images, computed once, so the model can be freed before
    any ``.tflite`` is loaded (at ChunkySeal size the two together would need over 8 GB)."""

    names: list[str]
    inputs: list[np.ndarray]  # NHWC float32 (1, H, W, 3)
    logits: np.ndarray  # (N, 1 + nbits)

    @property
    def bit_rows(self) -> np.ndarray:
        """Rows whose bits carry a message: the watermarked ones when the set has any (an
        unwatermarked image's bit logits are noise around zero), else every row."""
        marked = np.array([is_watermarked(n) for n in self.names])
        return marked if marked.any() else np.ones(len(self.names), dtype=bool)


def reference_logits(module: torch.nn.Module, items: Iterable[Item]) -> Reference:
    names, inputs, logits = [], [], []
    for it in progress(items, desc="PyTorch reference"):
        with torch.no_grad():
            logits.append(module(torch.from_numpy(it.pixels)).numpy()[0])
        names.append(it.name)
        inputs.append(np.ascontiguousarray(it.pixels.transpose(0, 2, 3, 1)))
    if not names:
        raise ImageError("no usable images to verify on")
    log.info("  PyTorch reference on %d images", len(names))
    return Reference(names, inputs, np.stack(logits))


def compare(reference: Reference, tflite_path: Path, img_size: int, num_threads: int = 2) -> np.ndarray:
    """TFLite logits on the reference's inputs, checked for shape."""
    runner = TFLiteExtractor(tflite_path, num_threads=num_threads)
    expected_shape = (1, img_size, img_size, 3)
    if runner.input_shape != expected_shape:
        raise VerificationError(f"{tflite_path}: input shape {runner.input_shape}, expected {expected_shape}")
    nbits = reference.logits.shape[1] - 1
    got = []
    pairs = list(zip(reference.names, reference.inputs, strict=True))
    for i, (name, x) in enumerate(progress(pairs, desc=f"verifying {tflite_path.name}")):
        mask, bits = runner(x)
        if mask.shape != (1, 1) or bits.shape != (1, nbits):
            raise VerificationError(f"{tflite_path}: output shapes {mask.shape}, {bits.shape}; expected (1, 1), (1, {nbits})")
        got.append(np.concatenate([mask[0], bits[0]]))
        log.info("  [%d] %s", i + 1, name)
    return np.stack(got)


def verify_variant(
    model_id: str,
    variant: str,
    reference: Reference,
    tflite_path: Path,
    thresholds: Thresholds,
    random_init: bool,
    out_dir: Path,
    img_size: int = 256,
    num_threads: int = 2,
) -> VerifyReport:
    """Verify one variant, write its JSON and Markdown reports, raise if it misses a threshold."""
    names, ref = reference.names, reference.logits
    got = compare(reference, tflite_path, img_size, num_threads)
    diff = np.abs(ref - got)
    rows = reference.bit_rows
    figures = {
        "max_abs_logit_diff": float(diff.max()),
        "max_abs_mask_diff": float(diff[:, 0].max()),
        "max_abs_bit_diff": float(diff[:, 1:].max()),
        "mask_agreement": float(np.mean((ref[:, 0] > 0) == (got[:, 0] > 0))),
        # Bits, and the SQNR of the logits, where a message was embedded (all rows without an embedder).
        "bit_agreement": float(np.mean((ref[rows, 1:] > 0) == (got[rows, 1:] > 0))),
        "sqnr_db": sqnr_db(ref[rows], got[rows]),
        "mask_sqnr_db": sqnr_db(ref[:, 0], got[:, 0]),
        "bit_sqnr_db": sqnr_db(ref[rows, 1:], got[rows, 1:]),
        "bit_rows": "watermarked images" if not rows.all() else "all images",
        "bit_agreement_unwatermarked": float(np.mean((ref[~rows, 1:] > 0) == (got[~rows, 1:] > 0))) if (~rows).any() else None,
    }
    failures = check_thresholds(figures, thresholds)
    report = VerifyReport(
        model_id=model_id,
        variant=variant,
        tflite=tflite_path.name,
        num_images=len(names),
        images=names,
        random_init=random_init,
        thresholds=asdict(thresholds),
        passed=not failures,
        failures=failures,
        machine=machine_description(),
        num_threads=num_threads,
        tflite_sha256=sha256_file(tflite_path),
        **figures,
    )
    write_json(out_dir / f"verify-{variant}.json", asdict(report))
    write_text(out_dir / f"verify-{variant}.md", render_markdown(report))
    log.info("\n%s", summary_table(report))
    if failures:
        raise VerificationError(
            f"{model_id} {variant} failed verification: " + "; ".join(failures) + f" (see {out_dir}/verify-{variant}.md)"
        )
    return report


def _fmt_db(v: float | None) -> str:
    return "exact (no error)" if v is None else f"{v:.2f} dB"


def summary_table(r: VerifyReport) -> str:
    t = r.thresholds
    rows = [
        (
            "max abs logit diff",
            f"{r.max_abs_logit_diff:.3g}",
            f"<= {t['max_abs_logit_diff']:.3g}" if t["max_abs_logit_diff"] is not None else "-",
        ),
        ("mask agreement", f"{r.mask_agreement:.4%}", f">= {t['min_mask_agreement']:.4%}"),
        (f"bit agreement ({r.bit_rows})", f"{r.bit_agreement:.4%}", f">= {t['min_bit_agreement']:.4%}"),
        ("SQNR (all logits)", _fmt_db(r.sqnr_db), f">= {t['min_sqnr_db']:.1f} dB" if t["min_sqnr_db"] is not None else "-"),
        ("SQNR mask / bits", f"{_fmt_db(r.mask_sqnr_db)} / {_fmt_db(r.bit_sqnr_db)}", "-"),
    ]
    if r.bit_agreement_unwatermarked is not None:
        rows.append(("bit agreement, unwatermarked images (no message: not gated)", f"{r.bit_agreement_unwatermarked:.4%}", "-"))
    lines = ["| figure | measured | threshold |", "|---|---|---|"] + [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(lines)


def render_markdown(r: VerifyReport) -> str:
    status = "PASSED" if r.passed else "FAILED: " + "; ".join(r.failures)
    weights = "**RANDOM weights (not a trained model)**" if r.random_init else "checkpoint weights"
    return (
        f"# Verification: {r.model_id} / {r.variant}\n\n"
        f"{status}\n\n"
        f"`{r.tflite}` against the PyTorch extractor ({weights}) on {r.num_images} held-out images "
        f"({', '.join(r.images)}), 256x256 views resized as official `detect()` does; {r.num_threads} threads on {r.machine}.\n\n"
        f"{summary_table(r)}\n"
    )
