"""``python -m package --model M [--variants int8,fp16,fp32] [--dist dist] [--reverify]``: build a bundle."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from videoseal_litert.convert.console import captured, say
from videoseal_litert.models.errors import run_main
from videoseal_litert.models.registry import resolve


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    p = argparse.ArgumentParser(prog="python -m package")
    p.add_argument("--model", required=True)
    p.add_argument("--ckpt", type=Path)
    p.add_argument("--random-init", action="store_true")
    p.add_argument("--out", type=Path, default=Path("artifacts"), help="where make convert / quantize wrote the artifacts")
    p.add_argument("--dist", type=Path, default=Path("dist"))
    p.add_argument("--variants", default="int8,fp16,fp32")
    p.add_argument("--reverify", action="store_true", help="re-verify a variant whose file changed since verification")
    p.add_argument("--golden", type=int, default=3, help="number of golden images")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--embedder-variants", default=None, help="embedder files to ship (default: every verified one of make embedder; 'none' for none)"
    )
    a = p.parse_args(argv)
    from videoseal_litert.convert.stages import RunOptions
    from videoseal_litert.package.bundle import build_bundle

    def body() -> None:
        opts = RunOptions(spec=resolve(a.model), out=a.out, ckpt=a.ckpt, random_init=a.random_init, threads=a.threads)
        variants = tuple(v.strip() for v in a.variants.split(",") if v.strip())
        emb = (
            None
            if a.embedder_variants is None
            else tuple(v.strip() for v in a.embedder_variants.split(",") if v.strip() and v.strip() != "none")
        )
        with captured(opts.model_dir.path / "logs" / "package.log"):
            say(
                build_bundle(opts, variants, a.dist, a.reverify, a.golden, emb).table()
                + "\nPASSED: every file in the bundle passed its verification"
            )

    return run_main(body)


if __name__ == "__main__":
    raise SystemExit(main())
