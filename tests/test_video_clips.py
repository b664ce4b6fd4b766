"""The clips people bring (issue 39): variable frame rate, rotation, damaged files, names that collide, messages.

Each clip is made here with PyAV from a real photo (scikit-image's astronaut) and goes through ``video embed`` with
the tiny pair's PyTorch embedder (no conversion: these are about the container, not the model)."""

from __future__ import annotations

import json
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from videoseal_litert.core.errors import OutputExistsError, TruncatedVideoError
from videoseal_litert.video.commands import run_video_detect, run_video_embed

TB = Fraction(1, 1000)


def tiny_opts(out, variants=None):
    """The run's options for the shipped tiny pair at one thread, as the command line builds them."""
    from videoseal_litert.convert.options import RunOptions
    from videoseal_litert.models.registry import resolve

    return RunOptions(spec=resolve("tiny"), out=out, threads=1, variants=variants)


def photo_frames(n: int, h: int = 144, w: int = 192) -> list[np.ndarray]:
    from skimage import data

    img = data.astronaut()
    return [np.ascontiguousarray(img[30 : 30 + h, 40 + 2 * i : 40 + 2 * i + w]) for i in range(n)]


def write_timed(path: Path, frames: list[np.ndarray], pts_ms: list[int], rotation: int = 0, fmt: str | None = None) -> Path:
    """H.264 frames at the given presentation times (milliseconds), a display rotation when asked."""
    with av.open(str(path), "w", format=fmt) as o:
        s = o.add_stream("libx264", rate=30)
        s.width, s.height = frames[0].shape[1], frames[0].shape[0]
        s.pix_fmt, s.time_base, s.codec_context.time_base = "yuv420p", TB, TB
        s.options = {"crf": "12"}
        if rotation:
            s.set_display_rotation(rotation)
        for f, t in zip(frames, pts_ms, strict=True):
            vf = av.VideoFrame.from_ndarray(f, format="rgb24")
            vf.pts, vf.time_base = t, TB
            for p in s.encode(vf):
                o.mux(p)
        for p in s.encode(None):
            o.mux(p)
    return path


def times(path: Path) -> list[Fraction]:
    with av.open(str(path)) as c:
        return [f.pts * f.time_base for f in c.decode(c.streams.video[0])]


def embed(src: Path, out: Path, force: bool = False, **kw):
    return run_video_embed(replace(tiny_opts(out), force=force), src, embedder="pytorch", **kw)


@pytest.mark.parametrize(
    "pts_ms",
    [
        [100 * i for i in range(10)] + [1000 + round(i * 1000 / 30) for i in range(20)],  # 10 fps, then 30 fps
        list(np.concatenate([[0], np.cumsum(np.random.default_rng(0).choice([20, 33, 50], 29))]).astype(int)),  # jittered
    ],
    ids=["10-then-30-fps", "jittered"],
)
def test_every_frames_presentation_time_is_kept(tmp_path, pts_ms):
    """Variable frame rate in, the same presentation times out, exactly (the time base kept)."""
    src = write_timed(tmp_path / "vfr.mp4", photo_frames(len(pts_ms)), [int(t) for t in pts_ms])
    r = embed(src, tmp_path / "out", seed=1)
    got = times(Path(r["output"]["file"]))
    assert got == times(src) and [round(float(t) * 1000) for t in got] == [int(t) for t in pts_ms]


def test_a_rotated_phone_clip_keeps_its_display_matrix_and_is_marked_upright(tmp_path):
    """Landscape frames stored with rotation -90 (a phone's portrait clip): the output keeps the matrix and the
    stored orientation (a player shows it as it showed the input); the watermark is written on the upright
    frames, where detection reads it, and a reader that ignores the matrix reads the message far worse."""
    upright = photo_frames(12, 192, 144)  # portrait as shown
    stored = [np.ascontiguousarray(np.rot90(f, 1)) for f in upright]  # undone by a -90 (clockwise) display rotation
    src = write_timed(tmp_path / "phone.mp4", stored, [33 * i for i in range(12)], rotation=-90)
    r = embed(src, tmp_path / "out", seed=2)
    assert "display rotation -90" in r["metadata_carried"]
    out = Path(r["output"]["file"])
    with av.open(str(out)) as c:
        first = next(c.decode(c.streams.video[0]))
        assert first.rotation == -90 and (first.width, first.height) == (192, 144)
        # the stored orientation kept: the output's first frame is the input's first frame, watermarked (PSNR)
        diff = first.to_ndarray(format="rgb24").astype(float) - stored[0]
        assert 10 * np.log10(255**2 / np.mean(diff**2)) > 30
    d = run_video_detect(tiny_opts(tmp_path / "out", "pytorch"), out, report_dir=tmp_path / "rep")
    assert d["results"]["pytorch"]["detected"] and d["results"]["pytorch"]["bit_accuracy"] >= 0.8
    # The same pixels without the matrix (what a reader that ignores rotation sees): the message is not found.
    plain = write_timed(
        tmp_path / "plain.mp4", [f.to_ndarray(format="rgb24") for f in av.open(str(out)).decode(video=0)], [33 * i for i in range(12)]
    )
    m = json.loads(Path(str(out) + ".json").read_text())["message"]
    d2 = run_video_detect(tiny_opts(tmp_path / "out", "pytorch"), plain, message=m, report_dir=tmp_path / "rep2")
    assert d2["results"]["pytorch"]["bit_accuracy"] < d["results"]["pytorch"]["bit_accuracy"] - 0.2


