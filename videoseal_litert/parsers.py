"""The command line's one parser: the shared parent parsers (``--model``, ``--part``, ``--ckpt``, ``--out``, ``--images``,
``--threads``, ``--force``, ``--variants``...), each command's own options, and the command table (``COMMANDS``: help,
parents, options, handler name). Building it imports nothing heavy: ``videoseal-litert --help`` works before torch is
installed. The handlers are in ``handlers.py``; ``cli.py`` dispatches.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path

from videoseal_litert.core.errors import UsageError
from videoseal_litert.core.exit import DEBUG_ENV

PART_CHOICES = ("extractor", "embedder")


class Parser(argparse.ArgumentParser):
    """argparse, but a bad command line is a named UsageError (one ``error:`` line, exit 2) like every other error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (videoseal-litert {self.prog.split(' ', 1)[-1]} --help)")


def _common() -> argparse.ArgumentParser:
    p = Parser(add_help=False)
    p.add_argument("--out", type=Path, default=Path("artifacts"), help="artifact directory (make OUT=)")
    threads = int(os.environ.get("VIDEOSEAL_THREADS", "2"))  # convert.options.THREADS_ENV (not imported here: it needs torch)
    p.add_argument(
        "--threads", type=int, default=threads, help=f"CPU threads for PyTorch and the interpreter (default {threads}; VIDEOSEAL_THREADS)"
    )
    return p


def _model() -> argparse.ArgumentParser:
    p = Parser(add_help=False)
    p.add_argument(
        "--model", required=True, help="registry name (tiny, videoseal, pixelseal, chunkyseal, videoseal_0.0) or a card YAML path"
    )
    p.add_argument("--part", choices=PART_CHOICES, default=None, help="which part of the model (default: the extractor; bench: every part)")
    p.add_argument("--ckpt", type=Path, default=None, help="checkpoint (.pth official or bare state dict, or .safetensors)")
    p.add_argument("--random-init", action="store_true", help="seeded random weights; every artifact records random_init: true")
    p.add_argument(
        "--untrained",
        action="store_true",
        help="the checkpoint holds untrained (random) weights, like ../shared/reference's minis: judged by the random-weight "
        "band and labelled random_init: true in every artifact",
    )
    p.add_argument("--allow-zero-weights", action="store_true", help="go on although a conv/linear weight is entirely zero")
    p.add_argument("--allow-nonfinite-weights", action="store_true", help="go on although a tensor holds NaN or infinity")
    p.add_argument("--images", type=Path, default=None, help="a folder of your photos to verify on (default: the held-out photos)")
    p.add_argument("--force", action="store_true", help="rerun even if the stage is up to date")
    return p


def _variants(what: str) -> argparse.ArgumentParser:
    p = Parser(add_help=False)
    p.add_argument("--variants", default=None, help=f"comma-separated variants of the part {what} (default: the model's)")
    return p


COMMON, MODEL = _common(), _model()

# command -> (help, parents, extra arguments, handler name)
Spec = tuple[str, list[argparse.ArgumentParser], Callable[[argparse.ArgumentParser], None], str]


def _none(p: argparse.ArgumentParser) -> None:
    pass


def _brief(p: argparse.ArgumentParser) -> None:
    p.add_argument("--brief", action="store_true", help="one line instead of the stage's table (make convert ends with `summary`)")


def _verify(p: argparse.ArgumentParser) -> None:
    p.add_argument("--variant", default="fp32", help="the file to verify (fp32, int8, ...)")
    p.add_argument(
        "--file",
        type=Path,
        default=None,
        help="any .tflite (made by another tool, edited by hand), judged against the model's PyTorch on the held-out photos "
        "wherever it lies: extractor or embedder from its signature, report beside it, exit 2 on a FAIL",
    )
    _brief(p)


def _summary(p: argparse.ArgumentParser) -> None:
    p.add_argument("--variant", default="fp32", help="comma-separated variants to list")


def _quantize(p: argparse.ArgumentParser) -> None:
    p.add_argument("--calib", type=Path, default=None, help="extra calibration images (added to the built-in set)")
    p.add_argument("--io", choices=("float", "int8"), default="float", help="int8: the int8 file takes and returns int8")
    p.add_argument(
        "--target-agreement",
        type=float,
        default=None,
        help="extractor accuracy control: keep the fewest op groups float until INT8 bits agree with PyTorch's on this "
        "fraction of the validation split (default 0.999 for a model with an embedder, else off; 0 turns it off)",
    )
    p.add_argument(
        "--target-watermark-snr",
        type=float,
        default=None,
        help="embedder accuracy control: keep the fewest op groups float until the INT8 error is this many dB below the "
        "watermark on the validation split (default 10; 0 turns it off)",
    )


