"""Embed a watermark with a converted embedder, without torch (numpy + the LiteRT interpreter).

    python run_embedder.py embedder-int8.tflite photo.png --bits 0101... --out marked.png
    python run_embedder.py --selftest          # the bundle's embedder golden vectors; exit 1 on a mismatch

At the file's processing size (256 x 256) the file's ``watermarked`` output is the whole official
embed path. For any other size this follows the official route (``model.json`` ``embedder.route``):
resize the image to 256 x 256 (bilinear, antialias), run the file, resize its ``residual`` output
back to the image's size (same interpolation), multiply by the JND heatmap of the full-size image
when the model has JND, blend ``clamp(scaling_i * image + scaling_w * residual, 0, 1)``.

The antialiased bilinear resize and the JND heatmap are written here in numpy: they are what
torch's ``F.interpolate(..., antialias=True)`` and the official ``JND.heatmaps`` compute (the tests
compare them), and Android code can follow the same few lines.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def _aa_weights(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights of torch's antialiased bilinear resize (align_corners=False) along one axis:
    a triangle filter widened by the scale when shrinking, truncated at the borders and normalised."""
    scale = n_in / n_out
    support = max(scale, 1.0)
    w = np.zeros((n_out, n_in), np.float64)
    for i in range(n_out):
        center = scale * (i + 0.5)
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), n_in)
        j = np.arange(lo, hi)
        f = np.clip(1.0 - np.abs((j - center + 0.5) / support), 0.0, None)
        if f.sum() > 0:
            w[i, lo:hi] = f / f.sum()
    return w.astype(np.float32)


def resize_aa(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """(H, W, C) float32 -> (height, width, C): bilinear, align_corners=False, antialias=True."""
    h, w = img.shape[:2]
    if (h, w) == (height, width):
        return img.astype(np.float32)
    wh, ww = _aa_weights(h, height), _aa_weights(w, width)
    return np.einsum("ih,hwc,jw->ijc", wh, img.astype(np.float32), ww, optimize=True).astype(np.float32)


def _filter(x: np.ndarray, k: np.ndarray) -> np.ndarray:
    """2-D cross-correlation of (H, W) with a small kernel, zero padding (Conv2d padding=k//2)."""
    r = k.shape[0] // 2
    p = np.pad(x, r)
    out = np.zeros_like(x)
    for dy in range(k.shape[0]):
        for dx in range(k.shape[1]):
            if k[dy, dx]:
                out += k[dy, dx] * p[dy : dy + x.shape[0], dx : dx + x.shape[1]]
    return out


KX = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], np.float32)
KY = np.array([[1, 2, 1], [0, 0, 0], [-1, -2, -1]], np.float32)
KLUM = np.array([[1, 1, 1, 1, 1], [1, 2, 2, 2, 1], [1, 2, 0, 2, 1], [1, 2, 2, 2, 1], [1, 1, 1, 1, 1]], np.float32)


def jnd_heatmap(img: np.ndarray, clc: float = 0.3) -> np.ndarray:
    """The official ``jnd_1_1`` heatmap of an (H, W, 3) image in [0, 1]: (H, W, 1)."""
    x = 255 * (0.299 * img[..., 0] + 0.587 * img[..., 1] + 0.114 * img[..., 2]).astype(np.float32)
    la = _filter(x, KLUM) / 32
    la = np.where(la <= 127, 17 * (1 - np.sqrt(np.maximum(la, 0) / 127 + 1e-5)), 3 / 128 * (la - 127) + 3)
    cm = np.sqrt(_filter(x, KX) ** 2 + _filter(x, KY) ** 2)
    cm = 0.117 * (16 * cm**2.4 / (cm**2 + 26**2))
    h = np.maximum(la + cm - clc * np.minimum(la, cm), 0)
    return (h / 255).astype(np.float32)[..., None]


class Embedder:
    """One interpreter; ``embed(image (H, W, 3) float in [0, 1], bits (nbits,) of 0/1) -> watermarked (H, W, 3)``."""

    def __init__(self, tflite: str | Path, route: dict, num_threads: int = 2) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.it = Interpreter(model_path=str(tflite), num_threads=num_threads)
        self.it.allocate_tensors()
        runner = self.it.get_signature_runner()
        self.runner = runner
        ins = runner.get_input_details()
        self.size = int(ins["image"]["shape"][1])
        self.nbits = int(ins["message"]["shape"][1])
        self.route = route

    def run(self, image: np.ndarray, bits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The file at its own size: (watermarked, residual), (S, S, 3) and (S, S, C)."""
        out = self.runner(image=image[None].astype(np.float32), message=np.asarray(bits, np.float32).reshape(1, -1))
        return out["watermarked"][0], out["residual"][0]

    def embed(self, image: np.ndarray, bits: np.ndarray) -> np.ndarray:
        bits = np.asarray(bits)
        if bits.shape != (self.nbits,) or not np.isin(bits, (0, 1)).all():
            raise ValueError(f"the message must be {self.nbits} bits of 0/1, got shape {bits.shape}")
        h, w = image.shape[:2]
        s = self.size
        if (h, w) == (s, s):
            return self.run(image, bits)[0]
        _, res = self.run(resize_aa(image, s, s), bits)
        res = resize_aa(res, h, w)
        if self.route.get("attenuation"):
            res = jnd_heatmap(image) * res
        return np.clip(self.route["scaling_i"] * image + self.route["scaling_w"] * res, 0, 1).astype(np.float32)


HERE = Path(__file__).resolve().parent


def selftest(bundle: Path = HERE) -> int:
    """Every embedder golden vector: the cover PNG and message through each file, against the stored output."""
    from PIL import Image

    route = json.loads((bundle / "model.json").read_text())["embedder"]["route"]
    golden = json.loads((bundle / "golden" / "embedder" / "golden.json").read_text())
    failures = 0
    for variant, g in golden["variants"].items():
        emb = Embedder(bundle / g["file"], route)
        for v in g["vectors"]:
            img = np.asarray(Image.open(bundle / "golden" / v["image"]).convert("RGB"), np.float32) / 255
            got = emb.embed(img, np.array([int(c) for c in v["message"]]))
            diff = float(np.abs(got - np.load(bundle / v["watermarked"])).max())
            ok = diff <= g["atol"]
            failures += not ok
            print(f"{'ok  ' if ok else 'FAIL'} {variant} {v['image']}: max abs diff {diff:.2g} (tolerance {g['atol']:g})")
    print("selftest: " + ("all embedder golden vectors match" if not failures else f"{failures} mismatch(es)"))
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    from PIL import Image

    if argv is None:
        argv = sys.argv[1:]
    if argv == ["--selftest"]:
        return selftest()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("tflite")
    ap.add_argument("image")
    ap.add_argument("--bits", required=True, help="the message as a string of 0 and 1")
    ap.add_argument("--out", required=True, help="where to write the watermarked PNG")
    ap.add_argument("--model-json", default=None, help="the bundle's model.json (default: beside the .tflite)")
    a = ap.parse_args(argv)
    desc = Path(a.model_json) if a.model_json else Path(a.tflite).parent / "model.json"
    route = json.loads(desc.read_text())["embedder"]["route"]
    emb = Embedder(a.tflite, route)
    bits = np.array([int(c) for c in a.bits.strip()], np.int64)
    img = np.asarray(Image.open(a.image).convert("RGB"), np.float32) / 255
    out = emb.embed(img, bits)
    Image.fromarray(np.round(out * 255).astype(np.uint8)).save(a.out)
    print(f"wrote {a.out} ({out.shape[1]}x{out.shape[0]}, {len(bits)} bits)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
