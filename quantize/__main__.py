"""``python -m quantize --model M [--calib DIR] [--io int8]``: the quantize stage from the command line."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from videoseal_litert.convert.console import artifact_summary, captured, say
from videoseal_litert.models.errors import run_main
from videoseal_litert.models.registry import resolve


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    p = argparse.ArgumentParser(prog="python -m quantize")
    p.add_argument("--model", required=True)
    p.add_argument("--ckpt", type=Path)
    p.add_argument("--random-init", action="store_true")
    p.add_argument("--out", type=Path, default=Path("artifacts"))
    p.add_argument("--images", type=Path, help="held-out images to verify on (never calibration images)")
    p.add_argument("--calib", type=Path, help="extra calibration images (added to the built-in set)")
    p.add_argument("--io", choices=("float", "int8"), default="float", help="int8: int8.tflite takes and returns int8")
    p.add_argument("--variants", default=None, help="comma-separated (default: the model spec's, all four for the small models)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--force", action="store_true")
    a = p.parse_args(argv)
    from videoseal_litert.convert.stages import RunOptions
    from videoseal_litert.quantize.stage import stage_quantize

    def body() -> None:
        opts = RunOptions(
            spec=resolve(a.model), out=a.out, ckpt=a.ckpt, random_init=a.random_init, images=a.images, threads=a.threads, force=a.force
        )
        variants = tuple(v.strip() for v in a.variants.split(",")) if a.variants else opts.spec.quantize_variants
        t0 = time.time()
        with captured(opts.model_dir.path / "logs" / "quantize.log") as log_path:
            table = stage_quantize(opts, a.calib, a.io == "int8", variants).table()
            logging.getLogger(__name__).info("%s", table)
            # Title: the stage's own first line ("quantize <model>: done" or "...: up to date, skipped").
            summary, _ = artifact_summary(opts.model_dir.path, variants, time.time() - t0, table.split("\n", 1)[0])
            say(summary + (f"\nlog: {log_path}" if log_path else ""))

    return run_main(body)


if __name__ == "__main__":
    raise SystemExit(main())
