"""Command line: ``videoseal-litert <stage> --model M [--ckpt P] [--random-init] [--out DIR]``.

A thin layer over ``convert.stages``; the Makefile calls one stage per process, so each stage's
peak RSS is its own. Named pipeline errors print one message and exit 2, without a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from videoseal_litert.convert.console import artifact_summary, captured, say
from videoseal_litert.models.errors import VerificationError, run_main
from videoseal_litert.models.registry import resolve

log = logging.getLogger("convert")

STAGES = ("load", "inspect", "export", "tflite", "verify", "convert", "bench", "summary", "embedder")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="videoseal-litert", description=__doc__)
    p.add_argument("stage", choices=STAGES)
    p.add_argument(
        "--model", required=True, help="registry name (videoseal, pixelseal, chunkyseal, videoseal_0.0, tiny) or path to a card YAML"
    )
    p.add_argument("--ckpt", type=Path, default=None, help="checkpoint (.pth official or bare state dict, or .safetensors)")
    p.add_argument("--random-init", action="store_true", help="seeded random weights; every artifact records random_init: true")
    p.add_argument("--allow-zero-weights", action="store_true", help="go on although a conv/linear weight is entirely zero")
    p.add_argument(
        "--allow-nonfinite-weights", action="store_true", help="go on although a tensor holds NaN or infinity (outputs will be NaN)"
    )
    p.add_argument("--out", type=Path, default=Path("artifacts"))
    p.add_argument("--images", type=Path, default=None, help="directory of images to verify on (default: held-out photos)")
    p.add_argument("--variant", default="fp32", help="variant to verify (fp32, int8, ...)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--embedder-variants", default=None, help="embedder: variants to write, e.g. fp32,int8 (default: the model's)")
    p.add_argument("--runs", type=int, default=20, help="bench: timed rounds per variant")
    p.add_argument("--warmup", type=int, default=3, help="bench: untimed runs first")
    p.add_argument("--bench-threads", default=None, help="bench: thread counts, e.g. 2 (default: 1 and --threads)")
    p.add_argument("--force", action="store_true", help="rerun even if the stage is up to date")
    p.add_argument("--brief", action="store_true", help="one line per stage instead of its table (make convert ends with `summary`)")
    return p.parse_args(argv)


def _embedder(opts, spec: str | None):
    from videoseal_litert.convert.embedder import EMBEDDER_VARIANTS, stage_embedder
    from videoseal_litert.models.errors import UsageError

    variants = opts.spec.embedder_variants if spec is None else tuple(v for v in spec.split(",") if v)
    if "fp32" not in variants or any(v not in EMBEDDER_VARIANTS for v in variants):
        raise UsageError(f"embedder variants {spec!r}: choose from {', '.join(EMBEDDER_VARIANTS)}, fp32 always included")
    return stage_embedder(opts, tuple(v for v in EMBEDDER_VARIANTS if v in variants))


def _threads(spec: str | None) -> tuple[int, ...] | None:
    return tuple(int(t) for t in spec.split(",")) if spec else None


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    args = parse_args(argv)

    def body() -> None:
        from videoseal_litert.convert import stages as st

        opts = st.RunOptions(
            spec=resolve(args.model),
            out=args.out,
            ckpt=args.ckpt,
            random_init=args.random_init,
            allow_zero_weights=args.allow_zero_weights,
            allow_nonfinite_weights=args.allow_nonfinite_weights,
            images=args.images,
            threads=args.threads,
            force=args.force,
        )
        run = {
            "load": [st.stage_load],
            "inspect": [st.stage_inspect],
            "export": [st.stage_export],
            "tflite": [st.stage_tflite],
            "verify": [lambda o: st.stage_verify(o, args.variant)],
            "bench": [lambda o: st.stage_bench(o, args.runs, args.warmup, _threads(args.bench_threads))],
            "convert": [st.stage_load, st.stage_export, st.stage_tflite, st.stage_verify],
            "summary": [],
            "embedder": [lambda o: _embedder(o, args.embedder_variants)],
        }[args.stage]
        if args.stage == "summary":  # the artifacts' one table, from the files the stages wrote
            table, ok = artifact_summary(opts.model_dir.path, tuple(args.variant.split(",")), None, opts.spec.name)
            say(table + f"\nlogs: {opts.model_dir.path / 'logs'}")
            if not ok:
                raise VerificationError(f"{table.splitlines()[-1]} (see the table above)")
            return

        t0 = time.time()
        with captured(opts.model_dir.path / "logs" / f"{args.stage}.log") as log_path:
            for fn in run:
                table = fn(opts).table()
                # One stage: its table is the summary (its first line with --brief). Several: the tables
                # go to the log and one summary to the terminal.
                if len(run) == 1:
                    say(table.split("\n", 1)[0] if args.brief else table)
                else:
                    log.info("%s", table)
            if len(run) > 1:
                summary, _ = artifact_summary(opts.model_dir.path, ("fp32",), time.time() - t0, f"{args.stage} {opts.spec.name}")
                say(summary + (f"\nlog: {log_path}" if log_path else ""))

    return run_main(body)
