"""``make video-bench``: the project's video route against the official PyTorch route, side by side, in one run.

For each size (480p, 720p, 1080p by default) a clip of ``frames`` frames is made once from the bundled
``bigbuckbunny.mp4`` (resized, looped, H.264 at CRF 12 so the source is clean), then, alone on the machine and
one after the other:

- **embed**: the project's route as ``video embed`` runs it (``key_frames.embed_video``: decode, the key-frame
  residual through the embedder file, the blend, encode, overlapped on threads) against the official route
  (``video/official_route.py``: the chunk's frames batched in torch, as ``Videoseal.embed(..., is_video=True)``);
  both write H.264 at the same CRF and preset through the same encoder.
- **detect**: the project's route (``key_frames.detect_video``) on the project's watermarked clip against the
  official route (``Videoseal.detect``: ``chunk`` frames a batch), each then aggregated (``avg``).

End-to-end frames per second come from those runs. Milliseconds per stage come from a second, sequential pass over
the first frames (decode, resize, model, JND, blend, encode, each timed alone: a pipelined run overlaps them, so its
stages cannot be told apart). The report (``video-bench.{json,md}``) names the machine, its vector ISA and the
threads; with ``rss``, each route's detection runs again in a fresh process on the clip and on the clip twice over,
and the peak RSS of both is reported (flat in the clip's length when they match).
"""

from __future__ import annotations

import contextlib
import math
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from videoseal_litert.convert.embedder import EmbedderPart
from videoseal_litert.convert.extractor import ExtractorPart
from videoseal_litert.convert.options import RunOptions
from videoseal_litert.core.artifacts import machine_description, write_json, write_text
from videoseal_litert.core.console import say
from videoseal_litert.core.errors import PipelineError, UsageError
from videoseal_litert.runtime.route import resize_aa
from videoseal_litert.video.clips import clip_path
from videoseal_litert.video.io import DEFAULT_PRESET, _av, _video_stream, read_frames
from videoseal_litert.video.key_frames import KeyFrames, aggregate, detect_video, embed_video
from videoseal_litert.video.official_route import OfficialVideo, chunks, detect_chunk, embed_chunk, to_frames, to_tensor

SIZES = {"480p": (854, 480), "720p": (1280, 720), "1080p": (1920, 1080)}
SOURCE = "bigbuckbunny.mp4"
STAGE_FRAMES = 32  # frames in the sequential pass that times each stage
TARGETS = {"detect": 3.0, "embed": 2.0}  # issue 42: the project's fps over the official route's, at 720p


class Clock:
    """Seconds spent in each named stage: ``with clock("resize"): ...``."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        t = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] += time.perf_counter() - t

    def ms_per_frame(self, frames: int) -> dict[str, float]:
        return {k: round(1000 * v / max(frames, 1), 2) for k, v in self.seconds.items()}


def size_of(name: str) -> tuple[int, int]:
    """``720p`` or ``1280x720`` -> (width, height)."""
    if name in SIZES:
        return SIZES[name]
    try:
        w, h = (int(v) for v in name.lower().split("x"))
    except ValueError:
        raise UsageError(f"video-bench size {name!r}: one of {', '.join(SIZES)} or WxH (e.g. 1280x720)") from None
    if w < 16 or h < 16 or w % 2 or h % 2:
        raise UsageError(f"video-bench size {name!r}: even sides of at least 16 pixels (H.264 4:2:0)")
    return w, h


class _Writer:
    """H.264 frames into ``path`` with the route's encoder settings (``video.io._video_stream``)."""

    def __init__(self, path: Path, width: int, height: int, crf: int, preset: str = DEFAULT_PRESET, rate: Fraction = Fraction(25)) -> None:
        av = _av()
        self.av, self.out = av, av.open(str(path), "w")
        self.vs = _video_stream(self.out, "libx264", rate, width, height, crf, preset)

    def __call__(self, rgb: np.ndarray) -> None:
        for p in self.vs.encode(self.av.VideoFrame.from_ndarray(rgb, format="rgb24")):
            self.out.mux(p)

    def close(self) -> None:
        for p in self.vs.encode(None):
            self.out.mux(p)
        self.out.close()


