"""``python -m demo [watermark|robustness] [--model-dir models/tiny] [--out artifacts]``."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from models.errors import PipelineError

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "models" / "tiny"


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    p = argparse.ArgumentParser(prog="python -m demo")
    p.add_argument("what", nargs="?", choices=("watermark", "robustness"), default="watermark")
    p.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR, help="embedder + extractor + card (models/train_tiny.py --export)")
    p.add_argument("--out", type=Path, default=Path("artifacts"))
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args(argv)
    from demo.watermark import run_demo, run_robustness

    if not (a.model_dir / "embedder.safetensors").exists():
        print(f"error: no trained pair in {a.model_dir}: run `python -m models.train_tiny --export {a.model_dir}` first", file=sys.stderr)
        return 2
    try:
        (run_demo if a.what == "watermark" else run_robustness)(a.model_dir, a.out, a.threads)
    except PipelineError as e:
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
