"""Embed into an image of any size around a fixed-size embedder file: the official route, in numpy only.

At the file's processing size (256 x 256) its ``watermarked`` output is the whole official embed
path. For any other size this follows the official route (``route`` in the part's description):
resize the image to 256 x 256 (bilinear, antialias), run the file, resize its ``residual`` output
back to the image's size (same interpolation), multiply by the JND heatmap of the full-size image
when the model has JND, blend ``clamp(scaling_i * image + scaling_w * residual, 0, 1)``.

Written in numpy (no torch) because it ships in the bundle beside ``run_embedder.py`` and is what an
app ports: the antialiased bilinear resize and the JND heatmap compute what torch's
``F.interpolate(..., antialias=True)`` and the official ``JND.heatmaps`` compute (the tests compare them).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np


def _aa_weights(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights of torch's antialiased bilinear resize (align_corners=False) along one axis:
    a triangle filter widened by the scale when shrinking, truncated at the borders and normalised."""
    scale = n_in / n_out
    support = max(scale, 1.0)
    w = np.zeros((n_out, n_in), np.float64)
    for i in range(n_out):
        center = scale * (i + 0.5)
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), n_in)
        j = np.arange(lo, hi)
        f = np.clip(1.0 - np.abs((j - center + 0.5) / support), 0.0, None)
        if f.sum() > 0:
            w[i, lo:hi] = f / f.sum()
    return w.astype(np.float32)


@functools.lru_cache(maxsize=64)
def _dense(n_in: int, n_out: int) -> np.ndarray:
    w = _aa_weights(n_in, n_out)
    w.setflags(write=False)
    return w


@functools.lru_cache(maxsize=64)
def _sparse_rows(n_in: int, n_out: int, gain: float) -> Any:
    """The weights along H as a sparse (n_out, n_in) matrix (times ``gain``): ``R @ x`` resizes the rows of x."""
    from scipy import sparse

    return sparse.csr_matrix(_dense(n_in, n_out) * np.float32(gain))


@functools.lru_cache(maxsize=64)
def _sparse_columns(n_in: int, n_out: int, channels: int) -> Any:
    """The weights along W for pixels of ``channels`` interleaved values, as a sparse (n_in * C, n_out * C) matrix:
    ``x @ K`` resizes an (H, W * C) image along W with no transpose (a transposed copy costs more than the sums)."""
    from scipy import sparse

    return sparse.csr_matrix(np.kron(_dense(n_in, n_out).T, np.eye(channels, dtype=np.float32)))


@functools.lru_cache(maxsize=1)
def _has_scipy() -> bool:
    try:
        import scipy.sparse  # noqa: F401
    except ImportError:
        return False
    return True


def resize_aa(img: np.ndarray, height: int, width: int, gain: float = 1.0) -> np.ndarray:
    """(H, W, C) -> (height, width, C) float32: bilinear, align_corners=False, antialias=True, times ``gain``
    (``1 / 255`` resizes 8-bit pixels straight into [0, 1]).

    The weights are made once per size pair (a video resizes every frame between the same two sizes) and are a band
    a few taps wide: with scipy (the project's environment) they multiply as sparse matrices; without it (the bundle
    needs only numpy) as the dense product. Both give the dense product's numbers to float32 rounding (tests)."""
    h, w, c = img.shape
    if (h, w) == (height, width):
        return img.astype(np.float32) * np.float32(gain) if gain != 1.0 else img.astype(np.float32)
    if not _has_scipy():
        out = np.einsum("ih,hwc,jw->ijc", _dense(h, height), img.astype(np.float32), _dense(w, width), optimize=True)
        return (out * np.float32(gain) if gain != 1.0 else out).astype(np.float32)
    x = img.reshape(h, w * c).astype(np.float32, copy=False)
    rows, cols = _sparse_rows(h, height, gain), _sparse_columns(w, width, c)
    # The product with fewer rows to carry goes second: shrinking along H, H first; growing, W first (measured: a
    # 720p frame to 256 x 256 in 3 ms, a 256 x 256 residual to 720p in 4 ms, where the dense product took 33 and 34).
    out = (rows @ x) @ cols if height <= h else rows @ (x @ cols)
    return np.ascontiguousarray(out, dtype=np.float32).reshape(height, width, c)