def bench_clip(width: int, height: int, frames: int, folder: Path) -> Path:
    """``frames`` frames of the bundled animation at ``width`` x ``height`` (looped back and forth), made once."""
    from PIL import Image

    path = folder / f"bench-{width}x{height}-{frames}.mp4"
    if path.is_file():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    src = [np.asarray(Image.fromarray(f.upright()).resize((width, height), Image.BICUBIC)) for f in read_frames(clip_path(SOURCE))]
    order = src + src[-2:0:-1]  # forth and back: no cut where the loop closes
    tmp = path.with_name(f".{path.name}.partial.mp4")
    w = _Writer(tmp, width, height, crf=12, preset="veryfast")
    for i in range(frames):
        w(order[i % len(order)])
    w.close()
    tmp.replace(path)
    return path


def _official(opts: RunOptions, part_name: str, threads: int) -> tuple[OfficialVideo, Any]:
    import torch

    torch.set_num_threads(threads)
    part = EmbedderPart(opts) if part_name == "embedder" else ExtractorPart(opts)
    loaded = part.load()
    v, cfg = opts.spec.card.video, loaded.config
    return (
        OfficialVideo(
            loaded.module.eval(),
            part.size,
            v.step,
            v.chunk,
            float(getattr(cfg, "scaling_i", 1.0)),
            float(getattr(cfg, "scaling_w", 1.0)),
            getattr(loaded.module, "attenuation", None),
        ),
        part,
    )


def official_embed(o: OfficialVideo, src: Path, dst: Path, bits: np.ndarray, crf: int, frames: int | None = None) -> int:
    """The official route over a clip: chunks of ``chunk * step`` frames batched through torch, then encoded."""
    import torch

    msg = torch.as_tensor(np.asarray(bits, np.int64)).reshape(1, -1)
    writer = None
    n = 0
    for batch in chunks((f.upright() for f in read_frames(src, frames)), o.chunk * o.step):
        out = to_frames(embed_chunk(o, to_tensor(batch), msg))
        if writer is None:
            writer = _Writer(dst, out.shape[2], out.shape[1], crf)
        for y in out:
            writer(y)
        n += len(out)
    if writer is not None:
        writer.close()
    return n


def official_detect(o: OfficialVideo, src: Path, frames: int | None = None) -> np.ndarray:
    """The official detection over a clip: ``chunk`` frames a batch: (F, 1 + nbits) logits."""
    rows = [detect_chunk(o, to_tensor(batch)).numpy() for batch in chunks((f.upright() for f in read_frames(src, frames)), o.chunk)]
    return np.concatenate(rows).astype(np.float32)


def _timed(fn: Any, *args: Any, **kw: Any) -> tuple[Any, float]:
    t = time.perf_counter()
    r = fn(*args, **kw)
    return r, time.perf_counter() - t


# ---- the sequential pass that times each stage -------------------------------------------------------


def _stage_frames(clip: Path, n: int, clock: Clock) -> list[np.ndarray]:
    with clock("decode"):
        return [f.upright() for f in read_frames(clip, n)]


def _encode_all(frames: list[np.ndarray], path: Path, crf: int, clock: Clock) -> None:
    with clock("encode"):
        w = _Writer(path, frames[0].shape[1], frames[0].shape[0], crf)
        for y in frames:
            w(y)
        w.close()


def project_embed_stages(
    run: Any, route: dict, size: int, step: int, clip: Path, bits: np.ndarray, crf: int, tmp: Path
) -> tuple[dict, list]:
    clock = Clock()
    frames = _stage_frames(clip, STAGE_FRAMES, clock)
    k = KeyFrames(run, route, size, bits, step, clock)
    out = [k.mark(i, f) for i, f in enumerate(frames)]
    _encode_all(out, tmp / "stages-project.mp4", crf, clock)
    return clock.ms_per_frame(len(frames)), out


