"""The one rule that makes a file "verified": it agrees with PyTorch wherever its own noise cannot explain a difference.

Every verification (every variant, both parts, every family, x86 and emulated ARM64) judges a file's
outputs against PyTorch's on the same inputs with :func:`judge`. The figures are the watermark's own:

- **signal** ``S``: the RMS of PyTorch's values that carry the decision, i.e. the bit logits of
  watermarked inputs and the detection (mask) logit of every input. For an embedder the signal is the
  watermark it writes (``watermarked - cover``), and its decisions are the bits PyTorch's extractor
  reads from the file's output against those it reads from PyTorch's.
- **noise** ``sigma``: the RMS of the file's error on those values; and at each output of each input,
  its *local* noise ``sigma_ij``: the larger of the file's RMS error over that input's outputs and over
  that output's inputs (:func:`local_noise`; the mask and the bit logits are rows of one final linear
  layer over the same features, so the mask is one output among the others).
- **watermark SNR** ``20 log10(S / sigma)``, which must reach the variant's :class:`Band`
  (``min_snr_db``). That is the absolute cap on the noise: ``sigma_cap = S * 10^(-min_snr_db / 20)``.
  A file whose noise is over it fails however few values lie near the decision boundary.
- **band**: an output whose PyTorch value lies within ``BAND_SIGMAS * min(sigma_ij, sigma_cap)`` of zero
  is one the file's noise could flip. A flip outside the band (a *clear* flip) fails the file and is
  named (input, output, both values). Flips inside the band are counted, listed and allowed up to
  ``MAX_BAND_FLIP_FRACTION`` of the outputs in the band (rounded up).

Why these two constants, and not others (nothing here was chosen for random weights):

- ``BAND_SIGMAS = 5``: quantization error has heavier tails than Gaussian noise. Over every file of the
  trained pair, the fixture and the minis (docs/verification.md), the largest error was 4.45 of its local
  sigma (the fixture's int8); none flipped a value outside its band. Five sigma sits above every error
  measured, and Gaussian noise reaches it once in 1.7 million draws.
- ``MAX_BAND_FLIP_FRACTION = 1/2``: noise of any size flips an output at most half the time (exactly
  half at zero, less further out), so a file that flips more than half of what lies in its band is
  biased, not noisy.

The bands per variant (``models/variants.py``) are watermark SNRs measured on this project's trained
files (the tiny pair, the released-size fixture; FP32/FP16 also the full-size extractors) for a
checkpoint's weights, and on the official code's random minis and the full-size random extractors for
``RANDOM_INIT`` / ``UNTRAINED`` runs, each less ``HEADROOM_DB`` (twice the noise amplitude). A model's
spec may tighten a band, never loosen it (:func:`tightened`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from videoseal_litert.core.errors import PipelineError
from videoseal_litert.core.metrics import rms, snr_db

BAND_SIGMAS = 5.0
MAX_BAND_FLIP_FRACTION = 0.5
HEADROOM_DB = 6.0  # the bands sit this far under the worst SNR measured: twice the noise amplitude
MOST_LISTED = 50  # flips listed per kind in a report (all are counted)


class BandError(PipelineError):
    """A model spec that would loosen a variant's band."""


@dataclass(frozen=True)
class Band:
    """The least watermark SNR (dB) a file of one variant keeps against PyTorch, and where that figure comes from."""

    min_snr_db: float
    source: str = ""

    def noise_cap(self, signal_rms: float) -> float:
        """The largest RMS error the band allows on a signal of this RMS."""
        return signal_rms * 10 ** (-self.min_snr_db / 20)


@dataclass(frozen=True)
class Bands:
    """A variant's band for a checkpoint's (trained) weights and for random weights (``RANDOM_INIT``)."""

    trained: Band
    random: Band

    def pick(self, random_init: bool) -> Band:
        return self.random if random_init else self.trained


