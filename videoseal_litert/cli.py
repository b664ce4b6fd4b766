"""``videoseal-litert <command> [options]``: the one command line over every stage, with one parser.

Every command is a subcommand of one ``argparse`` parser; the options that mean the same thing
(``--model``, ``--part``, ``--ckpt``, ``--random-init``, ``--allow-*``, ``--out``, ``--images``,
``--threads``, ``--force``, ``--variants``) come from shared parent parsers, so they are spelled and
checked the same everywhere. The Makefile's targets call these commands. Every command ends in the
one error model of ``core.exit.run_main``: ``error: <Name>: <message>`` on stderr and exit code
2 for a named error (a bad option included), 3 for an unexpected one (a bug), 130 after SIGINT and
143 after SIGTERM, with no traceback unless ``--debug`` (or ``VIDEOSEAL_DEBUG=1``) is given.

Building the parser imports nothing heavy: ``videoseal-litert --help`` works before torch is installed.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from videoseal_litert.core.errors import UsageError
from videoseal_litert.core.exit import DEBUG_ENV, run_main

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


# ---- handlers: thin layers over the stage functions -------------------------------------------------


def _opts(a: argparse.Namespace) -> Any:
    from videoseal_litert.convert.options import RunOptions
    from videoseal_litert.models.registry import resolve

    return RunOptions(
        spec=resolve(a.model),
        out=a.out,
        ckpt=a.ckpt,
        random_init=a.random_init,
        untrained=a.untrained,
        allow_zero_weights=a.allow_zero_weights,
        allow_nonfinite_weights=a.allow_nonfinite_weights,
        images=a.images,
        threads=a.threads,
        force=a.force,
    )


def _logged(log_path: Path, body: Callable[[Path | None], None]) -> None:
    from videoseal_litert.core.console import captured

    with captured(log_path) as path:
        body(path)


def _run_stages(
    a: argparse.Namespace,
    opts: Any,
    calls: list[Callable[[], Any]],
    entries: tuple[tuple[str, str], ...] = (),
    summarize: bool | None = None,
) -> None:
    """One stage: its table (first line with --brief). Several (or ``summarize``): their tables to the log,
    one summary of ``entries``' files on the terminal."""
    from videoseal_litert.convert.stages import artifact_summary
    from videoseal_litert.core.console import say

    log = logging.getLogger("videoseal_litert.cli")
    t0 = time.time()

    summarize = len(calls) > 1 if summarize is None else summarize

    def body(log_path: Path | None) -> None:
        title = f"{a.command} {opts.spec.name}"
        for fn in calls:
            table = fn().table()
            if summarize:
                log.info("%s", table)
                title = table.split("\n", 1)[0] if len(calls) == 1 else title
            else:
                say(table.split("\n", 1)[0] if getattr(a, "brief", False) else table)
        if summarize and entries:
            summary, _ = artifact_summary(opts.model_dir.path, entries, time.time() - t0, title)
            say(summary + (f"\nlog: {log_path}" if log_path else ""))

    _logged(opts.model_dir.path / "logs" / f"{a.command}{'' if a.part in (None, 'extractor') else '-' + a.part}.log", body)


def cmd_stage(a: argparse.Namespace) -> None:
    from videoseal_litert.convert import stages as st
    from videoseal_litert.convert.parts import make_part

    opts = _opts(a)
    part = make_part(opts, a.part or "extractor")
    fn = {
        "load": lambda: st.stage_load(opts, part),
        "inspect": lambda: st.stage_inspect(opts, part),
        "export": lambda: st.stage_export(opts, part),
        "tflite": lambda: st.stage_tflite(opts, part),
        "verify": lambda: st.stage_verify(opts, part, a.variant) if a.file is None else st.stage_verify_file(opts, a.file),
    }[a.command]
    _run_stages(a, opts, [fn])


def cmd_convert(a: argparse.Namespace) -> None:
    from videoseal_litert.convert import stages as st
    from videoseal_litert.convert.parts import make_part

    opts = _opts(a)
    part = make_part(opts, a.part or "extractor")
    calls = [lambda f=f: f(opts, part) for f in (st.stage_load, st.stage_export, st.stage_tflite, st.stage_verify)]
    _run_stages(a, opts, calls, ((part.name, "fp32"),))