def official_embed_stages(o: OfficialVideo, clip: Path, bits: np.ndarray, crf: int, tmp: Path) -> tuple[dict, np.ndarray]:
    import torch

    clock = Clock()
    frames = _stage_frames(clip, STAGE_FRAMES, clock)
    msg = torch.as_tensor(np.asarray(bits, np.int64)).reshape(1, -1)
    with clock("convert"):
        x = to_tensor(frames)
    y = embed_chunk(o, x, msg, clock)
    with clock("convert"):
        out = to_frames(y)
    _encode_all(list(out), tmp / "stages-official.mp4", crf, clock)
    return clock.ms_per_frame(len(frames)), out


def detect_floor(extractor_path: Path, size: int, clip: Path, official_fps: float, target: float) -> dict[str, Any]:
    """The fastest detection this machine allows the project's route, from CPU time: every frame must be decoded and
    run through the extractor file, so with C cores no pipeline beats ``C * 1000 / (decode + model)`` frames a second,
    both measured as CPU milliseconds a frame (``time.process_time``, all threads: the decoder with its frame threads,
    as the route runs it, and on one thread, the lesser taken; the file on one LiteRT thread, its least CPU a frame)
    and the resize counted free. When that bound is under ``target`` times the official route's fps, no pipelining
    meets the target on this machine."""
    from videoseal_litert.runtime.litert_runner import open_file

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    decode = math.inf
    for threaded in (True, False):
        c = time.process_time()
        frames = [f.upright() for f in read_frames(clip, STAGE_FRAMES, frame_threads=threaded)]
        decode = min(decode, time.process_time() - c)
    c = time.process_time()
    inputs = [resize_aa(f, size, size, 1 / 255)[None] for f in frames]
    resize = time.process_time() - c
    run = open_file(extractor_path, 1)
    run({"image": inputs[0]})  # the delegate prepares itself on its first call: not a frame's cost
    c = time.process_time()
    for x in inputs:
        run({"image": x})
    model = time.process_time() - c
    ms = {k: round(1000 * v / len(frames), 2) for k, v in (("decode", decode), ("resize", resize), ("model, 1 LiteRT thread", model))}
    floor = ms["decode"] + ms["model, 1 LiteRT thread"]
    bound, with_resize = cores * 1000 / floor, cores * 1000 / (floor + ms["resize"])
    return {
        "cores": cores,
        "cpu_ms_per_frame": ms,
        "fps_bound_resize_free": round(bound, 1),
        "speedup_bound": round(bound / official_fps, 2),
        # the same bound with the route's own resize counted (still no copies, no Python, no idle core)
        "fps_bound_with_resize": round(with_resize, 1),
        "speedup_bound_with_resize": round(with_resize / official_fps, 2),
        "target": target,
        "target_reachable": bool(bound >= target * official_fps),
        # CPU a frame the target leaves for everything but decode and model (the resize, copies, Python, the queues)
        "cpu_ms_left_at_target": round(cores * 1000 / (target * official_fps) - floor, 2),
    }


def project_detect_stages(run: Any, size: int, clip: Path) -> dict:
    clock = Clock()
    _stage_frames(clip, STAGE_FRAMES, clock)
    detect_video({"project": run}, clip, size, STAGE_FRAMES, clock=clock, ahead=0)
    return clock.ms_per_frame(STAGE_FRAMES)


def official_detect_stages(o: OfficialVideo, clip: Path) -> dict:
    clock = Clock()
    frames = _stage_frames(clip, STAGE_FRAMES, clock)
    with clock("convert"):
        x = to_tensor(frames)
    detect_chunk(o, x, clock)
    return clock.ms_per_frame(len(frames))


# ---- one size: both routes, end to end --------------------------------------------------------------


def _bits_line(logits: np.ndarray, message: np.ndarray) -> dict[str, Any]:
    bits = aggregate(logits[:, 1:], "avg") > 0
    return {"bit_accuracy": float((bits == np.asarray(message, bool)).mean()), "bits": bits}


