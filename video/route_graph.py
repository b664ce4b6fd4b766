"""The full-resolution route as a LiteRT graph: ``route-<W>x<H>.tflite``, beside the 256 x 256 embedder file.

The embedder file works at 256 x 256; an image or a video frame of another size takes the official route around it
(``runtime/route.py``): the residual resized to the frame, the JND heatmap of the full-size frame (JND families),
``clamp(scaling_i * frame + scaling_w * residual, 0, 1)``. This graph is that route for one output size: inputs
``frame`` (1, H, W, 3) float32 RGB in [0, 1] and ``residual`` (1, 256, 256, C) (the embedder file's own output),
output ``watermarked`` (1, H, W, 3). An app then runs two graphs and writes no pixel loop of its own; LiteRT runs
it on the same kernels (and delegates) as the model.

The residual only grows here (each side of a graph is at least 256), and growing, torch's antialiased bilinear resize
is the plain bilinear one with half-pixel centres: the converter's RESIZE_BILINEAR. Each graph is verified against
the Python route by the rule (the pixels group: the watermark the route writes against the graph's error, at the
fp32 embedder floor) on photos of the evaluation split with the embedder's residuals, and timed against numpy;
``route-<W>x<H>.json`` records both. A graph that fails verification is kept as ``.failed.tflite`` (the rule's
convention) and never shipped.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from videoseal_litert.convert.embedder import EmbedderPart
from videoseal_litert.convert.options import RunOptions
from videoseal_litert.convert.tflite import convert_fp32
from videoseal_litert.core.artifacts import machine_description, sha256_file, write_json
from videoseal_litert.core.console import say
from videoseal_litert.core.errors import UsageError
from videoseal_litert.core.images import read_rgb
from videoseal_litert.models.gate import judge_signal
from videoseal_litert.models.unet import ATTENUATIONS, JND
from videoseal_litert.models.variants import rule_for, variant
from videoseal_litert.runtime import route as numpy_route
from videoseal_litert.runtime.litert_runner import LiteRTRunner

DEFAULT_SIZES = ("1280x720", "1920x1080", "720x1280", "1080x1920")  # landscape and portrait HD and full HD
INPUTS, OUTPUT = ("frame", "residual"), "watermarked"
CHECK_PHOTOS = 3


class RouteGraph(nn.Module):
    """(frame NHWC, residual NHWC at the processing size) -> {"watermarked": frame NHWC}: the official route."""

    def __init__(self, height: int, width: int, route: dict[str, Any]) -> None:
        super().__init__()
        self.height, self.width = height, width
        self.scaling_i, self.scaling_w = float(route["scaling_i"]), float(route["scaling_w"])
        att = route.get("attenuation")
        self.jnd = JND(*ATTENUATIONS[att]) if att else None

    def forward(self, frame: torch.Tensor, residual: torch.Tensor) -> dict[str, torch.Tensor]:
        x = frame.permute(0, 3, 1, 2)
        res = F.interpolate(residual.permute(0, 3, 1, 2), size=(self.height, self.width), mode="bilinear", align_corners=False)
        if self.jnd is not None:
            res = self.jnd.heatmaps(x) * res
        out = torch.clamp(self.scaling_i * x + self.scaling_w * res, 0, 1)
        return {OUTPUT: out.permute(0, 2, 3, 1)}


def parse_size(text: str, least: int) -> tuple[int, int]:
    """``1280x720`` -> (width, height); each side at least ``least`` (the graph only grows the residual)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UsageError(f"route size {text!r}: WxH, e.g. 1280x720") from None
    if w < least or h < least:
        raise UsageError(f"route size {text!r}: each side at least {least} (smaller frames take the Python route)")
    return w, h


def file_name(width: int, height: int) -> str:
    return f"route-{width}x{height}.tflite"


def _check_inputs(part: EmbedderPart, width: int, height: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, frame (H, W, 3), residual (S, S, C)) for a few evaluation photos: the embedder's own residual (PyTorch)."""
    from PIL import Image

    from videoseal_litert.calibration_data.pool import split_paths

    loaded = part.load()
    run = part.torch_runner(loaded, ("residual",))
    rng = np.random.default_rng(0)
    out = []
    for path in split_paths("evaluation")[:CHECK_PHOTOS]:
        rgb = read_rgb(path).transpose(1, 2, 0)
        frame = np.asarray(Image.fromarray((rgb * 255).round().astype(np.uint8)).resize((width, height), Image.BICUBIC), np.float32) / 255
        small = numpy_route.resize_aa(frame, part.size, part.size)
        bits = rng.integers(0, 2, (1, part.nbits)).astype(np.float32)
        res = np.asarray(run({"image": small[None], "message": bits})["residual"][0], np.float32)
        out.append((path.name, frame, res))
    return out


def _median_ms(fn: Any, runs: int) -> float:
    fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return float(np.median(times))