def _quantize_calls(a: argparse.Namespace, opts: Any, part: Any, variants: tuple[str, ...] | None) -> list[Callable[[], Any]]:
    from videoseal_litert.quantize.quantize_stage import stage_quantize

    if part.name == "extractor":
        target = getattr(a, "target_agreement", None)
        if target is not None and not 0.0 <= target <= 1.0:
            raise UsageError(f"--target-agreement {target} is not a fraction in [0, 1]")
    else:
        target = getattr(a, "target_watermark_snr", None)
        if target is not None and target < 0:
            raise UsageError(f"--target-watermark-snr {target} is negative: give dB of INT8 error below the watermark, or 0 for off")
    return [lambda: stage_quantize(opts, part, a.calib, a.io == "int8", variants, target)]


def cmd_quantize(a: argparse.Namespace) -> None:
    from videoseal_litert.convert.parts import make_part
    from videoseal_litert.models.variants import default_variants, parse

    opts = _opts(a)
    part = make_part(opts, a.part or "extractor")
    variants = parse(a.variants, part.name)
    shown = variants if variants is not None else default_variants(opts.spec, part.name)
    _run_stages(a, opts, _quantize_calls(a, opts, part, variants), tuple((part.name, v) for v in shown), summarize=True)


def cmd_embedder(a: argparse.Namespace) -> None:
    """``make embedder``: the embedder part through the same stages as the extractor (load, tflite, verify, quantize)."""
    from videoseal_litert.convert import stages as st
    from videoseal_litert.convert.parts import make_part
    from videoseal_litert.models.variants import default_variants, parse

    opts = _opts(a)
    part = make_part(opts, "embedder")
    asked = parse(a.variants, part.name)
    quantized = tuple(v for v in (asked if asked is not None else default_variants(opts.spec, part.name)) if v != "fp32")
    from videoseal_litert.quantize.quantize_stage import check_quantizable

    check_quantizable(part, quantized)  # before the FP32 conversion, not after it
    calls = [lambda f=f: f(opts, part) for f in (st.stage_load, st.stage_tflite, st.stage_verify)]
    if quantized:
        calls += _quantize_calls(a, opts, part, quantized)
    _run_stages(a, opts, calls, tuple((part.name, v) for v in ("fp32", *quantized)), summarize=True)


def cmd_bench(a: argparse.Namespace) -> None:
    """Every part of the model that has its fp32 file (``--part`` picks one when given explicitly)."""
    from videoseal_litert.convert.parts import make_part, parts_of
    from videoseal_litert.convert.stages import stage_bench

    opts = _opts(a)
    threads = tuple(int(t) for t in a.bench_threads.split(",")) if a.bench_threads else None
    parts = [make_part(opts, a.part)] if a.part else parts_of(opts)
    parts = [p for p in parts if (opts.model_dir / p.file("fp32")).exists()] or parts[:1]  # the first names what is missing
    _run_stages(a, opts, [lambda p=p: stage_bench(opts, p, a.runs, a.warmup, threads, a.allow_unverified) for p in parts], summarize=False)


def cmd_summary(a: argparse.Namespace) -> None:
    from videoseal_litert.convert.parts import make_part
    from videoseal_litert.convert.stages import artifact_summary
    from videoseal_litert.core.console import say
    from videoseal_litert.core.errors import VerificationError

    opts = _opts(a)
    part = make_part(opts, a.part or "extractor")
    table, ok = artifact_summary(
        opts.model_dir.path, tuple((part.name, v) for v in a.variant.split(",")), None, f"{part.name} {opts.spec.name}"
    )
    say(table + f"\nlogs: {opts.model_dir.path / 'logs'}")
    if not ok:
        raise VerificationError(f"{table.splitlines()[-1]} (see the table above)")


def cmd_package(a: argparse.Namespace) -> None:
    from videoseal_litert.core.console import say
    from videoseal_litert.models.variants import parse
    from videoseal_litert.package.bundle import build_bundle

    opts = _opts(a)
    emb = () if a.embedder_variants in ("none", "") else parse(a.embedder_variants, "embedder")

    def body(_: Path | None) -> None:
        from videoseal_litert.runtime.arm import CPU_MODELS

        arm = tuple(CPU_MODELS) if a.arm == "all" else tuple(c.strip() for c in a.arm.split(",")) if a.arm else ()
        summary = build_bundle(opts, parse(a.variants, "extractor"), a.dist, a.reverify, a.golden, emb, arm, a.allow_unverified)
        unverified = summary.unverified
        say(
            summary.table()
            + (
                f"\nPASSED, WITH UNVERIFIED FILES (--allow-unverified): {', '.join(unverified)}"
                if unverified
                else "\nPASSED: every file in the bundle passed its verification"
            )
        )

    _logged(opts.model_dir.path / "logs" / "package.log", body)