def bench_size(ctx: dict[str, Any], width: int, height: int, frames: int, crf: int, tmp: Path) -> dict[str, Any]:
    """Embed and detect at one size, the project's route and the official one, end to end and stage by stage."""
    clip = bench_clip(width, height, frames, ctx["clips"])
    bits, route, size, step = ctx["bits"], ctx["route"], ctx["size"], ctx["step"]
    marked, official_marked = tmp / f"project-{width}x{height}.mp4", tmp / f"official-{width}x{height}.mp4"
    e, t_pe = _timed(embed_video, ctx["embedder"], route, size, clip, marked, bits, step=step, crf=crf)
    n_oe, t_oe = _timed(official_embed, ctx["official_embedder"], clip, official_marked, bits, crf)
    logits, t_pd = _timed(detect_video, {"project": ctx["extractor"]}, marked, size)
    official_logits, t_od = _timed(official_detect, ctx["official_extractor"], marked)
    pe_ms, p_frames = project_embed_stages(ctx["embedder"], route, size, step, clip, bits, crf, tmp)
    oe_ms, o_frames = official_embed_stages(ctx["official_embedder"], clip, bits, crf, tmp)
    diff = np.abs(np.stack(p_frames).astype(np.int16) - o_frames.astype(np.int16))
    p, o = _bits_line(logits["project"], bits), _bits_line(official_logits, bits)
    n = e.frames

    def side(fr: int, seconds: float, stages: dict) -> dict[str, Any]:
        return {"frames": fr, "seconds": round(seconds, 2), "fps": round(fr / seconds, 2), "ms_per_stage": stages}

    return {
        "size": f"{width}x{height}",
        "frames": n,
        "embed": {
            "project": side(n, t_pe, pe_ms),
            "official": side(n_oe, t_oe, oe_ms),
            "speedup": round((n / t_pe) / (n_oe / t_oe), 2),
            "pixels_vs_official": {
                "max_levels": int(diff.max()),
                "mean_levels": round(float(diff.mean()), 4),
                "what": f"the first {len(p_frames)} frames before H.264: project's route ({ctx['embedder_file']}) vs official PyTorch",
            },
        },
        "detect": {
            "project": side(len(logits["project"]), t_pd, project_detect_stages(ctx["extractor"], size, marked)),
            "official": side(len(official_logits), t_od, official_detect_stages(ctx["official_extractor"], marked)),
            "speedup": round((len(logits["project"]) / t_pd) / (len(official_logits) / t_od), 2),
            "bit_accuracy": {"project": p["bit_accuracy"], "official": o["bit_accuracy"]},
            "aggregated_bits_agree": bool(np.array_equal(p["bits"], o["bits"])),
            "cpu_floor": detect_floor(ctx["extractor_path"], size, marked, len(official_logits) / t_od, TARGETS["detect"]),
        },
    }


# ---- the command ----------------------------------------------------------------------------------------


def _context(opts: RunOptions, variant: str, clips: Path) -> dict[str, Any]:
    from videoseal_litert.video.commands import file_runner

    label, embedder, efile = file_runner(opts, "embedder", variant)
    xlabel, extractor, xfile = file_runner(opts, "extractor", variant)
    o_embed, part = _official(opts, "embedder", opts.threads)
    o_detect, _ = _official(opts, "extractor", opts.threads)
    rng = np.random.default_rng(0)
    return {
        "embedder": embedder,
        "extractor": extractor,
        "embedder_file": Path(efile["file"]).name,
        "extractor_file": Path(xfile["file"]).name,
        "extractor_path": Path(xfile["file"]),
        "file_status": {"embedder": efile["status"], "extractor": xfile["status"]},
        "official_embedder": o_embed,
        "official_extractor": o_detect,
        "bits": rng.integers(0, 2, part.nbits),
        "route": part.family.route(opts.spec.card.embedder),
        "size": part.size,
        "step": opts.spec.card.video.step,
        "chunk": opts.spec.card.video.chunk,
        "clips": clips,
    }


def peak_rss(opts: RunOptions, route: str, clip: Path, variant: str) -> float:
    """Peak RSS (MB) of one detection of ``clip`` in a fresh process (``video-bench --rss-child``): the project's
    route or the official one."""
    cmd = [sys.executable, "-m", "videoseal_litert", "video-bench", "--model", str(opts.spec.card_path), "--out", str(opts.out)]
    cmd += ["--threads", str(opts.threads), "--variant", variant, "--rss-child", route, "--rss-clip", str(clip)]
    cmd += [flag for flag, on in (("--random-init", opts.random_init), ("--allow-unverified", opts.allow_unverified)) if on]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise PipelineError(f"video-bench: the {route} route's RSS run failed: {(r.stderr or r.stdout).strip()[-400:]}")
    return float(r.stdout.strip().splitlines()[-1])


