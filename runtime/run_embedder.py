"""Embed a watermark with a converted embedder, without torch. Needs ai-edge-litert, numpy, pillow, litert_runner.py and route.py.

    python run_embedder.py embedder-int8.tflite photo.png --bits 0101... --out marked.png
    python run_embedder.py --selftest          # the bundle's embedder golden vectors; exit 1 on a mismatch
    python run_embedder.py --selftest --native ./litert_run    # the same through the LiteRT C library

Any image size: at the file's processing size its ``watermarked`` output is the whole official embed
path; other sizes follow the official route (``route.py``, steps in ``model.json`` ``embedder.route``).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import numpy as np

try:  # inside the videoseal_litert package
    from .litert_runner import open_file
    from .route import embed
except ImportError:  # a bundle: these ship beside this script
    from litert_runner import open_file
    from route import embed


class Embedder:
    """One interpreter; ``embed(image (H, W, 3) float in [0, 1], bits (nbits,) of 0/1) -> watermarked (H, W, 3)``."""

    def __init__(self, tflite: str | Path, route: dict, num_threads: int = 2, native: list[str] | None = None) -> None:
        self.runner = open_file(tflite, num_threads, native)
        self.size = self.runner.input_shapes["image"][1]
        self.nbits = self.runner.input_shapes["message"][1]
        self.route = route

    def embed(self, image: np.ndarray, bits: np.ndarray) -> np.ndarray:
        bits = np.asarray(bits)
        if bits.shape != (self.nbits,) or not np.isin(bits, (0, 1)).all():
            raise ValueError(f"the message must be {self.nbits} bits of 0/1, got shape {bits.shape}")
        return embed(self.runner, self.route, self.size, image, bits)


HERE = Path(__file__).resolve().parent


def selftest(bundle: Path = HERE, native: list[str] | None = None) -> int:
    """Every embedder golden vector: the cover PNG and message through each file (through the C library
    with ``native``, the command that starts ``litert_run``), against the stored output."""
    from PIL import Image

    route = json.loads((bundle / "model.json").read_text())["embedder"]["route"]
    golden = json.loads((bundle / "golden" / "embedder" / "golden.json").read_text())
    failures = 0
    for variant, g in golden["variants"].items():
        emb = Embedder(bundle / g["file"], route, native=native)
        for v in g["vectors"]:
            img = np.asarray(Image.open(bundle / "golden" / v["image"]).convert("RGB"), np.float32) / 255
            got = emb.embed(img, np.array([int(c) for c in v["message"]]))
            diff = float(np.abs(got - np.load(bundle / v["watermarked"])).max())
            ok = diff <= g["atol"]
            failures += not ok
            print(f"{'ok  ' if ok else 'FAIL'} {variant} {v['image']}: max abs diff {diff:.2g} (tolerance {g['atol']:g})")
    runner = f" (native: {' '.join(native)})" if native else ""
    print(f"selftest{runner}: " + ("all embedder golden vectors match" if not failures else f"{failures} mismatch(es)"))
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    from PIL import Image

    if argv is None:
        argv = sys.argv[1:]
    if argv and argv[0] == "--selftest" and (len(argv) == 1 or (len(argv) == 3 and argv[1] == "--native")):
        return selftest(native=shlex.split(argv[2]) if len(argv) == 3 else None)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("tflite")
    ap.add_argument("image")
    ap.add_argument("--bits", required=True, help="the message as a string of 0 and 1")
    ap.add_argument("--out", required=True, help="where to write the watermarked PNG")
    ap.add_argument("--model-json", default=None, help="the bundle's model.json (default: beside the .tflite)")
    ap.add_argument("--native", metavar="CMD", help="run through the LiteRT C library: the command that starts litert_run")
    a = ap.parse_args(argv)
    desc = Path(a.model_json) if a.model_json else Path(a.tflite).parent / "model.json"
    emb = Embedder(a.tflite, json.loads(desc.read_text())["embedder"]["route"], native=shlex.split(a.native) if a.native else None)
    bits = np.array([int(c) for c in a.bits.strip()], np.int64)
    img = np.asarray(Image.open(a.image).convert("RGB"), np.float32) / 255
    out = emb.embed(img, bits)
    Image.fromarray(np.round(out * 255).astype(np.uint8)).save(a.out)
    print(f"wrote {a.out} ({out.shape[1]}x{out.shape[0]}, {len(bits)} bits)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