def cmd_demo(a: argparse.Namespace) -> None:
    from videoseal_litert.demo.watermark import run_demo

    _logged(
        a.out / "demo" / "logs" / "watermark.log",
        lambda _: run_demo(a.out, a.images, a.ckpt, a.threads, a.model, a.target_agreement),
    )


def cmd_evaluate(a: argparse.Namespace) -> None:
    from videoseal_litert.evaluate.evaluation import run_evaluate

    if a.command == "robustness":  # the preset: the attacks `make robustness` has always shown
        a.attacks, a.variants = a.attacks or "robustness", a.variants or ROBUSTNESS_VARIANTS
        a.eval_dir = a.eval_dir or a.out / a.model / "robustness"
    kw = _evaluate_kwargs(a)
    if a.command == "evaluate":
        kw |= {k: getattr(a, k) for k in ("videos", "video_attacks", "video_frames", "video_aggregation")}
    _logged(
        a.out / a.model / "logs" / f"{a.command}.log",
        lambda _: run_evaluate(a.model, a.out, engine=a.engine, eval_dir=a.eval_dir, force=a.force, **kw),
    )


def cmd_video(a: argparse.Namespace) -> None:
    from videoseal_litert.video.clips import DEFAULT_CLIP, clip_path
    from videoseal_litert.video.commands import default_output, run_video_attacks, run_video_detect, run_video_embed

    if a.max_frames is not None and a.max_frames < 1:
        raise UsageError(f"--max-frames {a.max_frames}: at least 1")
    common = dict(ckpt=a.ckpt, random_init=a.random_init, untrained=a.untrained, allow_unverified=a.allow_unverified, threads=a.threads)
    if a.action == "embed":
        src = a.input or clip_path(DEFAULT_CLIP)

        def body(_: Path | None) -> None:
            run_video_embed(
                a.model, a.out, src, a.output, a.embedder, a.message, a.seed, a.crf, a.max_frames, **common, force=a.force, strict=a.strict
            )

    else:
        src = a.input or default_output(a.out, Path(DEFAULT_CLIP))
        if a.input is None and not src.is_file():
            raise UsageError(f"no --input, and {src} (what `video embed` writes by default) does not exist: run `make video-embed` first")

        def body(_: Path | None) -> None:
            if a.action == "attack":
                run_video_attacks(a.model, a.out, src, a.variants, a.attacks, a.max_frames or 32, a.aggregation, a.report_dir, **common)
            else:
                run_video_detect(a.model, a.out, src, a.variants, a.message, a.aggregation, a.max_frames, a.report_dir, **common)

    _logged(a.out / "video" / "logs" / f"video-{a.action}.log", body)


def _evaluate_kwargs(a: argparse.Namespace) -> dict[str, Any]:
    """The options evaluate and evaluate-scale share (VIDEOSEAL_EVAL_KILL_ONCE: the fault tests' hook)."""
    keys = (
        "images",
        "attacks",
        "variants",
        "messages_per_image",
        "seed",
        "ray_address",
        "workers",
        "ckpt",
        "random_init",
        "untrained",
        "threads",
        "allow_unverified",
    )
    return {k: getattr(a, k) for k in keys}


def cmd_evaluate_scale(a: argparse.Namespace) -> None:
    from videoseal_litert.evaluate.scale import run_scale

    _logged(a.out / a.model / "logs" / "evaluate-scale.log", lambda _: run_scale(a.model, a.out, **_evaluate_kwargs(a)))


def cmd_train_tiny(a: argparse.Namespace) -> None:
    import json

    from videoseal_litert.demo.train_tiny import train

    if a.size % 32:
        raise UsageError(f"--size {a.size} is not a multiple of 32 (the tile and the extractor's stride)")
    record = train(a)
    print(json.dumps(record["heldout_metrics_256"]))


def cmd_train_fixture(a: argparse.Namespace) -> None:
    from videoseal_litert.core.console import say
    from videoseal_litert.demo.train_fixture import train

    r = train(a)
    m = r["heldout_metrics_256"]
    say(
        f"fixture: {r['steps']} steps in {r['train_seconds'] / 60:.0f} min; held-out bits {m['bit_accuracy']:.2%} "
        f"(JPEG 80 {m['bit_accuracy_jpeg80']:.2%}), PSNR {m['psnr_db']:.1f} dB; {a.export}"
    )


def cmd_bench_scale(a: argparse.Namespace) -> None:
    from videoseal_litert.convert.bench_scale import bench_scale

    bench_scale([m.strip() for m in a.models.split(",")], a.out, a.threads, a.runs, a.force, a.resume)


