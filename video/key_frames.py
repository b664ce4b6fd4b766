"""The official video path, frame by frame: embed with key frames, detect per frame, aggregate over the clip.

Embedding follows the official ``VideoWam.embed``: the embedder runs on every ``step``-th frame (the
card's ``videoseal_step_size`` or its older name ``videowam_step_size``: 4 for VideoSeal 1.0 and 0.0, 8 for
PixelSeal and ChunkySeal), at the processing size (256 x 256), and its
residual, resized to the frame's size, is reused for that frame and the ``step - 1`` after it; each frame
is blended with it by the official blend (its own JND heatmap when the model has one, then ``clamp(
scaling_i * frame + scaling_w * residual, 0, 1)``). The official code batches ``chunk_size`` key frames
at a time (32 in the cards) to bound GPU memory; a chunk's bounds never change which residual a frame
gets, so frames stream through here one at a time and the chunk size only appears in the report.

Detection follows ``VideoWam.detect`` and ``detect_video_and_aggregate``: every frame resized to 256 x
256 (bilinear, antialias) and run through the extractor; the bit logits aggregated over frames by
``avg`` (the default), ``squared_avg``, ``l1norm_avg`` or ``l2norm_avg``; a bit is 1 where the aggregate
is positive.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from videoseal_litert.core.errors import UsageError
from videoseal_litert.core.images import to_uint8
from videoseal_litert.core.message import message_hex
from videoseal_litert.core.metrics import DETECTION_PVALUE, binomial_pvalue
from videoseal_litert.models.cards import FALLBACK_VIDEO
from videoseal_litert.models.gate import Rule, Verdict, judge_decisions, judge_extractor
from videoseal_litert.runtime.route import Clock, blend, residual, resize_aa, unclocked
from videoseal_litert.video.io import AHEAD, DEFAULT_CRF, Frame, Written, ahead_of, read_frames, transcode

Run = Callable[[Mapping[str, np.ndarray]], Mapping[str, np.ndarray]]
AGGREGATIONS = ("avg", "squared_avg", "l1norm_avg", "l2norm_avg")
DEFAULT_STEP = FALLBACK_VIDEO["step"]  # where no card says (models/cards.py); the card's value otherwise


def aggregate(bit_logits: np.ndarray, how: str = "avg") -> np.ndarray:
    """(F, nbits) per-frame bit logits -> (nbits,) scores, as ``detect_video_and_aggregate``: a bit is 1 where > 0."""
    b = np.asarray(bit_logits, np.float64)
    if b.ndim != 2 or len(b) == 0:
        raise UsageError(f"aggregate: expected (frames, nbits) logits, got {b.shape}")
    if how == "avg":
        return b.mean(axis=0)
    if how == "squared_avg":
        return (b * np.abs(b)).mean(axis=0)
    if how == "l1norm_avg":
        return (b * np.abs(b).sum(axis=1, keepdims=True)).mean(axis=0)
    if how == "l2norm_avg":
        return (b * np.sqrt(np.square(b).sum(axis=1, keepdims=True))).mean(axis=0)
    raise UsageError(f"unknown aggregation {how!r}: {', '.join(AGGREGATIONS)}")


class KeyFrames:
    """The official video blend over frames in order: the residual of every ``step``-th frame (made at
    ``size``, resized to the frame), reused for the frames after it; ``mark(index, rgb)`` -> 8-bit frame.
    ``clock(stage)`` times the steps (``make video-bench``)."""

    def __init__(
        self,
        run: Run,
        route: dict[str, Any],
        size: int,
        bits: np.ndarray,
        step: int = DEFAULT_STEP,
        clock: Clock | None = None,
        graphs: Mapping[tuple[int, int], Run] | None = None,
    ) -> None:
        if step < 1:
            raise UsageError(f"step {step}: at least 1")
        self.run, self.route, self.size, self.bits, self.step = run, route, size, bits, step
        # route-<W>x<H>.tflite runners by frame size (H, W) (convert/route_graph.py): a frame's whole route in one graph
        self.graphs = dict(graphs or {})
        self.res256: np.ndarray | None = None  # with a graph: the key frame's residual as the embedder gave it
        self.res256_for: tuple[int, ...] | None = None  # the frame size it was made for
        self.clock: Clock = clock or unclocked
        self.res: np.ndarray | None = None
        self.add255: np.ndarray | None = None  # scaling_w * 255 * residual: what an 8-bit frame gains (no JND)
        self.keys = 0
        self.psnr_db: list[float] = []

    def _key(self, index: int, image: np.ndarray, gain: float = 1.0) -> None:
        """Make the residual anew on a key frame (and on a frame of another size than the last one's)."""
        if index % self.step == 0 or self.res is None or self.res.shape[:2] != image.shape[:2]:
            self.res = residual(self.run, self.size, image, self.bits, self.clock, gain)
            self.add255 = None
            self.keys += 1

    def watermark(self, index: int, x: np.ndarray) -> np.ndarray:
        """Frame ``index`` ((H, W, 3) float32 in [0, 1]) watermarked, in float32, as the official ``embed`` returns it:
        a key frame's residual (frame ``index - index % step``) resized back to the frame, its own JND, the blend."""
        self._key(index, x)
        return blend(self.route, x, self.res, self.clock)

    def mark(self, index: int, rgb: np.ndarray) -> np.ndarray:
        """An 8-bit frame watermarked, rounded to 8 bits: ``watermark``'s pixels to within one level (the same sums in
        another order). Without JND the residual's share is made once per key frame and added to the 8-bit pixels
        directly, and a key frame is resized from its 8 bits (no full-size float copy of a frame)."""
        graph = self.graphs.get(rgb.shape[:2])
        if graph is not None:
            if index % self.step == 0 or self.res256 is None or self.res256_for != rgb.shape[:2]:
                self.res256_for = rgb.shape[:2]
                with self.clock("resize"):
                    small = resize_aa(rgb, self.size, self.size, 1 / 255)
                with self.clock("model"):
                    message = np.asarray(self.bits, np.float32).reshape(1, -1)
                    self.res256 = np.asarray(self.run({"image": small[None], "message": message})["residual"], np.float32)
                self.keys += 1
            with self.clock("route graph"):
                x = rgb.astype(np.float32) / 255.0
                y = to_uint8(graph({"frame": x[None], "residual": self.res256})["watermarked"][0])
        elif self.route.get("attenuation"):
            y = to_uint8(self.watermark(index, rgb.astype(np.float32) / 255.0))
        else:
            self._key(index, rgb, 1 / 255)
            with self.clock("blend"):
                if self.add255 is None:
                    self.add255 = np.float32(255 * self.route["scaling_w"]) * self.res
                y = np.multiply(rgb, np.float32(self.route["scaling_i"]), dtype=np.float32)
                y += self.add255
                np.rint(y, out=y)
                y = np.clip(y, 0, 255, out=y).astype(np.uint8)
        with self.clock("psnr"):
            d = np.subtract(y, rgb, dtype=np.float32).ravel()
            mse = float(np.dot(d, d)) / (d.size * 255.0**2)
            self.psnr_db.append(math.inf if mse == 0 else 10 * math.log10(1.0 / mse))
        return y


@dataclass
class Embedded:
    written: Written
    frames: int
    key_frames: int
    psnr_db: list[float] = field(default_factory=list)


def embed_video(
    run: Run,
    route: dict[str, Any],
    size: int,
    src: Path,
    dst: Path,
    bits: np.ndarray,
    step: int = DEFAULT_STEP,
    crf: int = DEFAULT_CRF,
    max_frames: int | None = None,
    tick: Callable[[], None] | None = None,
    codec: str = "libx264",
    graphs: Mapping[tuple[int, int], Run] | None = None,
) -> Embedded:
    """Watermark ``src`` into ``dst`` (H.264 at ``crf``) with ``bits`` through ``run`` (an embedder runner with
    a ``residual`` output), the residual of every ``step``-th frame reused until the next; frames of a size in
    ``graphs`` (H, W) take that route graph."""
    k = KeyFrames(run, route, size, bits, step, graphs=graphs)

    def mark(f: Frame) -> np.ndarray:
        # Watermarked upright, as a player shows the frame and as detection reads it; stored back as it came.
        y = f.stored(k.mark(f.index, f.upright()))
        if tick:
            tick()
        return y

    w = transcode(src, dst, mark, crf=crf, codec=codec, max_frames=max_frames)
    return Embedded(w, w.frames, k.keys, k.psnr_db)


def detect_video(
    runners: Mapping[str, Run],
    src: Path,
    size: int,
    max_frames: int | None = None,
    tick: Callable[[], None] | None = None,
    clock: Clock | None = None,
    ahead: int = AHEAD,
    on_row: Callable[[str, np.ndarray], None] | None = None,
) -> dict[str, np.ndarray]:
    """Per-frame (F, 1 + nbits) logits (mask, then bits) of each runner on ``src``'s frames, each frame decoded and
    resized once, on a thread of its own up to ``ahead`` frames ahead of the models (0: all in this thread, in turn).
    ``on_row(runner, logits)`` sees each frame's row as it comes (a ``StreamingAggregate``'s ``add``)."""
    clock = clock or unclocked

    def inputs() -> Iterator[np.ndarray]:
        for f in read_frames(src, max_frames):
            with clock("resize"):  # upright, as a player shows it; 8 bits in, [0, 1] out
                x = resize_aa(f.upright(), size, size, 1 / 255)[None]
            yield x

    out: dict[str, list[np.ndarray]] = {k: [] for k in runners}
    for x in ahead_of(inputs(), ahead) if ahead else inputs():
        for k, run in runners.items():
            with clock("model"):
                o = run({"image": x})
            row = np.concatenate([np.reshape(o["mask_logit"], -1)[:1], np.reshape(o["bit_logits"], -1)]).astype(np.float32)
            out[k].append(row)
            if on_row:
                on_row(k, row)
        if tick:
            tick()
    return {k: np.stack(v) for k, v in out.items()}


def _terms(b: np.ndarray) -> dict[str, np.ndarray]:
    """One frame's contribution to each aggregation's sum (``aggregate`` is their mean over frames)."""
    return {"avg": b, "squared_avg": b * np.abs(b), "l1norm_avg": b * np.abs(b).sum(), "l2norm_avg": b * np.sqrt(np.square(b).sum())}


class _Sums:
    """Running sums over some frames: each aggregation's, the mask logits', and the message's per-frame bit accuracy."""

    def __init__(self, nbits: int, first: int = 0) -> None:
        self.first, self.n = first, 0
        self.terms = {how: np.zeros(nbits) for how in AGGREGATIONS}
        self.mask_sum, self.mask_positive = 0.0, 0
        self.acc_sum, self.acc_min = 0.0, 1.0

    def add(self, row: np.ndarray, message: np.ndarray | None) -> None:
        b = np.asarray(row[1:], np.float64)
        for how, t in _terms(b).items():
            self.terms[how] += t
        self.n += 1
        self.mask_sum += float(row[0])
        self.mask_positive += int(row[0] > 0)
        if message is not None:
            acc = float(((b > 0) == message).mean())
            self.acc_sum, self.acc_min = self.acc_sum + acc, min(self.acc_min, acc)

    def result(self, how: str, message: np.ndarray | None) -> dict[str, Any]:
        if how not in AGGREGATIONS:
            raise UsageError(f"unknown aggregation {how!r}: {', '.join(AGGREGATIONS)}")
        bits = self.terms[how] / max(self.n, 1) > 0
        r: dict[str, Any] = {
            "frames": self.n,
            "aggregation": how,
            "bits": bits_text(bits),
            "bits_hex": message_hex(bits),
            "mean_mask_logit": self.mask_sum / max(self.n, 1),
            "frames_mask_positive": self.mask_positive,
        }
        if message is not None:
            matches = int((bits == message).sum())
            p = binomial_pvalue(matches, message.size)
            r.update(
                bit_accuracy=matches / message.size,
                pvalue=p,
                frame_bit_accuracy_mean=self.acc_sum / max(self.n, 1),
                frame_bit_accuracy_min=self.acc_min,
                detected=bool(p < DETECTION_PVALUE),
            )
        return r


class StreamingAggregate:
    """The official aggregations over a clip of any length, frame by frame, holding no frame and no per-frame logits:
    running sums for all four (``avg``, ``squared_avg``, ``l1norm_avg``, ``l2norm_avg``: each a mean over frames of
    one term per frame), and the same over each chunk of ``chunk`` frames (the card's chunk size, the official
    batching), each chunk closed with its own verdict. ``aggregate`` gives the same numbers from all the logits at once."""

    def __init__(self, nbits: int, chunk: int, message: np.ndarray | None = None, how: str = "avg") -> None:
        if chunk < 1:
            raise UsageError(f"chunk {chunk}: at least 1")
        self.chunk, self.how = chunk, how
        self.message = None if message is None else np.asarray(message, bool)
        self.clip, self.current = _Sums(nbits), _Sums(nbits)
        self.chunks: list[dict[str, Any]] = []

    def add(self, row: np.ndarray) -> None:
        """One frame's (1 + nbits) logits: mask, then bits."""
        self.clip.add(row, self.message)
        self.current.add(row, self.message)
        if self.current.n == self.chunk:
            self._close()

    def _close(self) -> None:
        c = self.current
        self.chunks.append({"first_frame": c.first, **c.result(self.how, self.message)})
        self.current = _Sums(len(c.terms["avg"]), c.first + c.n)

    def result(self, how: str | None = None) -> dict[str, Any]:
        """The clip's verdict by ``how`` (default the one chosen), as ``clip_result``; a partial last chunk is closed."""
        if self.current.n:
            self._close()
        return self.clip.result(how or self.how, self.message)


def clip_result(logits: np.ndarray, how: str, message: np.ndarray | None) -> dict[str, Any]:
    """Aggregated bits of one decoder on one clip, and their agreement with ``message`` when given."""
    s = StreamingAggregate(logits.shape[1] - 1, max(len(logits), 1), message, how)
    for row in logits:
        s.add(row)
    return s.result()


def bits_text(bits: np.ndarray) -> str:
    """Bits as a string of 0/1, left to right."""
    return "".join("1" if x else "0" for x in np.asarray(bits, bool))


def verdict_line(r: dict[str, Any]) -> str:
    """What a person reads for one decoder on one clip: detected or not (the message's p-value), or, with no
    message to test, the bits it reads."""
    if "detected" not in r:
        return f"no message to test against: reads {r['bits_hex']}"
    word = "DETECTED" if r["detected"] else "NOT DETECTED"
    return (
        f"{word}: {r['bit_accuracy']:.2%} of the message's bits, p {r['pvalue']:.2g} "
        f"({'<' if r['detected'] else '>='} {DETECTION_PVALUE:g}); reads {r['bits_hex']}"
    )


AGGREGATED = "aggregated bits"


def video_parity(ref: np.ndarray, got: np.ndarray, how: str, rule: Rule, watermarked: bool) -> Verdict:
    """A file's frames against PyTorch's on the same decoded frames, by the rule: per frame (detection on every
    frame, bits on the frames of a clip known to carry a message) and the ``how`` aggregate over the clip, a
    group of its own whose S is the RMS of PyTorch's aggregated logits. Without a known message the bits are
    reported, not gated (a clean clip's bits carry no decision)."""
    frames = [f"frame {i}" for i in range(len(ref))]
    v = judge_extractor(ref, got, frames, [watermarked] * len(ref), rule)
    if not watermarked:
        for g in v.groups:
            if g.group != "detection":
                g.gated = False
    a, b = aggregate(ref[:, 1:], how), aggregate(got[:, 1:], how)
    v.groups.append(judge_decisions(AGGREGATED, a[None], b[None], ["clip"], lambda j: f"bit {j}", rule, rule.floor.snr_db, watermarked))
    return v
