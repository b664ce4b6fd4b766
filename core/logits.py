"""The extractor's output, one layout everywhere: (N, 1 + nbits) logits, column 0 the detection ("mask")
logit, the rest one per bit (bit = logit > 0; P(bit = 1) = sigmoid(logit)). Slicing only, so numpy arrays
and torch tensors alike."""

from __future__ import annotations

from typing import TypeVar

import numpy as np

T = TypeVar("T")


def split_logits(logits: T) -> tuple[T, T]:
    """(N, 1 + nbits) -> (mask logits (N, 1), bit logits (N, nbits))."""
    return logits[:, :1], logits[:, 1:]  # type: ignore[index]


def join_logits(mask: np.ndarray, bits: np.ndarray) -> np.ndarray:
    """The inverse of :func:`split_logits` for arrays: (N, 1 + nbits)."""
    return np.concatenate([np.reshape(mask, (len(bits), -1)), bits], axis=1)