def cmd_kernel_bench(a: argparse.Namespace) -> None:
    from videoseal_litert.core.console import say
    from videoseal_litert.quantize.kernel_bench import kernel_bench

    def body(_: Path | None) -> None:
        r = kernel_bench(a.out, a.tokens, a.dim, a.runs)
        say(f"kernel-bench: {r['layer']} on {r['machine']}")
        for t, med in r["median_ms_by_threads"].items():
            say(f"  {t} thread(s): " + ", ".join(f"{k} {v}" for k, v in med.items()))
        say(f"report: {a.out / 'kernel_bench.json'}")

    a.out.mkdir(parents=True, exist_ok=True)
    _logged(a.out / "logs" / "kernel-bench.log", body)


def cmd_calib_sweep(a: argparse.Namespace) -> None:
    from videoseal_litert.convert.parts import make_part
    from videoseal_litert.core.console import say
    from videoseal_litert.quantize.calib_sweep import calib_sweep

    opts = _opts(a)
    part = make_part(opts, a.part or "extractor")

    def body(_: Path | None) -> None:
        r = calib_sweep(part, [int(c) for c in a.counts.split(",")])
        for row in r["rows"]:
            say(f"  {row['calibration_inputs']} inputs: {part.one_line(row)}")
        say(f"report: {opts.model_dir.path / (part.prefix + 'calib-sweep.md')}")

    _logged(opts.model_dir.path / "logs" / "calib-sweep.log", body)


def cmd_arm_check(a: argparse.Namespace) -> None:
    from videoseal_litert.convert.arm_check import arm_check
    from videoseal_litert.core.console import say
    from videoseal_litert.runtime.arm import CPU_MODELS

    opts = _opts(a)
    cpus = tuple(c.strip() for c in a.cpus.split(",")) if a.cpus else tuple(CPU_MODELS)
    files = tuple(v.strip().removesuffix(".tflite") for v in a.files.split(",")) if a.files else None

    def body(_: Path | None) -> None:
        from videoseal_litert.convert.arm_check import verdict_summary

        r = arm_check(opts, cpus, files, a.inputs, trace=a.trace, allow_unverified=a.allow_unverified)
        for entry in r["parts"].values():
            for file, per in entry["files"].items():
                for cpu, f in per.items():
                    diff = "exact as x86" if f["exact"] else f"max diff to x86 {f['max_abs_diff_to_x86']:.3g}"
                    say(f"  {file} on {cpu}: {diff}; against PyTorch {verdict_summary(f)}")
        unverified = [f"{u['file']} ({u['verification']})" for u in r["files_used"] if u["verification"] != "verified"]
        say(
            f"report: {opts.model_dir.path / 'arm64.md'}\n"
            + (
                f"PASSED, WITH UNVERIFIED FILES (--allow-unverified): {', '.join(unverified)}"
                if unverified
                else "PASSED: every file passes the rule on the emulated ARM64 CPUs"
            )
        )

    _logged(opts.model_dir.path / "logs" / "arm-check.log", body)


def cmd_op_cost(a: argparse.Namespace) -> None:
    from videoseal_litert.convert.parts import make_part
    from videoseal_litert.core.console import say
    from videoseal_litert.quantize.op_cost import op_cost

    opts = _opts(a)
    part = make_part(opts, a.part or "extractor")

    def body(_: Path | None) -> None:
        r = op_cost(part, runs=a.runs, candidates=a.ops.split(",") if a.ops else None)
        for t, block in r["removal"].items():
            say(
                f"  {t} thread(s): int8 {block['int8_ratio_to_fp32']:.3f}x FP32; "
                + ", ".join(f"{g['group'].split(' (')[0]} {g['fp32_share']:.0%}" for g in block["groups"])
                + " of FP32"
            )
        for x in r["candidates"]["rows"]:
            say(
                f"  {x['variant']}: metric {x['metric']:.4f}, {x['latency_ratio_to_fp32']:.3f}x FP32, {x['not_delegated']} ops not delegated"
            )
        say(f"report: {opts.model_dir.path / (part.prefix + 'op-cost.md')}")

    _logged(opts.model_dir.path / "logs" / "op-cost.log", body)


def _bundle_of(a: argparse.Namespace) -> tuple[str, Path]:
    from videoseal_litert.core.errors import ArtifactMissingError
    from videoseal_litert.models.registry import resolve

    name = resolve(a.model).name
    bundle = a.dist / name
    if not (bundle / "model.json").is_file():
        raise ArtifactMissingError(f"no bundle in {bundle}: run `make package MODEL={a.model}` first (after convert, quantize, embedder)")
    return name, bundle