def _filter(x: np.ndarray, k: np.ndarray) -> np.ndarray:
    """2-D cross-correlation of (H, W) with a small kernel, zero padding (Conv2d padding=k//2)."""
    r = k.shape[0] // 2
    p = np.pad(x, r)
    out = np.zeros_like(x)
    for dy in range(k.shape[0]):
        for dx in range(k.shape[1]):
            if k[dy, dx]:
                out += k[dy, dx] * p[dy : dy + x.shape[0], dx : dx + x.shape[1]]
    return out


KX = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], np.float32)
KY = np.array([[1, 2, 1], [0, 0, 0], [-1, -2, -1]], np.float32)
KLUM = np.array([[1, 1, 1, 1, 1], [1, 2, 2, 2, 1], [1, 2, 0, 2, 1], [1, 2, 2, 2, 1], [1, 1, 1, 1, 1]], np.float32)


def jnd_heatmap(img: np.ndarray, clc: float = 0.3) -> np.ndarray:
    """The official ``jnd_1_1`` heatmap of an (H, W, 3) image in [0, 1]: (H, W, 1)."""
    x = 255 * (0.299 * img[..., 0] + 0.587 * img[..., 1] + 0.114 * img[..., 2]).astype(np.float32)
    la = _filter(x, KLUM) / 32
    la = np.where(la <= 127, 17 * (1 - np.sqrt(np.maximum(la, 0) / 127 + 1e-5)), 3 / 128 * (la - 127) + 3)
    cm = np.sqrt(_filter(x, KX) ** 2 + _filter(x, KY) ** 2)
    cm = 0.117 * (16 * cm**2.4 / (cm**2 + 26**2))
    h = np.maximum(la + cm - clc * np.minimum(la, cm), 0)
    return (h / 255).astype(np.float32)[..., None]


Run = Callable[[Mapping[str, np.ndarray]], Mapping[str, np.ndarray]]


Clock = Callable[[str], contextlib.AbstractContextManager]  # clock("resize") times one step (video-bench)


def unclocked(stage: str) -> contextlib.AbstractContextManager:
    return contextlib.nullcontext()


def residual(run: Run, size: int, image: np.ndarray, bits: np.ndarray, clock: Clock = unclocked, gain: float = 1.0) -> np.ndarray:
    """The file's ``residual`` output for an (H, W, 3) image, made at ``size`` x ``size`` and resized back
    to (H, W, C): what the official route adds to the image (the video route reuses it over frames). ``gain``
    scales the image first (``1 / 255`` takes 8-bit pixels)."""
    message = np.asarray(bits, np.float32).reshape(1, -1)
    h, w = image.shape[:2]
    with clock("resize"):
        x = resize_aa(image, size, size, gain)
    with clock("model"):
        res = np.asarray(run({"image": x[None].astype(np.float32), "message": message})["residual"][0], np.float32)
    with clock("resize"):
        return resize_aa(res, h, w)


def blend(route: dict[str, Any], image: np.ndarray, res: np.ndarray, clock: Clock = unclocked) -> np.ndarray:
    """The official blend of a residual into an (H, W, 3) image: the JND heatmap of the image itself when the
    model has one, then ``clamp(scaling_i * image + scaling_w * residual, 0, 1)``."""
    if route.get("attenuation"):
        with clock("jnd"):
            res = jnd_heatmap(image) * res
    with clock("blend"):
        return np.clip(route["scaling_i"] * image + route["scaling_w"] * res, 0, 1).astype(np.float32)


def embed(run: Run, route: dict[str, Any], size: int, image: np.ndarray, bits: np.ndarray) -> np.ndarray:
    """Watermark an (H, W, 3) image in [0, 1] with ``bits`` (nbits,) of 0/1 through ``run``, a runner of
    an embedder file at ``size`` x ``size`` (named inputs ``image``, ``message``): (H, W, 3) in [0, 1]."""
    h, w = image.shape[:2]
    if (h, w) == (size, size):
        message = np.asarray(bits, np.float32).reshape(1, -1)
        return np.asarray(run({"image": image[None].astype(np.float32), "message": message})["watermarked"][0])
    return blend(route, image, residual(run, size, image, bits))
