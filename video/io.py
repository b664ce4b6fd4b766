"""Video files in and out, streaming, through PyAV (``av`` on PyPI).

Why PyAV: its wheels carry FFmpeg with libx264 and libx265 (H.264 and H.265 encoders) and every common
demuxer, so nothing but ``pip install`` is needed, and it gives frames one at a time (memory flat in the
clip's length) and packets to copy (audio carried over without re-encoding). OpenCV cannot copy audio;
``imageio-ffmpeg`` pipes raw frames through a subprocess and cannot either; torchvision's video I/O cannot
be installed beside this project's pinned torch.

Frames are (H, W, 3) uint8 RGB, converted from the stream's pixel format by FFmpeg's swscale (BT.601
matrix, as torchvision's ``read_video`` and the official evaluation read them). Output is H.264 (libx264)
at a stated CRF in 4:2:0 (``yuv420p``, what phones and browsers play), or 4:4:4 for a clip whose width or
height is odd (4:2:0 cannot hold odd sizes; the report says so). The input's timestamps, frame rate,
container and stream metadata and audio packets are carried over; everything is written to a temporary
name and renamed when complete.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from videoseal_litert.core.artifacts import atomic_path
from videoseal_litert.core.errors import CorruptVideoError, EmptyVideoError, NotAVideoError, NoVideoTrackError, UsageError

log = logging.getLogger(__name__)

# Output containers by extension (FFmpeg muxer names): the temporary name has no telling extension.
CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}
# FFmpeg demuxers of still images: a photo opens as a one-frame "video"; refused by name instead.
IMAGE_DEMUXERS = ("image2", "_pipe")
DEFAULT_CRF = 23  # libx264's own default, and the issue's: "H.264 encoding at CRF 23"
DEFAULT_PRESET = "medium"
# Container and stream metadata not carried over: they describe the old encoder, not the clip.
NOT_CARRIED = ("encoder", "major_brand", "minor_version", "compatible_brands")


@dataclass(frozen=True)
class ClipInfo:
    path: str
    container: str
    codec: str
    width: int
    height: int
    fps: float
    frames: int | None  # the container's count when it states one
    duration_s: float | None
    pix_fmt: str | None
    audio: list[str]  # codec of each audio stream

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _av() -> Any:
    import av

    av.logging.set_level(None)  # FFmpeg's own messages stay off the terminal; errors come back as exceptions
    return av


def open_input(path: str | Path, frame_threads: bool = True) -> Any:
    """The container, opened for reading, with its first video stream checked: named errors for a missing
    file, a file that is not a video, a still image, and a file without a video track. ``frame_threads=False``
    decodes on one thread (the least CPU a frame; the same frames)."""
    av = _av()
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"video not found: {path}")
    if path.stat().st_size == 0:
        raise EmptyVideoError(f"{path}: empty file (0 bytes), not a video")
    try:
        c = av.open(str(path), mode="r")
    except (av.error.FFmpegError, ValueError, OSError) as e:
        raise NotAVideoError(f"{path}: not a video FFmpeg can read ({e})") from e
    fmt = c.format.name
    if any(k in fmt for k in IMAGE_DEMUXERS):
        c.close()
        raise NotAVideoError(f"{path}: a still image ({fmt}), not a video; watermark images with `videoseal-litert demo --images`")
    if not c.streams:
        c.close()
        raise EmptyVideoError(f"{path}: a container with no stream at all (a zero-length clip)")
    if not c.streams.video:
        kinds = ", ".join(s.type for s in c.streams) or "no streams"
        c.close()
        raise NoVideoTrackError(f"{path}: no video track ({kinds})")
    if frame_threads:
        c.streams.video[0].thread_type = "AUTO"  # FFmpeg's frame and slice threads (the same frames, decoded in parallel)
    return c


def probe(path: str | Path) -> ClipInfo:
    c = open_input(path)
    try:
        v = c.streams.video[0]
        rate = v.average_rate or v.guessed_rate or Fraction(25)
        dur = float(v.duration * v.time_base) if v.duration and v.time_base else (c.duration / 1e6 if c.duration else None)
        return ClipInfo(
            path=str(path),
            container=c.format.name,
            codec=v.codec_context.name,
            width=int(v.codec_context.width),
            height=int(v.codec_context.height),
            fps=float(rate),
            frames=int(v.frames) or None,
            duration_s=dur,
            pix_fmt=v.codec_context.pix_fmt,
            audio=[a.codec_context.name for a in c.streams.audio],
        )
    finally:
        c.close()


@dataclass
class Frame:
    """One decoded frame: its index in the clip, RGB pixels (H, W, 3) uint8 as stored, its timestamp, and the
    display rotation its container or stream gives (degrees counterclockwise, FFmpeg's display matrix: a phone's
    portrait clip stores landscape frames with -90)."""

    index: int
    rgb: np.ndarray
    pts: int | None
    time_base: Fraction | None
    rotation: int = 0

    def upright(self) -> np.ndarray:
        """The pixels as a player shows them (the display rotation applied)."""
        return to_upright(self.rgb, self.rotation)

    def stored(self, upright: np.ndarray) -> np.ndarray:
        """Pixels in this frame's upright orientation turned back to how it is stored (the rotation undone)."""
        return np.ascontiguousarray(np.rot90(upright, -_quarter_turns(self.rotation)))