def verify(graph: Any, route: dict[str, Any], checks: list[tuple[str, np.ndarray, np.ndarray]], floor_db: float) -> list[Any]:
    """The rule's pixels group per check input: the watermark the Python route writes against the graph's error."""
    groups = []
    for name, frame, res in checks:
        h, w = frame.shape[:2]
        want = numpy_route.blend(route, frame, numpy_route.resize_aa(res, h, w))
        got = graph({"frame": frame[None], "residual": res[None]})[OUTPUT][0]
        groups.append(judge_signal(f"pixels / {name}", want - frame, got - want, floor_db))
    return groups


def _video_ms(graph: Any, route: dict[str, Any], frame: np.ndarray, res: np.ndarray, step: int, runs: int) -> dict[str, float]:
    """Milliseconds a video frame (8 bits in and out) takes through each route, a key frame's resize included once per
    ``step`` frames: numpy (``KeyFrames.mark``) against the graph (``KeyFrames`` with ``graph``)."""
    from videoseal_litert.video.key_frames import KeyFrames

    rgb = (frame * 255).round().astype(np.uint8)
    fixed = lambda inputs: {"residual": res[None]}  # noqa: E731 (the embedder's output, as it came)
    out = {}
    for name, g in (("numpy", None), ("litert", graph)):
        k = KeyFrames(fixed, route, res.shape[0], np.zeros(1), step, graphs={rgb.shape[:2]: g} if g else None)
        out[name] = _median_ms(lambda k=k: [k.mark(i, rgb) for i in range(step)], runs) / step
    return out


def build_route_graph(opts: RunOptions, width: int, height: int, runs: int = 10) -> dict[str, Any]:
    """``route-<W>x<H>.tflite`` in the model's folder, verified and timed; its record (also ``route-<W>x<H>.json``)."""
    part = EmbedderPart(opts)
    route = part.family.route(opts.spec.card.embedder)
    folder = opts.model_dir.path
    path = folder / file_name(width, height)
    checks = _check_inputs(part, width, height)
    channels = checks[0][2].shape[-1]
    sample = {"frame": torch.zeros(1, height, width, 3), "residual": torch.zeros(1, part.size, part.size, channels)}
    convert_fp32(RouteGraph(height, width, route).eval(), sample, path)
    runner = LiteRTRunner(path, opts.threads)
    floor = rule_for(opts.spec, "embedder", variant("fp32", "embedder")).floor.snr_db
    groups = verify(runner, route, checks, floor)
    _, frame, res = checks[0]
    image_ms = {
        "litert": _median_ms(lambda: runner({"frame": frame[None], "residual": res[None]}), runs),
        "numpy": _median_ms(lambda: numpy_route.blend(route, frame, numpy_route.resize_aa(res, height, width)), runs),
    }
    video_ms = _video_ms(runner, route, frame, res, opts.spec.card.video.step, max(runs // 2, 3))
    passed = all(g.passed for g in groups)
    if not passed:
        failed = path.with_name(path.stem + ".failed.tflite")
        path.replace(failed)
        path = failed
    r = {
        "file": path.name,
        "size": [width, height],
        "inputs": {"frame": [1, height, width, 3], "residual": [1, part.size, part.size, channels]},
        "output": {OUTPUT: [1, height, width, 3]},
        "route": route,
        "sha256": sha256_file(path),
        "verification": {
            "passed": passed,
            "floor_db": floor,
            "groups": [{"group": g.group, "snr_db": g.snr_db, "failures": g.failures} for g in groups],
            "against": "runtime/route.py (resize_aa, jnd_heatmap, blend) on the same frame and residual",
        },
        "ms_per_image": {k: round(v, 2) for k, v in image_ms.items()},
        "ms_per_video_frame": {k: round(v, 2) for k, v in video_ms.items()},
        "faster_for_video": bool(passed and video_ms["litert"] < video_ms["numpy"]),
        "threads": opts.threads,
        "machine": machine_description(),
        "random_init": opts.random_weights,
    }
    write_json(folder / f"route-{width}x{height}.json", r)
    worst = min((g.snr_db for g in groups), default=float("nan"))
    say(
        f"{path.name}: {'PASSED' if passed else 'FAILED'} against the Python route (worst {worst:.1f} dB, floor {floor:g}); "
        f"an image {image_ms['litert']:.1f} ms on LiteRT, {image_ms['numpy']:.1f} ms in numpy; a video frame "
        f"{video_ms['litert']:.1f} / {video_ms['numpy']:.1f} ms: video embed uses {'the graph' if r['faster_for_video'] else 'numpy'}"
    )
    return r


def video_graph(folder: Path, width: int, height: int, threads: int) -> tuple[Any, str] | None:
    """The route graph ``video embed`` uses for frames of this size: one that passed and was measured faster for video
    than numpy on this machine (``route-<W>x<H>.json``), opened; None otherwise."""
    import json

    rec = folder / f"route-{width}x{height}.json"
    if not rec.is_file():
        return None
    r = json.loads(rec.read_text())
    path = folder / r["file"]
    if not (r.get("faster_for_video") and r["verification"]["passed"] and path.is_file() and sha256_file(path) == r["sha256"]):
        return None
    return LiteRTRunner(path, threads), path.name