def tightened(default: Band, own: Band | None, what: str) -> Band:
    """A spec's own band where it is at least as strict as the default; BandError where it would loosen it."""
    if own is None:
        return default
    if own.min_snr_db < default.min_snr_db:
        raise BandError(
            f"{what}: the spec's band ({own.min_snr_db:g} dB) is looser than the measured default ({default.min_snr_db:g} dB, "
            f"{default.source}); a spec may only tighten a band"
        )
    return own


@dataclass(kw_only=True)
class Verdict:
    """What :func:`judge` found: the figures, every flip by kind, and the failures (empty: passed). The SNR,
    the noise cap and the allowed flips follow from the stored figures."""

    band: Band
    signal_rms: float
    noise_rms: float
    gate_noise: bool = True  # False: the SNR is reported, not judged (it still caps the band)
    gated: int
    flips_judged: bool = True  # False: a signal with no decision (an embedder's pixels)
    in_band: int = 0
    band_flips: int = 0
    largest_error_in_sigmas: float = 0.0
    clear_flips: list[dict[str, Any]] = field(default_factory=list)
    band_flip_list: list[dict[str, Any]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def snr_db(self) -> float:
        return snr_db(self.signal_rms, self.noise_rms)

    @property
    def noise_cap_rms(self) -> float:
        return self.band.noise_cap(self.signal_rms)

    @property
    def allowed_band_flips(self) -> int:
        return allowed_band_flips(self.in_band)

    @property
    def passed(self) -> bool:
        return not self.failures

    def as_dict(self) -> dict[str, Any]:
        return {
            "rule": f"no flip outside {BAND_SIGMAS:g} x min(local noise, noise cap); at most {MAX_BAND_FLIP_FRACTION:g} of the "
            "outputs in that band may flip" + ("; watermark SNR >= the band" if self.gate_noise else ""),
            "min_snr_db": self.band.min_snr_db,
            "band_source": self.band.source,
            "snr_db": None if math.isinf(self.snr_db) and self.snr_db > 0 else round(self.snr_db, 3),
            "signal_rms": self.signal_rms,
            "noise_rms": self.noise_rms,
            "noise_cap_rms": self.noise_cap_rms,
            "noise_gated": self.gate_noise,
            "flips_judged": self.flips_judged,
            "outputs_judged": self.gated,
            "outputs_in_band": self.in_band,
            "flips_in_band": self.band_flips,
            "flips_in_band_allowed": self.allowed_band_flips,
            "clear_flips": len(self.clear_flips),
            "clear_flip_list": self.clear_flips[:MOST_LISTED],
            "band_flip_list": self.band_flip_list[:MOST_LISTED],
            "largest_error_in_sigmas": round(self.largest_error_in_sigmas, 3),
            "passed": self.passed,
            "failures": self.failures,
        }


def local_noise(err: np.ndarray) -> np.ndarray:
    """The file's noise at each output of each input (N, M): the larger of its RMS error over that input's
    outputs and over that output's inputs. Quantization error is uneven both ways (measured on the
    VideoSeal 1.0 mini's int8 file: 0.004-0.066 RMS per input, 0.003-0.22 per output), so the input's
    alone left an error of 9.2 sigma there; the larger of the two, 3.1."""
    sq = np.square(err)
    return np.maximum(np.sqrt(sq.mean(axis=1, keepdims=True)), np.sqrt(sq.mean(axis=0, keepdims=True)))


def allowed_band_flips(in_band: int) -> int:
    return math.ceil(MAX_BAND_FLIP_FRACTION * in_band)


def judge(
    ref: np.ndarray,
    got: np.ndarray,
    judged: np.ndarray,
    band: Band,
    rows: Sequence[str],
    column: Callable[[int], str],
    what: str = "outputs",
    gate_noise: bool = True,
    signal: np.ndarray | None = None,
) -> Verdict:
    """Judge ``got`` against ``ref`` (both (N, M): one row per input) on the values ``judged`` marks.

    ``rows`` names the inputs, ``column(j)`` an output ("bit 3", "mask"). Each input's noise is measured
    over its whole row. ``signal`` (default: ``ref``'s judged values) is what the SNR's signal is the RMS
    of; ``gate_noise`` False leaves the SNR unjudged (reported) while it still caps the band: an embedder's
    decoded bits, whose noise cap is the pixels'."""
    ref = np.asarray(ref, dtype=np.float64)
    got = np.asarray(got, dtype=np.float64)
    judged = np.asarray(judged, dtype=bool)
    if ref.shape != got.shape or ref.shape != judged.shape or ref.ndim != 2:
        raise ValueError(f"judge: shapes {ref.shape}, {got.shape}, {judged.shape}; expected equal (N, M)")
    err = got - ref
    sig = rms(ref[judged] if signal is None else np.asarray(signal))
    noise = rms(err[judged])
    cap = band.noise_cap(sig)
    local = local_noise(err)
    half = BAND_SIGMAS * np.minimum(local, cap)  # the band's half-width, per output of each input
    flips = judged & ((got > 0) != (ref > 0))
    inside = judged & (np.abs(ref) <= half)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(local > 0, np.abs(err) / local, 0.0)
    v = Verdict(
        band=band,
        signal_rms=sig,
        noise_rms=noise,
        gate_noise=gate_noise,
        gated=int(judged.sum()),
        in_band=int(inside.sum()),
        band_flips=int((flips & inside).sum()),
        largest_error_in_sigmas=float(ratio[judged].max()) if judged.any() else 0.0,
    )

    def listed(mask: np.ndarray) -> list[dict[str, Any]]:
        out = [
            {
                "input": rows[i],
                "output": column(int(j)),
                "pytorch": float(ref[i, j]),
                "file": float(got[i, j]),
                "band": float(half[i, j]),
            }
            for i, j in zip(*np.nonzero(mask), strict=True)
        ]
        return sorted(out, key=lambda f: -abs(f["pytorch"]))

    v.clear_flips = listed(flips & ~inside)
    v.band_flip_list = listed(flips & inside)
    if gate_noise and not v.snr_db >= band.min_snr_db:
        v.failures.append(
            f"{what}: watermark SNR {v.snr_db:.2f} dB < {band.min_snr_db:g} dB (noise RMS {noise:.4g} over the cap {cap:.4g} "
            f"on a signal of RMS {sig:.4g})"
        )
    if v.clear_flips:
        named = ", ".join(
            f"{f['input']} {f['output']} ({f['pytorch']:+.3g} -> {f['file']:+.3g}, band {f['band']:.3g})" for f in v.clear_flips[:5]
        )
        more = f" and {len(v.clear_flips) - 5} more" if len(v.clear_flips) > 5 else ""
        v.failures.append(f"{what}: {len(v.clear_flips)} clear-margin flip(s) outside the noise band: {named}{more}")
    if v.band_flips > v.allowed_band_flips:
        v.failures.append(
            f"{what}: {v.band_flips} of {v.in_band} outputs in the noise band flipped (at most {v.allowed_band_flips}: "
            f"{MAX_BAND_FLIP_FRACTION:g} of them)"
        )
    return v


def judge_noise(signal: np.ndarray, error: np.ndarray, band: Band, what: str) -> Verdict:
    """The rule's noise cap alone, for a signal without decisions: an embedder's watermark (``watermarked -
    cover`` in PyTorch) against the file's error on the watermarked image."""
    sig, noise = rms(np.asarray(signal)), rms(np.asarray(error))
    v = Verdict(band=band, signal_rms=sig, noise_rms=noise, gated=int(np.size(error)), flips_judged=False)
    if not v.snr_db >= band.min_snr_db:
        v.failures.append(
            f"{what}: watermark SNR {v.snr_db:.2f} dB < {band.min_snr_db:g} dB (the file's error RMS {noise:.4g} against the "
            f"watermark's {sig:.4g})"
        )
    return v