@pytest.mark.parametrize("fmt,ext", [("matroska", "mkv"), ("mp4", "mp4")])
def test_a_truncated_clip_is_said_out_loud_or_refused(tmp_path, fmt, ext):
    """The first three quarters of a 60-frame clip's bytes: embedded with a warning naming both counts, recorded in the
    sidecar; refused by --strict, leaving no output."""
    full = write_timed(tmp_path / f"full.{ext}", photo_frames(60), [33 * i for i in range(60)], fmt=fmt)
    cut = tmp_path / f"cut.{ext}"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size * 3 // 4])
    if ext == "mp4":  # an MP4's index at its end would make the cut unreadable: move it first, as phones and the web do
        with av.open(str(full)) as i, av.open(str(tmp_path / "fast.mp4"), "w", options={"movflags": "faststart"}) as o:
            s = o.add_stream_from_template(i.streams.video[0])
            for p in i.demux(i.streams.video[0]):
                if p.dts is not None:
                    p.stream = s
                    o.mux(p)
        cut.write_bytes((tmp_path / "fast.mp4").read_bytes()[: (tmp_path / "fast.mp4").stat().st_size * 3 // 4])
    # An MP4 states its count; Matroska its duration (1.98 s at 30 fps: 59, good to a frame).
    declared = 60 if ext == "mp4" else 59
    with pytest.raises(TruncatedVideoError, match=rf"declares {declared} frames \(its .*\), only \d+ could be decoded"):
        embed(cut, tmp_path / "out", seed=3, strict=True)
    assert not list((tmp_path / "out" / "video").glob("*.mp4"))
    r = embed(cut, tmp_path / "out", seed=3)
    assert 0 < r["input"]["frames_decoded"] < 50 and r["input"]["frames_declared"] == declared
    assert r["damaged"].startswith(f"cut.{ext} declares {declared} frames") and f"only {r['input']['frames_decoded']} could" in r["damaged"]


def test_outputs_never_collide_and_messages_differ_per_clip(tmp_path):
    """pan.webm and pan.mkv get their own outputs; a second run refuses to overwrite unless forced; with no
    --message or --seed every clip gets its own message, and --seed repeats one."""
    frames = photo_frames(4)
    a = write_timed(tmp_path / "pan.mkv", frames, [40 * i for i in range(4)], fmt="matroska")
    with av.open(str(tmp_path / "pan.webm"), "w") as o:
        s = o.add_stream("libvpx-vp9", rate=25)
        s.width, s.height, s.pix_fmt = 192, 144, "yuv420p"
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                o.mux(p)
        for p in s.encode(None):
            o.mux(p)
    out = tmp_path / "out"
    ra, rb = embed(a, out), embed(tmp_path / "pan.webm", out)
    assert Path(ra["output"]["file"]).name == "pan.mkv.wm.mp4" and Path(rb["output"]["file"]).name == "pan.webm.wm.mp4"
    assert ra["message"] != rb["message"] and ra["message_source"].startswith("random")
    with pytest.raises(OutputExistsError, match="pan.mkv.wm.mp4 already exists: pass --force"):
        embed(a, out)
    again = embed(a, out, force=True, seed=5)
    assert again["message_source"] == "drawn from --seed 5" and again["message"] == embed(a, out, force=True, seed=5)["message"]
    assert json.loads((out / "video" / "pan.mkv.wm.mp4.json").read_text())["message"] == again["message"]