def _allow_unverified(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--allow-unverified",
        action="store_true",
        help="also use files that failed verification (kept as .failed.tflite), were never verified or changed since; "
        "the summary says which",
    )


def _bench(p: argparse.ArgumentParser) -> None:
    _allow_unverified(p)
    p.add_argument("--runs", type=int, default=20, help="timed rounds per file")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls first")
    p.add_argument("--bench-threads", default=None, help="thread counts, e.g. 2 (default: 1 and --threads)")


def _video_bench(p: argparse.ArgumentParser) -> None:
    _allow_unverified(p)
    p.add_argument("--model", default="tiny", help="registry name or card path (default tiny, the shipped pair)")
    p.add_argument("--sizes", default="480p,720p,1080p", help="frame sizes: 480p, 720p, 1080p or WxH, comma-separated")
    p.add_argument("--frames", type=int, default=128, help="frames per clip (default 128: one official chunk at step 4)")
    p.add_argument("--crf", type=int, default=23, help="H.264 CRF both routes encode at (default 23)")
    p.add_argument("--variant", default="int8", help="the project's files: int8 (default), fp32, ...")
    p.add_argument("--no-rss", action="store_true", help="skip the peak-RSS runs (fresh processes, the clip once and twice)")
    p.add_argument("--random-init", action="store_true", help="seeded random weights; the report says RANDOM WEIGHTS")
    p.add_argument("--rss-child", choices=("project", "official"), default=None, help=argparse.SUPPRESS)  # the RSS run itself
    p.add_argument("--rss-clip", type=Path, default=None, help=argparse.SUPPRESS)


def _route_graph(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="tiny", help="registry name or card path (default tiny, the shipped pair)")
    p.add_argument("--sizes", default="1280x720,1920x1080,720x1280,1080x1920", help="output sizes WxH, comma-separated")
    p.add_argument("--runs", type=int, default=10, help="timed rounds, LiteRT and numpy (medians)")


def _package(p: argparse.ArgumentParser) -> None:
    _allow_unverified(p)
    p.add_argument("--embedder-variants", default=None, help="embedder files to ship (default: every written one that ships; 'none')")
    p.add_argument("--dist", type=Path, default=Path("dist"))
    p.add_argument("--reverify", action="store_true", help="re-verify a file that changed since verification")
    p.add_argument("--golden", type=int, default=3, help="number of golden images")
    p.add_argument(
        "--arm",
        default=None,
        help="also run the bundle's self-tests under these emulated ARM64 CPUs ('all' or a comma list; see arm-check)",
    )


def _web(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="tiny", help="whose bundle (dist/<model>/, from make package; default tiny)")
    p.add_argument("--dist", type=Path, default=Path("dist"))


def _web_serve(p: argparse.ArgumentParser) -> None:
    _web(p)
    p.add_argument("--port", type=int, default=8000, help="local port (0: any free one)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")


def _web_check(p: argparse.ArgumentParser) -> None:
    _web(p)
    _allow_unverified(p)
    p.add_argument("--browsers", default="chromium,firefox", help="comma-separated: chromium, firefox")
    p.add_argument("--photo", type=Path, default=None, help="the photo the page embeds into (default: an evaluation photo of the pool)")


def _demo(p: argparse.ArgumentParser) -> None:
    p.add_argument("--images", type=Path, default=None, help="your photos, any size (default: the held-out photos)")
    p.add_argument("--ckpt", type=Path, default=None, help="a retrained pair (default: models/tiny/checkpoint.safetensors)")
    p.add_argument("--model", default="tiny", help="the pair: tiny (default) or fixture (after make train-fixture)")
    p.add_argument("--target-agreement", type=float, default=1.0, help="the INT8 extractor's accuracy control target (0: off, to compare)")


ROBUSTNESS_VARIANTS = "pytorch,fp32,int8,int8-dynamic"


