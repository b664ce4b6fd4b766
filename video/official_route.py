"""The official video route in PyTorch: the baseline ``make video-bench`` times the project's route against.

The same math, in the same order and batching, as the official ``Videoseal.embed(video, msg, is_video=True)`` and
``Videoseal.detect(video, is_video=True)`` at 871eda0, as ``../shared/reference/video/README.md`` records them (the
project's route is tested against those vectors in ``tests/test_video_official.py``; this module is tested against
the project's route):

- **embed**, one chunk of ``chunk`` key frames at a time (``chunk * step`` frames): every frame of the chunk resized to
  the processing size (bilinear, antialias), the key frames ``[::step]`` through the embedder as one batch, each
  residual repeated over its ``step`` frames (``video_mode="repeat"``), all of them resized back to the frame size, the
  JND heatmap of every full-size frame multiplied in (JND families), ``clamp(scaling_i * frames + scaling_w * res)``.
- **detect**, ``chunk`` frames at a time: resized to the processing size (antialias, as ``detect`` does) and run
  through the extractor as one batch; the per-frame logits are aggregated over the clip afterwards.

Frames come and go through the same PyAV decoder and encoder settings as the project's route (decoding and encoding
are not what is compared); torch runs with the threads it is given, the chunk's frames batched, as the official code
runs on a CPU. Written from that description, not copied from the official code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from videoseal_litert.runtime.route import unclocked

INTERPOLATION = {"mode": "bilinear", "align_corners": False, "antialias": True}


@dataclass
class OfficialVideo:
    """One part's torch module and the route's constants (from the card, as the official loader reads them)."""

    module: nn.Module
    size: int
    step: int
    chunk: int
    scaling_i: float = 1.0
    scaling_w: float = 1.0
    jnd: nn.Module | None = None  # the module's ``attenuation`` (models/unet.JND) for the JND families


def to_tensor(frames: list[np.ndarray]) -> torch.Tensor:
    """(T, H, W, 3) uint8 frames -> (T, 3, H, W) float32 in [0, 1], as the official README's video example."""
    return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float() / 255.0


def to_frames(video: torch.Tensor) -> np.ndarray:
    """(T, 3, H, W) float in [0, 1] -> (T, H, W, 3) uint8 (rounded), what an encoder is given."""
    return (video * 255.0).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


@torch.no_grad()
def embed_chunk(o: OfficialVideo, frames: torch.Tensor, msg: torch.Tensor, clock: Callable[[str], Any] | None = None) -> torch.Tensor:
    """One chunk's frames (T, 3, H, W) watermarked with ``msg`` (1, nbits) of 0/1: (T, 3, H, W) in [0, 1].
    ``clock(stage)`` (a context manager) times each step when given."""
    clock = clock or unclocked
    t, (h, w) = len(frames), frames.shape[-2:]
    with clock("resize"):
        small = F.interpolate(frames, size=(o.size, o.size), **INTERPOLATION)
    keys = small[:: o.step]
    with clock("model"):
        res = o.module.residual(keys, msg.repeat(len(keys), 1))
    with clock("resize"):
        res = res.repeat_interleave(o.step, dim=0)[:t]
        res = F.interpolate(res, size=(h, w), **INTERPOLATION)
    if o.jnd is not None:
        with clock("jnd"):
            res = o.jnd.heatmaps(frames) * res
    with clock("blend"):
        return (o.scaling_i * frames + o.scaling_w * res).clamp(0, 1)


@torch.no_grad()
def detect_chunk(o: OfficialVideo, frames: torch.Tensor, clock: Callable[[str], Any] | None = None) -> torch.Tensor:
    """(T, 3, H, W) frames -> (T, 1 + nbits) logits (mask, then bits), one batch."""
    clock = clock or unclocked
    with clock("resize"):
        small = F.interpolate(frames, size=(o.size, o.size), **INTERPOLATION)
    with clock("model"):
        return o.module(small)


def chunks(frames: Iterator[np.ndarray], n: int) -> Iterator[list[np.ndarray]]:
    """Lists of ``n`` frames in order (the last may be shorter)."""
    batch: list[np.ndarray] = []
    for f in frames:
        batch.append(f)
        if len(batch) == n:
            yield batch
            batch = []
    if batch:
        yield batch