def _quarter_turns(rotation: int) -> int:
    turns, rest = divmod(int(rotation), 90)
    if rest:
        raise UsageError(f"a display rotation of {rotation} degrees: only multiples of 90 are supported")
    return turns % 4


def to_upright(rgb: np.ndarray, rotation: int) -> np.ndarray:
    """(H, W, 3) pixels turned counterclockwise by ``rotation`` degrees, as FFmpeg's display matrix says a player does."""
    k = _quarter_turns(rotation)
    return rgb if k == 0 else np.ascontiguousarray(np.rot90(rgb, k))


def _frames_of(
    c: Any, path: Path, on_packet: Callable[[Any], None] | None, max_frames: int | None, damage: list[str] | None = None
) -> Iterator[Frame]:
    """The frames in order. A stream FFmpeg fails to decode raises CorruptVideoError, unless ``damage`` is given and
    some frames came first: then the frames end there and ``damage`` says where and why (a truncated MP4)."""
    av = _av()
    v = c.streams.video[0]
    streams = [v, *(c.streams.audio if on_packet else [])]
    n = 0
    try:
        for packet in c.demux(*streams):
            if packet.stream.type != "video":
                if packet.dts is not None and on_packet:
                    on_packet(packet)
                continue
            for fr in packet.decode():
                if max_frames is not None and n >= max_frames:
                    return
                yield Frame(n, fr.to_ndarray(format="rgb24"), fr.pts, fr.time_base, int(round(fr.rotation or 0)))
                n += 1
    except av.error.FFmpegError as e:
        if damage is None or n == 0:
            raise CorruptVideoError(f"{path}: the video stream is corrupt after frame {n} ({e})") from e
        damage.append(f"decoding stopped after frame {n} ({e})")
    if n == 0:
        raise EmptyVideoError(f"{path}: the video track holds no decodable frame")


def video_bytes(path: str | Path, frames: int | None = None) -> int:
    """The bytes of the video stream's first ``frames`` packets (one a frame in H.264, H.265 and VP9), audio and the
    container left out: the size of the frames a detection read, comparable between a source and its re-encodes."""
    c = open_input(path)
    try:
        total = 0
        for n, p in enumerate(c.demux(c.streams.video[0])):
            if frames is not None and n >= frames:
                break
            total += p.size
        return total
    finally:
        c.close()


def read_frames(path: str | Path, max_frames: int | None = None, ahead: int = 0, frame_threads: bool = True) -> Iterator[Frame]:
    """The clip's frames one at a time (memory flat in its length); at most ``max_frames``. With ``ahead``, decoded
    on a thread of their own up to that many frames ahead of the caller (FFmpeg decodes without Python's lock);
    ``frame_threads`` as ``open_input``."""
    path = Path(path)
    c = open_input(path, frame_threads)
    try:
        frames = _frames_of(c, path, None, max_frames)
        yield from (ahead_of(frames, ahead) if ahead else frames)
    finally:
        c.close()


_END = object()


