"""The video attacks: what a platform does to an uploaded clip (re-encoding, frame rate, cuts, scaling).

Each attack is a codec and CRF to re-encode with, and optionally a frame selection (every other frame at
half the rate; the middle half of the clip) and a resize. ``apply`` runs one on frames in memory (what
``evaluate`` does, through FFmpeg in a memory buffer); ``video/commands.py attack_clip`` runs the same table
on a file. Resizing uses the antialiased bilinear resize of the rest of the pipeline (``runtime/route.py``).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from videoseal_litert.core.errors import UsageError
from videoseal_litert.runtime.route import resize_aa


@dataclass(frozen=True)
class VideoAttack:
    name: str
    family: str
    strength: float | None
    codec: str | None  # None: the frames as they are (8-bit, no compression)
    crf: int = 23
    select: str | None = None  # "half_rate" (every other frame, half the rate) or "middle_half"
    scale: float = 1.0

    def keep(self, n: int) -> Callable[[int], bool] | None:
        """Which of ``n`` frames the attack keeps (None: all)."""
        if self.select == "half_rate":
            return lambda i: i % 2 == 0
        if self.select == "middle_half":
            lo, hi = n // 4, n // 4 + max(1, n // 2)
            return lambda i: lo <= i < hi
        return None

    def rate(self, fps: float) -> Fraction:
        r = Fraction(fps).limit_denominator(1001)
        return r / 2 if self.select == "half_rate" else r

    def resize(self, rgb: np.ndarray) -> np.ndarray:
        if self.scale == 1.0:
            return rgb
        h, w = rgb.shape[:2]
        y = resize_aa(rgb.astype(np.float32) / 255, max(2, int(h * self.scale) // 2 * 2), max(2, int(w * self.scale) // 2 * 2))
        return np.clip(np.round(y * 255), 0, 255).astype(np.uint8)

    def apply(self, frames: list[np.ndarray], fps: float) -> list[np.ndarray]:
        """(H, W, 3) uint8 frames -> the attacked frames, decoded back (through FFmpeg in memory)."""
        keep = self.keep(len(frames))
        xs = [self.resize(f) for i, f in enumerate(frames) if keep is None or keep(i)]
        if self.codec is None:
            return xs
        import av

        av.logging.set_level(None)
        buf = io.BytesIO()
        h, w = xs[0].shape[:2]
        with av.open(buf, "w", format="mp4") as o:
            s = o.add_stream(self.codec, rate=self.rate(fps))
            s.width, s.height = w, h
            s.pix_fmt = "yuv420p" if w % 2 == 0 and h % 2 == 0 else "yuv444p"
            s.options = {"crf": str(self.crf), **({"x265-params": "log-level=none"} if self.codec == "libx265" else {})}
            for x in xs:
                for p in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(x), format="rgb24")):
                    o.mux(p)
            for p in s.encode(None):
                o.mux(p)
        buf.seek(0)
        with av.open(buf, "r") as c:
            return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


VIDEO_ATTACKS: tuple[VideoAttack, ...] = (
    VideoAttack("none", "none", None, None),
    *(VideoAttack(f"h264_crf{q}", "h264", q, "libx264", q) for q in (18, 23, 28, 33)),
    *(VideoAttack(f"h265_crf{q}", "h265", q, "libx265", q) for q in (23, 28, 33)),
    VideoAttack("fps_half", "frame_rate", 0.5, "libx264", 23, select="half_rate"),
    VideoAttack("temporal_crop_0.5", "temporal_crop", 0.5, "libx264", 23, select="middle_half"),
    VideoAttack("resize_0.5", "video_resize", 0.5, "libx264", 23, scale=0.5),
)
BY_NAME = {a.name: a for a in VIDEO_ATTACKS}


def resolve_video_attacks(spec: str | None) -> list[VideoAttack]:
    """``codec`` (or None): every attack above; ``none``: no video attack; else a comma list of names."""
    if spec in (None, "", "codec", "all"):
        return list(VIDEO_ATTACKS)
    if spec == "off":
        return []
    out = []
    for name in (s.strip() for s in spec.split(",") if s.strip()):
        if name not in BY_NAME:
            raise UsageError(f"unknown video attack {name!r}: {', '.join(BY_NAME)} (or codec for all)")
        out.append(BY_NAME[name])
    return out