def rss_child(opts: RunOptions, route: str, clip: Path, variant: str) -> float:
    """One detection of ``clip`` by ``route`` in this (fresh) process: its peak RSS in MB."""
    from videoseal_litert.runtime.rss import peak_rss_mb
    from videoseal_litert.video.commands import file_runner

    if route == "project":
        _, run, _ = file_runner(opts, "extractor", variant)
        detect_video({"project": run}, clip, ExtractorPart(opts).size)
    elif route == "official":
        official_detect(_official(opts, "extractor", opts.threads)[0], clip)
    else:
        raise UsageError(f"--rss-child {route!r}: project or official")
    return peak_rss_mb()


def run_video_bench(
    opts: RunOptions, sizes: list[str], frames: int, crf: int = 23, variant: str = "int8", rss: bool = True
) -> dict[str, Any]:
    """Both routes at each size, written to ``OUT/video/video-bench.{json,md}``; the figures, returned."""
    dims = [size_of(s) for s in sizes]
    if frames < STAGE_FRAMES:
        raise UsageError(f"video-bench --frames {frames}: at least {STAGE_FRAMES} (the stage pass times that many)")
    folder = opts.out / "video"
    ctx = _context(opts, variant, folder / "bench-clips")
    rows = []
    with tempfile.TemporaryDirectory(prefix="video-bench-") as tmp:
        for w, h in dims:
            say(f"video-bench: {w}x{h}, {frames} frames: the project's route and the official one (embed, then detect)")
            rows.append(bench_size(ctx, w, h, frames, crf, Path(tmp)))
            _say_row(rows[-1])
    r: dict[str, Any] = {
        "model": opts.spec.name,
        "random_init": opts.random_weights,
        "files": {"embedder": ctx["embedder_file"], "extractor": ctx["extractor_file"]},
        "file_status": ctx["file_status"],
        "machine": machine_description(),
        "threads": {
            "litert": opts.threads,
            "torch": opts.threads,
            "encoder": "x264's own (auto)",
            "decoder": "FFmpeg's (thread_type AUTO)",
        },
        "video": {"step": ctx["step"], "chunk": ctx["chunk"], "crf": crf, "preset": DEFAULT_PRESET, "codec": "libx264"},
        "source": f"{SOURCE} (video/clips.json), resized and looped, H.264 CRF 12",
        "sizes": rows,
        "targets": TARGETS,
    }
    at = next((x for x in rows if x["size"] == "1280x720"), None)
    if at is not None:
        r["targets_met_at_720p"] = {k: at[k]["speedup"] >= v for k, v in TARGETS.items()}
    if rss and at is not None:
        once, twice = bench_clip(1280, 720, frames, ctx["clips"]), bench_clip(1280, 720, 2 * frames, ctx["clips"])
        r["peak_rss_mb_detect_720p"] = {
            route: {f"{frames} frames": peak_rss(opts, route, once, variant), f"{2 * frames} frames": peak_rss(opts, route, twice, variant)}
            for route in ("project", "official")
        }
    write_json(folder / "video-bench.json", r)
    write_text(folder / "video-bench.md", render(r))
    say(f"video-bench: {folder / 'video-bench.md'}")
    return r


def _say_row(x: dict[str, Any]) -> None:
    for what in ("embed", "detect"):
        d = x[what]
        say(f"  {x['size']} {what}: project {d['project']['fps']} fps, official {d['official']['fps']} fps ({d['speedup']}x)")
    f = x["detect"]["cpu_floor"]
    say(
        f"  {x['size']} detect on {f['cores']} cores can reach at most {f['fps_bound_resize_free']} fps ({f['speedup_bound']}x): {floor_words(f)}"
    )


