"""The video route made fast (issue 42) computes what it computed before: the resize weights made once and multiplied
as sparse matrices give torch's antialiased resize; 8-bit frames watermarked with the residual's share added once per
key frame are the float route's pixels to within one level; decoding, watermarking and encoding on threads keep the
frames' order and raise a thread's error where the caller can see it."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from videoseal_litert.core.images import to_uint8
from videoseal_litert.core.metrics import psnr_db
from videoseal_litert.runtime import route
from videoseal_litert.video.io import ahead_of
from videoseal_litert.video.key_frames import KeyFrames

SHAPES = [((720, 1280, 3), (256, 256)), ((256, 256, 1), (720, 1280)), ((256, 256, 3), (480, 854)), ((200, 328, 3), (256, 256)),
          ((13, 7, 3), (256, 256)), ((256, 256, 3), (240, 320)), ((256, 256, 3), (256, 100))]  # fmt: skip


def _torch_resize(img: np.ndarray, h: int, w: int) -> np.ndarray:
    t = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))[None].double()
    return F.interpolate(t, size=(h, w), mode="bilinear", align_corners=False, antialias=True)[0].permute(1, 2, 0).numpy()


@pytest.mark.parametrize(("shape", "out"), SHAPES)
def test_resize_is_torchs_antialiased_resize_with_and_without_scipy(shape, out, monkeypatch):
    rng = np.random.default_rng(0)
    x = rng.random(shape, dtype=np.float32)
    want = _torch_resize(x, *out)  # torch in float64: the reference both forms are held to
    fast = route.resize_aa(x, *out)
    assert fast.dtype == np.float32 and fast.flags["C_CONTIGUOUS"] and fast.shape == (*out, shape[2])
    assert np.abs(fast - want).max() <= 1e-6
    monkeypatch.setattr(route, "_has_scipy", lambda: False)  # the bundle's numpy-only form
    assert np.abs(route.resize_aa(x, *out) - want).max() <= 1e-6


def test_resize_takes_8_bit_pixels_with_a_gain():
    u = (np.random.default_rng(1).random((360, 640, 3)) * 255).astype(np.uint8)
    got = route.resize_aa(u, 256, 256, 1 / 255)
    assert np.abs(got - _torch_resize(u.astype(np.float64) / 255, 256, 256)).max() <= 1e-6
    same = route.resize_aa(u[:256, :256], 256, 256, 1 / 255)  # no resize: the gain alone (float32 rounding)
    assert np.abs(same - u[:256, :256].astype(np.float32) / np.float32(255)).max() <= 6e-8


def _frames(n: int, h: int = 90, w: int = 160) -> list[np.ndarray]:
    """A pan over a smooth scene with a cut at frame 5 (8-bit), like the official clip."""
    yy, xx = np.mgrid[0:h, 0 : w + 3 * n]
    a = 0.5 + 0.4 * np.sin(xx / 17.0)[..., None] * np.cos(yy[..., None] / 11.0 + np.arange(3))
    b = 0.5 + 0.4 * np.cos(xx / 7.0 + yy / 13.0)[..., None] * np.ones(3)
    return [to_uint8((a if t < 5 else b)[:, 3 * t : 3 * t + w]) for t in range(n)]


def _fake_embedder(inputs):
    """A residual that depends on the image and the message (so a wrong key frame shows), in (-1, 1)."""
    x, m = inputs["image"], inputs["message"]
    return {"residual": np.tanh(4 * (x - x.mean()) + m.mean()).astype(np.float32)}


@pytest.mark.parametrize("attenuation", [None, "jnd_1_1"])
def test_8_bit_frames_are_the_float_routes_pixels_to_one_level(attenuation):
    frames = _frames(9)
    r = {"scaling_i": 1.0, "scaling_w": 0.2, "attenuation": attenuation}
    bits = np.array([1, 0, 1, 1, 0, 0, 1, 0])
    fast = KeyFrames(_fake_embedder, r, 64, bits, step=4)
    slow_res = None
    for i, rgb in enumerate(frames):
        x = rgb.astype(np.float32) / 255.0
        if i % 4 == 0:
            slow_res = route.residual(_fake_embedder, 64, x, bits)  # the route as it was: a float frame, resized down
        want = to_uint8(route.blend(r, x, slow_res))
        got = fast.mark(i, rgb)
        d = np.abs(got.astype(int) - want)
        assert d.max() <= 1 and (d > 0).mean() < 0.01, (i, d.max(), (d > 0).mean())
        assert fast.psnr_db[-1] == pytest.approx(psnr_db(got / 255.0, rgb / 255.0), abs=1e-3)
    assert fast.keys == 3
    # A frame of another size makes its own residual (the key-frame cache is per size).
    fast.mark(9, frames[0][:, :120])
    assert fast.keys == 4


def test_ahead_keeps_order_raises_the_producers_error_and_stops_when_left():
    assert list(ahead_of(iter(range(100)), 4)) == list(range(100))

    def failing():
        yield 1
        raise ValueError("decoder broke at frame 1")

    got = []
    with pytest.raises(ValueError, match="decoder broke"):
        for x in ahead_of(failing(), 4):
            got.append(x)
    assert got == [1]
    produced, done = [], threading.Event()

    def endless():
        try:
            for i in range(10**9):
                produced.append(i)
                yield i
        finally:
            done.set()

    for x in ahead_of(endless(), 2):
        if x == 3:
            break
    assert done.wait(5) and len(produced) < 10  # the producer stopped a few items ahead, not at the end


def test_one_decoder_thread_gives_the_same_frames():
    """video-bench's CPU floor decodes on one thread as well as with FFmpeg's frame threads: the same pixels either way."""
    from videoseal_litert.video.clips import clip_path
    from videoseal_litert.video.io import read_frames

    clip = clip_path("bigbuckbunny.mp4")
    threaded = [f.rgb for f in read_frames(clip, 12)]
    single = [f.rgb for f in read_frames(clip, 12, frame_threads=False)]
    assert len(threaded) == len(single) == 12 and all(np.array_equal(a, b) for a, b in zip(threaded, single, strict=True))
    assert len({a.tobytes() for a in threaded}) > 1  # frames that move, not one frame repeated
