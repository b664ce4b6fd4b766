"""``python -m demo [watermark|robustness] [--images DIR] [--ckpt PATH] [--out artifacts]``: the tiny pair's demo."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from videoseal_litert.convert.console import captured
from videoseal_litert.models.errors import run_main


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    p = argparse.ArgumentParser(prog="python -m demo", description=__doc__)
    p.add_argument("what", nargs="?", choices=("watermark", "robustness"), default="watermark")
    p.add_argument("--images", type=Path, default=None, help="your photos, any size (default: the held-out photos)")
    p.add_argument("--ckpt", type=Path, default=None, help="a retrained pair (default: models/tiny/checkpoint.safetensors)")
    p.add_argument("--out", type=Path, default=Path("artifacts"))
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args(argv)
    from videoseal_litert.demo.watermark import run_demo, run_robustness

    def body() -> None:
        with captured(a.out / "demo" / "logs" / f"{a.what}.log"):
            (run_demo if a.what == "watermark" else run_robustness)(a.out, a.images, a.ckpt, a.threads)

    return run_main(body)


if __name__ == "__main__":
    raise SystemExit(main())