def ahead_of(items: Iterator[Any], depth: int) -> Iterator[Any]:
    """``items`` produced on a thread of their own, at most ``depth`` ahead of the consumer, in order; an exception
    raised there is raised here. Stopping early (a ``break``, an error here) stops the producer at its next item."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for it in items:
                while not stop.is_set():
                    try:
                        q.put(it, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(_END)
        except BaseException as e:  # handed to the consumer, raised there
            q.put(_Failed(e))

    t = threading.Thread(target=produce, name="video-decode", daemon=True)
    t.start()
    try:
        while True:
            it = q.get()
            if it is _END:
                return
            if isinstance(it, _Failed):
                raise it.error
            yield it
    finally:
        stop.set()
        while t.is_alive():  # let a producer blocked on a full queue see the stop
            try:
                q.get_nowait()
            except queue.Empty:
                t.join(timeout=0.05)


@dataclass
class _Failed:
    error: BaseException


@dataclass
class Written:
    frames: int
    pix_fmt: str
    audio: list[str]  # what happened to each audio stream: "copied <codec>"
    metadata_keys: list[str]
    damage: str | None = None  # where a damaged input stopped decoding (its frames before that were written)
    metadata_dropped: list[str] = field(default_factory=list)  # what was not carried, and why


class _Muxer:
    """The output's video stream, made at the first processed frame (its size is that frame's), and the audio packets
    that wait for it: every stream must exist before the first packet is muxed (the container's header is written
    then). Frames keep their timestamps, or are renumbered at the output rate when the timeline changes."""

    def __init__(self, av: Any, out: Any, src_stream: Any, audio_out: dict[int, Any], settings: tuple, copied: list[str]) -> None:
        self.av, self.out, self.src_stream, self.audio_out, self.copied = av, out, src_stream, audio_out, copied
        self.codec, self.rate, self.crf, self.preset, self.renumber = settings
        self.vs: Any = None
        self.pending: list[Any] = []
        self.frames, self.pix_fmt = 0, ""

    def audio(self, packet: Any) -> None:
        s = self.audio_out.get(packet.stream.index)
        if s is not None:
            packet.stream = s
            if self.vs is None:
                self.pending.append(packet)
            else:
                self.out.mux(packet)

    def video(self, f: Frame, rgb: np.ndarray) -> None:
        if self.vs is None:
            self.vs = _video_stream(self.out, self.codec, self.rate, rgb.shape[1], rgb.shape[0], self.crf, self.preset)
            _like_input(self.vs, self.src_stream, f.rotation, None if self.renumber else self.src_stream.time_base, self.copied)
            self.pix_fmt = self.vs.pix_fmt
            for packet in self.pending:
                self.out.mux(packet)
            self.pending.clear()
        frame = self.av.VideoFrame.from_ndarray(rgb, format="rgb24")
        if self.renumber or f.pts is None:
            frame.pts, frame.time_base = self.frames, Fraction(1) / self.rate
        else:
            frame.pts, frame.time_base = f.pts, f.time_base
        for pkt in self.vs.encode(frame):
            self.out.mux(pkt)
        self.frames += 1

    def finish(self, src: Path) -> None:
        if self.vs is None:
            raise EmptyVideoError(f"{src}: no frame left to write")
        for pkt in self.vs.encode(None):
            self.out.mux(pkt)


def transcode(
    src: str | Path,
    dst: str | Path,
    fn: Callable[[Frame], np.ndarray],
    crf: int = DEFAULT_CRF,
    codec: str = "libx264",
    max_frames: int | None = None,
    preset: str = DEFAULT_PRESET,
    rate: Fraction | None = None,
    keep: Callable[[int], bool] | None = None,
) -> Written:
    """Decode ``src`` frame by frame, write ``fn(frame)`` ((H, W, 3) uint8, any size the first frame set)
    to ``dst`` with ``codec`` at ``crf``, audio packets and metadata copied, timestamps kept (or frames
    renumbered at ``rate`` when given, or when ``keep`` drops frames). Written to a temporary name, renamed
    when complete; a failure leaves nothing at ``dst``."""
    av = _av()
    src, dst = Path(src), Path(dst)
    fmt = CONTAINERS.get(dst.suffix.lower())
    if fmt is None:
        raise UsageError(f"{dst}: output must end in {', '.join(CONTAINERS)}")
    if not 0 <= crf <= 51:
        raise UsageError(f"--crf {crf}: H.264/H.265 CRF runs from 0 (lossless) to 51")
    c = open_input(src)
    try:
        v = c.streams.video[0]
        renumber = rate is not None or keep is not None
        settings = (codec, rate or v.average_rate or v.guessed_rate or Fraction(25), crf, preset, renumber)
        with atomic_path(dst) as tmp:
            out = av.open(str(tmp), mode="w", format=fmt)
            try:
                copied, dropped = _carry_metadata(c, out), dropped_metadata(c)
                # A changed timeline leaves the audio behind.
                audio_out, audio_notes = _audio_streams(av, c, out, fmt) if not renumber else ({}, [])
                mux = _Muxer(av, out, v, audio_out, settings, copied)
                damage: list[str] = []
                # Decoding, ``fn`` and encoding overlap: frames are decoded on one thread, encoded and muxed (with the
                # audio packets, in their order) on another, while ``fn`` runs here; FFmpeg works without Python's lock.
                with _Encoder(mux) as enc:
                    for it in ahead_of(_demuxed(c, src, bool(audio_out), max_frames, damage), AHEAD):
                        if not isinstance(it, Frame):
                            enc.put(("audio", it))
                        elif keep is None or keep(it.index):
                            enc.put(("video", it, np.ascontiguousarray(fn(it))))
                mux.finish(src)
            finally:
                out.close()
    except av.error.FFmpegError as e:
        raise CorruptVideoError(f"{src} -> {dst}: FFmpeg failed while writing ({e})") from e
    finally:
        c.close()
    return Written(mux.frames, mux.pix_fmt, audio_notes, copied, damage[0] if damage else None, dropped)


AHEAD = 8  # frames decoded ahead of the watermarking, and frames waiting for the encoder (8 x 6 MB at 1080p)


def _demuxed(c: Any, path: Path, with_audio: bool, max_frames: int | None, damage: list[str]) -> Iterator[Any]:
    """The clip's frames, each preceded by the audio packets demuxed before it (in the container's order)."""
    pending: list[Any] = []
    for f in _frames_of(c, path, pending.append if with_audio else None, max_frames, damage):
        yield from pending
        pending.clear()
        yield f
    yield from pending


class _Encoder:
    """A thread that encodes and muxes what ``put`` gives it, in order: ("video", frame, rgb) or ("audio", packet).
    Its error is raised in the caller at the next ``put`` or at the end; leaving the block waits for it to finish."""

    def __init__(self, mux: _Muxer) -> None:
        self.mux, self.q, self.error = mux, queue.Queue(maxsize=AHEAD), None
        self.thread = threading.Thread(target=self._run, name="video-encode", daemon=True)

    def _run(self) -> None:
        while (item := self.q.get()) is not None:
            if self.error is not None:
                continue  # drain after a failure
            try:
                if item[0] == "video":
                    self.mux.video(item[1], item[2])
                else:
                    self.mux.audio(item[1])
            except BaseException as e:  # raised in the caller
                self.error = e

    def put(self, item: tuple) -> None:
        if self.error is not None:
            raise self.error
        self.q.put(item)

    def __enter__(self) -> _Encoder:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.q.put(None)
        self.thread.join()
        if self.error is not None and exc[0] is None:
            raise self.error


def _audio_streams(av: Any, c: Any, out: Any, fmt: str) -> tuple[dict[int, Any], list[str]]:
    """The input's audio streams copied into ``out`` where its container takes them; what became of each."""
    audio_out, notes = {}, []
    for a in c.streams.audio:
        try:
            audio_out[a.index] = out.add_stream_from_template(a)
            notes.append(f"copied {a.codec_context.name}")
        except (av.error.FFmpegError, ValueError) as e:
            notes.append(f"dropped {a.codec_context.name} (the {fmt} container refuses it: {e})")
    return audio_out, notes