def cmd_web(a: argparse.Namespace) -> None:
    from videoseal_litert.core.console import say
    from videoseal_litert.web.browsers import ensure_node_modules
    from videoseal_litert.web.serve import server

    _, bundle = _bundle_of(a)
    ensure_node_modules()
    srv = server(bundle, port=a.port, host=a.host)
    host, port = srv.server_address[:2]
    say(f"serving {bundle} at http://{host}:{port}/  (Ctrl-C stops; cross-origin isolated, so LiteRT.js may use threads)")
    try:
        srv.serve_forever()
    finally:
        srv.server_close()


def cmd_web_setup(a: argparse.Namespace) -> None:
    from videoseal_litert.core.console import say, working
    from videoseal_litert.web.browsers import ensure_browsers, ensure_node_modules, versions

    with working("LiteRT.js and puppeteer-core (npm ci in web/), headless Chromium and Firefox ESR (Debian packages)"):
        ensure_node_modules()
        found = ensure_browsers()
    v = versions()
    say(
        "web set-up: "
        + ", ".join(f"{n} {b.executable}" for n, b in found.items())
        + (f" ({', '.join(f'{k} {x}' for k, x in v.items())})" if v else "")
    )


def cmd_web_check(a: argparse.Namespace) -> None:
    from videoseal_litert.calibration_data import pool
    from videoseal_litert.core.console import say
    from videoseal_litert.web.check import web_check

    name, bundle = _bundle_of(a)
    if a.photo is None:  # the smallest evaluation photo of the pool: not 256 x 256, so the page's route runs
        entry = min(pool.photos("evaluation"), key=lambda p: p["size"][0] * p["size"][1])
        a.photo = pool.pool_dir() / entry["name"]
    if not a.photo.is_file():
        raise UsageError(f"--photo {a.photo} does not exist")
    report_dir = a.out / name

    def body(_: Path | None) -> None:
        r = web_check(
            bundle, report_dir, report_dir, a.photo, tuple(b.strip() for b in a.browsers.split(",") if b.strip()), a.allow_unverified
        )
        for b, e in r["browsers"].items():
            runs = [
                f"{k}: {len(x['extractor']) + len(x['embedder'])} files"
                + (
                    ""
                    if not any(f.get("fell_back") for f in [*x["extractor"].values(), *x["embedder"].values()])
                    else " (some fell back to WASM)"
                )
                if "no_adapter" not in x
                else f"{k}: no adapter"
                for k, x in e["backends"].items()
            ]
            say(
                f"  {b} {e['version']}: {'; '.join(runs)}, each by the rule against PyTorch; the page embedded, downloaded and "
                f"detected ({e['seconds']} s)"
            )
        say(f"report: {report_dir / 'web-check.md'}\nPASSED: the bundle's files and the page work in {', '.join(r['browsers'])}")

    report_dir.mkdir(parents=True, exist_ok=True)
    _logged(report_dir / "logs" / "web-check.log", body)


def cmd_calibration_manifest(a: argparse.Namespace) -> None:
    from videoseal_litert.calibration_data.build import write_manifest

    write_manifest()


def cmd_photos(a: argparse.Namespace) -> None:
    from collections import Counter

    from videoseal_litert.calibration_data import pool
    from videoseal_litert.core.console import say

    dest = pool.install()
    n = Counter(p["split"] for p in pool.photos())
    say(f"photo pool: {sum(n.values())} photos in {dest} (" + ", ".join(f"{k} {n[k]}" for k in pool.SPLITS) + "), each checked by sha256")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--debug" in argv:
        argv.remove("--debug")
        os.environ[DEBUG_ENV] = "1"
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    parser = build_parser()
    if not argv or argv[0] in ("-h", "--help", "help"):
        parser.print_help()
        return 0

    def body() -> None:
        try:
            a = parser.parse_args(argv)
        except SystemExit as e:  # --help of a command
            if e.code in (0, None):
                return
            raise
        if not hasattr(a, "part"):
            a.part = None
        a.argv = argv[1:]  # as typed, for records that name the command (train-tiny)
        if hasattr(a, "threads"):  # --threads holds for PyTorch as for the interpreter
            import torch

            torch.set_num_threads(a.threads)
        handler = COMMANDS[a.command][3]
        globals()[f"cmd_{handler}"](a)

    import atexit

    from videoseal_litert.core.console import exit_to_log

    atexit.register(exit_to_log)  # at shutdown, after every line of ours: native code's last words go to the log
    return run_main(body)


if __name__ == "__main__":
    raise SystemExit(main())