def _video(p: argparse.ArgumentParser) -> None:
    _allow_unverified(p)
    p.add_argument(
        "action", choices=("embed", "detect", "attack"), help="embed a watermark into a clip, detect one, or detect it after codec attacks"
    )
    p.add_argument(
        "--attacks",
        default=None,
        help="attack: codec attacks, comma-separated (default all: h264_crf18..33, h265_crf23..33, fps_half, ...)",
    )
    p.add_argument("--model", default="tiny", help="registry name or card path (default tiny, the shipped pair)")
    p.add_argument("--ckpt", type=Path, default=None, help="checkpoint (default: the model's)")
    p.add_argument("--random-init", action="store_true", help="seeded random weights; every artifact records random_init: true")
    p.add_argument("--untrained", action="store_true", help="the checkpoint holds untrained (random) weights (the random band)")
    p.add_argument("--input", type=Path, default=None, help="the clip (default: video/clips.json's bikes.mp4; detect: embed's output)")
    p.add_argument(
        "--output", type=Path, default=None, help="embed: the watermarked clip, .mp4/.mov/.mkv (default OUT/video/<clip name>.wm.mp4)"
    )
    p.add_argument("--embedder", default="int8", help="embed: pytorch, an embedder variant (fp32, fp16, int8) or a .tflite (default int8)")
    p.add_argument("--variants", default="pytorch,int8", help="detect: extractors, comma-separated: pytorch, variants, .tflite paths")
    p.add_argument(
        "--message", default=None, help="the bits (0/1 or hex); default: embed draws one from --seed, detect reads embed's .json"
    )
    p.add_argument("--seed", type=int, default=None, help="embed: seed of the message when none is given (default: random per clip)")
    p.add_argument("--force", action="store_true", help="embed: replace an existing output (default: refuse by name)")
    p.add_argument("--strict", action="store_true", help="embed: refuse a clip that decodes fewer frames than it declares (default: warn)")
    p.add_argument("--crf", type=int, default=23, help="embed: H.264 constant rate factor (0 lossless .. 51; default 23)")
    p.add_argument("--aggregation", default="avg", help="detect: avg (default), squared_avg, l1norm_avg, l2norm_avg")
    p.add_argument("--max-frames", type=int, default=None, help="only the first N frames")
    p.add_argument("--report-dir", type=Path, default=None, help="detect: where reports go (default OUT/video/<clip>)")


def _evaluate_videos(p: argparse.ArgumentParser) -> None:
    _evaluate(p)
    p.add_argument("--videos", default=None, help="clips (video/clips.json's real clips), a folder, glob or list of videos (default: none)")
    p.add_argument("--video-attacks", default=None, help="codec (default: all), or a comma list: h264_crf23, h265_crf28, fps_half, ...")
    p.add_argument("--video-frames", type=int, default=16, help="frames of each clip embedded, attacked and decoded (default 16)")
    p.add_argument("--video-aggregation", default="avg", help="avg (default), squared_avg, l1norm_avg, l2norm_avg")


def _evaluate(p: argparse.ArgumentParser) -> None:
    _allow_unverified(p)
    p.add_argument("--model", default="tiny", help="registry name or card path (default tiny, the shipped pair)")
    p.add_argument("--ckpt", type=Path, default=None, help="checkpoint (default: the model's)")
    p.add_argument("--random-init", action="store_true", help="seeded random weights; every artifact records random_init: true")
    p.add_argument(
        "--untrained",
        action="store_true",
        help="the checkpoint holds untrained (random) weights, like ../shared/reference's minis: judged by the random-weight "
        "band and labelled random_init: true in every artifact",
    )
    p.add_argument(
        "--images",
        default=None,
        help="a folder, a glob ('photos/*.jpg') or a text file of paths (default: the photo pool's evaluation split)",
    )
    p.add_argument(
        "--attacks",
        default=None,
        help="official (default: the official image suite), quick, robustness, or a comma list (jpeg, jpeg_40, resize_0.5)",
    )
    p.add_argument(
        "--variants",
        default=None,
        help="pytorch (both parts), extractor variants, embedder-<variant>, .tflite paths (default pytorch,fp32,int8)",
    )
    p.add_argument("--messages-per-image", type=int, default=1, help="seeded random messages per image")
    p.add_argument("--seed", type=int, default=0, help="seed of the messages and the attacks' random draws")
    p.add_argument("--engine", default="local", help="local (in-process, default) or ray")
    p.add_argument("--ray-address", default=None, help="an existing Ray cluster (default RAY_ADDRESS, else a local one)")
    p.add_argument(
        "--workers", type=int, default=None, help="ray: actors per pool at most (default: the cluster's CPUs / (pools x threads))"
    )
    p.add_argument("--eval-dir", type=Path, default=None, help="where rows and summary go (default OUT/<model>/evaluate)")
    p.add_argument("--force", action="store_true", help="start the evaluation folder afresh (default: resume)")


