"""The figures every report computes, defined once: PSNR, SNR (SQNR), RMS, rates with their 95% Wilson
intervals, and the binomial tail of the official p-value. numpy and the standard library only."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def rms(x: np.ndarray) -> float:
    """Root mean square (0 for an empty array), in float64."""
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if np.size(x) else 0.0


def power_db(numerator: float, denominator: float) -> float | None:
    """10 log10 of a ratio of energies (sums of squares); None when either is zero or less."""
    return 10 * math.log10(numerator / denominator) if numerator > 0 and denominator > 0 else None


def snr_db(signal_rms: float, noise_rms: float) -> float:
    """20 log10(signal / noise); inf for no noise, -inf for noise on no signal."""
    if noise_rms == 0.0:
        return math.inf
    return 20 * math.log10(signal_rms / noise_rms) if signal_rms > 0 else -math.inf


def sqnr_db(ref: np.ndarray, got: np.ndarray) -> float | None:
    """Signal-to-quantization-noise ratio of ``got`` against ``ref`` in dB; None when the two are identical."""
    ref = np.asarray(ref, dtype=np.float64)
    noise = rms(ref - got)
    return None if noise == 0.0 else snr_db(rms(ref), noise)


def psnr_db(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR of two images in [0, 1], dB (inf when equal)."""
    mse = float(np.mean((np.asarray(a, dtype=np.float64) - b) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def wilson(k: int, n: int, z: float = 1.96) -> list[float]:
    """95% Wilson score interval of a rate k/n."""
    if n == 0:
        return [0.0, 1.0]
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return [round(max(0.0, c - h), 6), round(min(1.0, c + h), 6)]


def rate_of(k: int, n: int) -> dict[str, Any]:
    """The rate k/n with its count and 95% Wilson interval."""
    return {"rate": k / n if n else 0.0, "k": k, "n": n, "wilson95": wilson(k, n)}


def rate(hits: np.ndarray) -> dict[str, Any]:
    """The rate of true values in ``hits``, with its count and 95% Wilson interval."""
    return rate_of(int(np.sum(hits)), int(np.size(hits)))


def binomial_tail(matches: int, n: int) -> int:
    """2^n P(X >= matches) for X ~ Binomial(n, 1/2), exactly (an integer)."""
    return sum(math.comb(n, k) for k in range(matches, n + 1))


DETECTION_PVALUE = 1e-3  # a message is detected when this many or more bits match with p below this (chance: 1/2 a bit)


def binomial_pvalue(matches: int, n: int) -> float:
    """P(X >= matches) for X ~ Binomial(n, 1/2): the chance an unwatermarked image matches this well."""
    return float(binomial_tail(matches, n) / 2**n)