def floor_words(f: dict[str, Any]) -> str:
    ms = f["cpu_ms_per_frame"]
    return (
        f"decode {ms['decode']} + extractor {ms['model, 1 LiteRT thread']} CPU ms a frame, the resize ({ms['resize']}) counted free "
        f"(with it: at most {f['fps_bound_with_resize']} fps, {f['speedup_bound_with_resize']}x); "
        + (
            f"{f['target']}x leaves {f['cpu_ms_left_at_target']} CPU ms a frame for the resize and everything else"
            if f["target_reachable"]
            else f"{f['target']}x is out of reach on this machine"
        )
    )


def render(r: dict[str, Any]) -> str:
    lines = [
        f"# video-bench: {r['model']}" + (" (RANDOM WEIGHTS)" if r["random_init"] else ""),
        "",
        f"Machine: {r['machine']}. Threads: LiteRT {r['threads']['litert']}, torch {r['threads']['torch']}, encoder "
        f"{r['threads']['encoder']}, decoder {r['threads']['decoder']}. H.264 CRF {r['video']['crf']}, preset {r['video']['preset']}; "
        f"key frame every {r['video']['step']}, official chunk {r['video']['chunk']} key frames. Files: {r['files']['embedder']}, "
        f"{r['files']['extractor']} ({', '.join(f'{k}: {v}' for k, v in r['file_status'].items())}). Clips: {r['source']}.",
        "",
        "Frames per second, end to end (decode, watermark or detect, encode), each route alone on the machine:",
        "",
        "| size | embed: project | embed: official | speed-up | detect: project | detect: official | speed-up |",
        "|---|---|---|---|---|---|---|",
    ]
    for x in r["sizes"]:
        e, d = x["embed"], x["detect"]
        lines.append(
            f"| {x['size']} ({x['frames']} frames) | {e['project']['fps']} | {e['official']['fps']} | {e['speedup']}x | "
            f"{d['project']['fps']} | {d['official']['fps']} | {d['speedup']}x |"
        )
    if "targets_met_at_720p" in r:
        met = r["targets_met_at_720p"]
        lines += [
            "",
            "Targets at 720p (issue 42): "
            + ", ".join(f"{k} >= {v}x: {'met' if met[k] else 'NOT met'}" for k, v in r["targets"].items())
            + ".",
        ]
    lines += [
        "",
        "The fastest detection this machine allows (CPU time: every frame decoded and run through the extractor, on every core):",
        "",
    ]
    for x in r["sizes"]:
        f = x["detect"]["cpu_floor"]
        lines.append(
            f"- {x['size']}: at most {f['fps_bound_resize_free']} fps on {f['cores']} cores, {f['speedup_bound']}x the official route: {floor_words(f)}."
        )
    lines += ["", "Milliseconds per frame by stage (a sequential pass over the first frames, each stage timed alone):", ""]
    stages = ["decode", "convert", "resize", "model", "jnd", "blend", "psnr", "encode"]
    lines += ["| size | route | " + " | ".join(stages) + " |", "|---|---|" + "---|" * len(stages)]
    for x in r["sizes"]:
        for what in ("embed", "detect"):
            for route in ("project", "official"):
                ms = x[what][route]["ms_per_stage"]
                lines.append(f"| {x['size']} | {what}: {route} | " + " | ".join(str(ms.get(s, "-")) for s in stages) + " |")
    lines += ["", "Agreement:", ""]
    for x in r["sizes"]:
        p, d = x["embed"]["pixels_vs_official"], x["detect"]
        lines.append(
            f"- {x['size']}: watermarked pixels {p['mean_levels']} levels apart on average (at most {p['max_levels']}; {p['what']}); "
            f"message bits read from the project's clip: project {d['bit_accuracy']['project']:.1%}, official {d['bit_accuracy']['official']:.1%}"
            f" (aggregated bits {'the same' if d['aggregated_bits_agree'] else 'DIFFERENT'})."
        )
    if "peak_rss_mb_detect_720p" in r:
        lines += ["", "Peak RSS of one 720p detection in a fresh process (MB), the clip once and twice as long:", ""]
        for route, v in r["peak_rss_mb_detect_720p"].items():
            lines.append(f"- {route}: " + ", ".join(f"{k}: {mb:.0f}" for k, mb in v.items()))
    return "\n".join(lines) + "\n"