def _like_input(vs: Any, v: Any, rotation: int, time_base: Fraction | None, copied: list[str]) -> None:
    """The output video stream given the input's metadata, display rotation and (``time_base``) time base."""
    vs.metadata.update({k: x for k, x in v.metadata.items() if k not in NOT_CARRIED})
    if rotation:  # the display matrix: the frames are written as stored, shown as the input is
        vs.set_display_rotation(rotation)
        copied.append(f"display rotation {rotation}")
    if time_base is not None:
        # The input's own time base, in the stream and in the encoder: every frame keeps its presentation time (a
        # variable-rate clip stays variable; 1/rate would round them).
        vs.time_base = time_base
        vs.codec_context.time_base = time_base


def _video_stream(out: Any, codec: str, rate: Fraction, width: int, height: int, crf: int, preset: str) -> Any:
    vs = out.add_stream(codec, rate=rate)
    vs.width, vs.height = width, height
    if codec == "libx264rgb":  # RGB H.264: with CRF 0, lossless (the tests compare pixels through it)
        vs.pix_fmt = "rgb24"
    else:
        vs.pix_fmt = "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
    opts = {"crf": str(crf), "preset": preset}
    if codec == "libx265":
        opts["x265-params"] = "log-level=none"  # x265 prints its settings to stderr otherwise
    vs.options = opts
    return vs


def _carry_metadata(src: Any, dst: Any) -> list[str]:
    keys = [k for k in src.metadata if k not in NOT_CARRIED]
    dst.metadata.update({k: src.metadata[k] for k in keys})
    return keys


def dropped_metadata(src: Any) -> list[str]:
    """The container's and video stream's keys not carried over (they describe the old encoder, not the clip)."""
    v = src.streams.video[0]
    return [f"{k} (names the old encoder)" for k in dict.fromkeys([*src.metadata, *v.metadata]) if k in NOT_CARRIED]
