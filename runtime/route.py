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


def resize_aa(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """(H, W, C) float32 -> (height, width, C): bilinear, align_corners=False, antialias=True."""
    h, w = img.shape[:2]
    if (h, w) == (height, width):
        return img.astype(np.float32)
    wh, ww = _aa_weights(h, height), _aa_weights(w, width)
    return np.einsum("ih,hwc,jw->ijc", wh, img.astype(np.float32), ww, optimize=True).astype(np.float32)


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


def residual(run: Run, size: int, image: np.ndarray, bits: np.ndarray) -> np.ndarray:
    """The file's ``residual`` output for an (H, W, 3) image, made at ``size`` x ``size`` and resized back
    to (H, W, C): what the official route adds to the image (the video route reuses it over frames)."""
    message = np.asarray(bits, np.float32).reshape(1, -1)
    h, w = image.shape[:2]
    x = image if (h, w) == (size, size) else resize_aa(image, size, size)
    res = np.asarray(run({"image": x[None].astype(np.float32), "message": message})["residual"][0], np.float32)
    return resize_aa(res, h, w)


def blend(route: dict[str, Any], image: np.ndarray, res: np.ndarray) -> np.ndarray:
    """The official blend of a residual into an (H, W, 3) image: the JND heatmap of the image itself when the
    model has one, then ``clamp(scaling_i * image + scaling_w * residual, 0, 1)``."""
    if route.get("attenuation"):
        res = jnd_heatmap(image) * res
    return np.clip(route["scaling_i"] * image + route["scaling_w"] * res, 0, 1).astype(np.float32)


def embed(run: Run, route: dict[str, Any], size: int, image: np.ndarray, bits: np.ndarray) -> np.ndarray:
    """Watermark an (H, W, 3) image in [0, 1] with ``bits`` (nbits,) of 0/1 through ``run``, a runner of
    an embedder file at ``size`` x ``size`` (named inputs ``image``, ``message``): (H, W, 3) in [0, 1]."""
    h, w = image.shape[:2]
    if (h, w) == (size, size):
        message = np.asarray(bits, np.float32).reshape(1, -1)
        return np.asarray(run({"image": image[None].astype(np.float32), "message": message})["watermarked"][0])
    return blend(route, image, residual(run, size, image, bits))