def _train(p: argparse.ArgumentParser) -> None:
    p.add_argument("--steps", type=int, default=8000, help="total steps (a resumed run continues to this)")
    p.add_argument("--batch", type=int, default=32, help="watermarked images per step (plus a quarter as many unwatermarked)")
    p.add_argument("--size", type=int, default=128, help="training crop size (a multiple of the tile size, 32)")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--strength-start", type=float, default=0.05, help="scaling_w at step 0 (26 dB); annealed to the card's")
    p.add_argument("--anneal-frac", type=float, default=0.6)
    p.add_argument("--aug-from", type=int, default=300)
    p.add_argument("--dense-weight", type=float, default=0.0, help="weight of the per-location loss (0: pooled logits only)")
    p.add_argument("--mask-weight", type=float, default=0.5, help="weight of the detection (mask) loss")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--card", type=Path, default=None, help="the pair's card (default: models/cards/tiny.yaml)")
    p.add_argument("--ckpt-dir", type=Path, default=None)
    p.add_argument("--ckpt-every", type=int, default=500)
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--stop-after", type=int, default=None, help="stop at this step (the schedule still spans --steps); rerun to continue")
    p.add_argument("--export", type=Path, default=None, help="write checkpoint, record and curve here at the end")


def _fixture(p: argparse.ArgumentParser) -> None:
    p.add_argument("--steps", type=int, default=1800, help="total steps (a resumed run continues to this)")
    p.add_argument("--batch", type=int, default=12, help="watermarked images per step (plus a quarter as many unwatermarked)")
    p.add_argument("--size", type=int, default=96, help="training crop size (a multiple of the tile size, 32)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--strength-start", type=float, default=0.08, help="scaling_w at step 0 (22 dB); annealed to the card's")
    p.add_argument("--anneal-frac", type=float, default=0.5)
    p.add_argument("--aug-from", type=int, default=1200)
    p.add_argument("--dense-weight", type=float, default=1.0, help="weight of the per-location loss")
    p.add_argument("--mask-weight", type=float, default=0.5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ckpt-dir", type=Path, default=Path("runs/fixture"))
    p.add_argument("--ckpt-every", type=int, default=100)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--max-minutes", type=float, default=120.0, help="stop (resumable) after this much wall time")
    p.add_argument("--export", type=Path, default=Path("runs/fixture/export"))


def _scale(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", default="videoseal,chunkyseal")
    p.add_argument("--runs", type=int, default=3, help="timed latency rounds per file (one ChunkySeal image is ~10 s)")
    p.add_argument("--force", action="store_true")
    p.add_argument("--resume", action="store_true", help="keep stages a previous (interrupted) run already measured")


def _kernel(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tokens", type=int, default=16)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--runs", type=int, default=200)


def _sweep(p: argparse.ArgumentParser) -> None:
    p.add_argument("--counts", default="4,8,16,32,96", help="numbers of calibration inputs to try")


def _arm(p: argparse.ArgumentParser) -> None:
    _allow_unverified(p)
    p.add_argument(
        "--files",
        default=None,
        help="file names without .tflite, comma-separated, e.g. fp32,int8,embedder-int8 (default: every verified file of both parts)",
    )
    p.add_argument("--cpus", default=None, help="emulated CPU models, comma-separated (default: cortex-a53,neoverse-n1,neoverse-v1,max)")
    p.add_argument("--inputs", type=int, default=4, help="held-out inputs per file")
    p.add_argument(
        "--trace", action="store_true", help="for a file that differs from x86: which ops introduce the difference (per-tensor, one input)"
    )


def _op_cost(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runs", type=int, default=10, help="interleaved timing rounds per file")
    p.add_argument(
        "--ops", default=None, help="op types to try in static int8, comma-separated (default: every compute op the recipe leaves float)"
    )


VAR_Q, VAR_P = _variants("to quantize"), _variants("to ship")
COMMANDS: dict[str, Spec] = {
    "convert": ("load + export + tflite + verify fp32 of a part (make convert)", [COMMON, MODEL], _none, "convert"),
    "load": ("checkpoint + card -> strictly loaded part, its description", [COMMON, MODEL], _brief, "stage"),
    "inspect": ("checkpoint report: parameters, statistics, flagged tensors", [COMMON, MODEL], _brief, "stage"),
    "export": ("torch.export program and ONNX of a part", [COMMON, MODEL], _brief, "stage"),
    "tflite": ("FP32 .tflite of a part", [COMMON, MODEL], _brief, "stage"),
    "verify": ("compare a .tflite with PyTorch on held-out photos", [COMMON, MODEL], _verify, "stage"),
    "quantize": (
        "the part's quantized variants from its FP32 file, each verified (make quantize)",
        [COMMON, MODEL, VAR_Q],
        _quantize,
        "quantize",
    ),
    "embedder": ("the card's embedder: load, FP32, verify, quantize (make embedder)", [COMMON, MODEL, VAR_Q], _quantize, "embedder"),
    "bench": ("latency, size and peak RSS of every file of the model's parts", [COMMON, MODEL], _bench, "bench"),
    "summary": ("one table of a part's files and their verification", [COMMON, MODEL], _summary, "summary"),
    "package": ("deployment bundle of both parts with golden vectors (make package)", [COMMON, MODEL, VAR_P], _package, "package"),
    "demo": ("embed, convert, quantize and decode with the tiny pair (make demo)", [COMMON], _demo, "demo"),
    "evaluate": (
        "the official attack suite over any images (and clips: the codec attacks): rows, per-attack table and plot (make evaluate)",
        [COMMON],
        _evaluate_videos,
        "evaluate",
    ),
    "video": (
        "embed or detect a watermark in a video file, the official video route (make video-embed / video-detect)",
        [COMMON],
        _video,
        "video",
    ),
    "video-bench": (
        "video frames per second and ms per stage, the project's route beside the official PyTorch route (make video-bench)",
        [COMMON],
        _video_bench,
        "video_bench",
    ),
    "route-graph": (
        "the embed route at full resolution as a LiteRT graph per output size, verified and timed (make route-graph)",
        [COMMON],
        _route_graph,
        "route_graph",
    ),
    "evaluate-scale": ("evaluate on both engines: images/s measured here, a cluster projected", [COMMON], _evaluate, "evaluate_scale"),
    "robustness": ("evaluate's preset: the common edits, PyTorch, FP32, INT8 and INT8-dynamic", [COMMON], _evaluate, "evaluate"),
    "train-tiny": ("train the default tiny pair on this CPU", [COMMON], _train, "train_tiny"),
    "train-fixture": ("train the released-size fixture extractor (VideoSeal 1.0 size) on this CPU", [COMMON], _fixture, "train_fixture"),
    "bench-scale": ("every stage at full size, wall time and peak RSS", [COMMON], _scale, "bench_scale"),
    "kernel-bench": ("one pointwise layer, float vs INT8", [COMMON], _kernel, "kernel_bench"),
    "calib-sweep": ("INT8 agreement against the number of calibration inputs", [COMMON, MODEL], _sweep, "calib_sweep"),
    "arm-check": (
        "every verified file on ARM64 XNNPACK kernels (emulated CPUs) against x86 and PyTorch",
        [COMMON, MODEL],
        _arm,
        "arm_check",
    ),
    "op-cost": (
        "where the time goes per op group (float and INT8), and which more ops could run integer",
        [COMMON, MODEL],
        _op_cost,
        "op_cost",
    ),
    "web": ("serve the page that embeds and detects in the browser, for a bundle (make web)", [COMMON], _web_serve, "web"),
    "web-setup": ("install LiteRT.js (npm ci) and headless Chromium and Firefox ESR without root", [], _none, "web_setup"),
    "web-check": (
        "the bundle's files and the page in headless Chromium and Firefox, judged by the rule (make web-check)",
        [COMMON],
        _web_check,
        "web_check",
    ),
    "calibration-manifest": ("rewrite calibration_data/manifest.json", [], _none, "calibration_manifest"),
    "photos": ("install the photo pool (calibration_data/pool.json) from its packages", [], _none, "photos"),
}


def build_parser() -> Parser:
    p = Parser(
        prog="videoseal-litert",
        description="VideoSeal-family watermark extractors and embedders from PyTorch to verified, quantized LiteRT.",
        epilog=f"--debug (or {DEBUG_ENV}=1) shows the traceback of an error. Exit codes: 0 ok, 2 named error, 3 bug, 130 SIGINT, 143 SIGTERM.",
    )
    sub = p.add_subparsers(dest="command", metavar="<command>", parser_class=Parser)
    for name, (text, parents, extra, _) in COMMANDS.items():
        extra(sub.add_parser(name, help=text, description=text, parents=parents))
    return p
