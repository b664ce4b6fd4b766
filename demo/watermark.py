"""Embed real watermarks with a model that has an embedder, decode them with PyTorch, FP32 and INT8.

``python -m demo [--model-dir models/tiny] [--out artifacts]`` (``make demo-watermark``):

1. watermarks the held-out photos (never seen in training or calibration) with seeded random
   messages using the PyTorch embedder, and stores them as 8-bit PNGs (what an app would see);
2. converts and quantizes the extractor with the pipeline's own stages (skipped when current);
3. decodes the PNGs with PyTorch, ``fp32.tflite`` and ``int8.tflite``;
4. checks false positives: unwatermarked photos decoded against the same messages, with the
   binomial p-value of the number of matching bits (as the official evaluation computes it);
5. writes ``demo/demo.json`` and ``demo/demo.md`` and prints one summary table.

``python -m demo robustness`` decodes the same images after JPEG 50/80, resize 0.5, centre crop 0.5,
brightness 1.5 and Gaussian blur, and writes ``robustness.{json,md,png}``.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from convert.artifacts import machine_description, write_json, write_text
from convert.runtime import TFLiteExtractor


@dataclass
class Pair:
    embedder: torch.nn.Module
    extractor: torch.nn.Module
    card: Path
    record: dict[str, Any]


def load_pair(model_dir: Path) -> Pair:
    """The trained embedder and extractor from ``model_dir`` (safetensors, loaded strictly)."""
    import json

    from safetensors.torch import load_file

    from convert.load import load_extractor
    from models.registry import resolve
    from models.train_tiny import TinyEmbedder

    card = model_dir / "tiny.yaml"
    loaded = load_extractor(resolve(str(card)))
    emb = TinyEmbedder(loaded.config.nbits)
    emb.load_state_dict(load_file(str(model_dir / "embedder.safetensors")), strict=True)
    rec_path = model_dir / "training_record.json"
    record = json.loads(rec_path.read_text()) if rec_path.exists() else {}
    return Pair(emb.eval(), loaded.module.eval(), card, record)


def binomial_pvalue(matches: int, n: int) -> float:
    """P(X >= matches) for X ~ Binomial(n, 1/2): the chance an unwatermarked image matches this well."""
    return float(sum(math.comb(n, k) for k in range(matches, n + 1)) / 2**n)


def to_png_pixels(x: torch.Tensor) -> np.ndarray:
    """(1, 3, H, W) float -> what an 8-bit PNG round trip gives back, as (1, H, W, 3) float32."""
    u8 = (x[0].permute(1, 2, 0).clamp(0, 1).numpy() * 255.0).round().astype(np.uint8)
    return (u8.astype(np.float32) / 255.0)[None]


def jpeg_np(x: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray((x[0] * 255).round().astype(np.uint8)).save(buf, format="JPEG", quality=quality)
    return (np.asarray(Image.open(buf), dtype=np.float32) / 255.0)[None]


def _torch_aug(fn):
    def apply(x: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(x).permute(0, 3, 1, 2)
        with torch.no_grad():
            return to_png_pixels(fn(t))

    return apply


def augmentations() -> dict[str, Any]:
    from models.train_tiny import center_crop, gaussian_blur, resize

    return {
        "identity": lambda x: x,
        "jpeg_80": lambda x: jpeg_np(x, 80),
        "jpeg_50": lambda x: jpeg_np(x, 50),
        "resize_0.5": _torch_aug(lambda t: resize(t, 0.5)),
        "crop_0.5": _torch_aug(lambda t: center_crop(t, 0.5)),
        "brightness_1.5": _torch_aug(lambda t: (t * 1.5).clamp(0, 1)),
        "blur_sigma1": _torch_aug(lambda t: gaussian_blur(t, 1.0)),
    }


def watermark_heldout(pair: Pair, size: int, seed: int = 0) -> tuple[list[str], list[np.ndarray], list[np.ndarray], np.ndarray]:
    """Held-out photos (full views), their watermarked PNG versions and the random messages."""
    from calibration_data.build import heldout_items
    from models.train_tiny import blend

    items = [i for i in heldout_items(None, size) if i.name.endswith(":full")]
    gen = torch.Generator().manual_seed(seed)
    nbits = pair.embedder.nbits
    msgs = torch.randint(0, 2, (len(items), nbits), generator=gen)
    names, clean, marked = [], [], []
    with torch.no_grad():
        for it, m in zip(items, msgs, strict=True):
            x = torch.from_numpy(it.pixels)
            xw = blend(x, pair.embedder(x, m[None]))
            names.append(it.name)
            clean.append(to_png_pixels(x))
            marked.append(to_png_pixels(xw))
    return names, clean, marked, msgs.numpy().astype(bool)


def decode_all(pair: Pair, fp32: Path, int8: Path, images: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Bit logits (N, nbits) from PyTorch, FP32 and INT8 TFLite."""
    out: dict[str, list[np.ndarray]] = {"pytorch": [], "fp32": [], "int8": []}
    runners = {"fp32": TFLiteExtractor(fp32), "int8": TFLiteExtractor(int8)}
    for x in images:
        with torch.no_grad():
            out["pytorch"].append(pair.extractor(torch.from_numpy(x).permute(0, 3, 1, 2))[0, 1:].numpy())
        for k, r in runners.items():
            out[k].append(r(x)[1].reshape(-1))
    return {k: np.stack(v) for k, v in out.items()}


def run_demo(model_dir: Path, out: Path, threads: int = 2, calibration_images: int | None = None) -> dict[str, Any]:
    import dataclasses

    from convert.stages import RunOptions, stage_load, stage_tflite, stage_verify
    from models.registry import resolve
    from quantize.stage import stage_quantize

    pair = load_pair(model_dir)
    spec = dataclasses.replace(resolve(str(pair.card)), calibration_images=calibration_images)
    opts = RunOptions(spec=spec, out=out, threads=threads)
    tables = [stage_load(opts), stage_tflite(opts), stage_verify(opts, "fp32"), stage_quantize(opts, variants=("int8",))]
    md = opts.model_dir.path
    size = spec.card.config.img_size
    names, clean, marked, msgs = watermark_heldout(pair, size)
    logits = decode_all(pair, md / "fp32.tflite", md / "int8.tflite", marked)
    clean_logits = decode_all(pair, md / "fp32.tflite", md / "int8.tflite", clean)
    n = msgs.shape[1]
    acc = {k: float(np.mean((v > 0) == msgs)) for k, v in logits.items()}
    psnrs = [10 * math.log10(1.0 / max(float(np.mean((a - b) ** 2)), 1e-12)) for a, b in zip(clean, marked, strict=True)]
    fp = {}
    for k, v in clean_logits.items():
        pv = [binomial_pvalue(int(np.sum((row > 0) == m)), n) for row, m in zip(v, msgs, strict=True)]
        fp[k] = {"min_pvalue": min(pv), "detections_at_1e-3": int(sum(p < 1e-3 for p in pv))}
    marked_pv = [binomial_pvalue(int(np.sum((row > 0) == m)), n) for row, m in zip(logits["int8"], msgs, strict=True)]
    report = {
        "model_dir": str(model_dir),
        "training": pair.record,
        "num_images": len(names),
        "images": names,
        "nbits": n,
        "psnr_db_mean": float(np.mean(psnrs)),
        "pytorch_bit_accuracy": acc["pytorch"],
        "fp32_bit_accuracy": acc["fp32"],
        "int8_bit_accuracy": acc["int8"],
        "int8_bit_agreement_with_pytorch": float(np.mean((logits["int8"] > 0) == (logits["pytorch"] > 0))),
        "fp32_bit_agreement_with_pytorch": float(np.mean((logits["fp32"] > 0) == (logits["pytorch"] > 0))),
        "watermarked_int8_median_pvalue": float(np.median(marked_pv)),
        "false_positive_check_unwatermarked": fp,
        "machine": machine_description(),
        "note": "test and demo fixture for the conversion pipeline, not a production watermarker",
    }
    dd = out / "demo"
    write_json(dd / "demo.json", report)
    write_text(dd / "demo.md", render(report))
    for t in tables:
        print(t.table())
    print(render(report))
    return report


def render(r: dict[str, Any]) -> str:
    steps = r["training"].get("steps", "?")
    lines = [
        "# Watermark demo",
        "",
        f"{r['num_images']} held-out photos, {r['nbits']}-bit random messages, embedded by the PyTorch embedder "
        f"(model trained {steps} steps; {r['note']}); mean PSNR {r['psnr_db_mean']:.1f} dB. Machine: {r['machine']}.",
        "",
        "| decoder | bit accuracy vs true messages | agreement with PyTorch |",
        "|---|---|---|",
        f"| PyTorch | {r['pytorch_bit_accuracy']:.2%} | - |",
        f"| FP32 TFLite | {r['fp32_bit_accuracy']:.2%} | {r['fp32_bit_agreement_with_pytorch']:.2%} |",
        f"| INT8 TFLite | {r['int8_bit_accuracy']:.2%} | {r['int8_bit_agreement_with_pytorch']:.2%} |",
        "",
        f"Watermarked, INT8: median binomial p-value {r['watermarked_int8_median_pvalue']:.2e}.",
        "Unwatermarked photos (false-positive check): "
        + ", ".join(
            f"{k} min p-value {v['min_pvalue']:.3g} ({v['detections_at_1e-3']} detections at p < 1e-3)"
            for k, v in r["false_positive_check_unwatermarked"].items()
        ),
        "",
    ]
    return "\n".join(lines)


def run_robustness(model_dir: Path, out: Path, threads: int = 2) -> dict[str, Any]:
    """Bit accuracy under each augmentation for PyTorch, FP32 and INT8 (needs the demo's artifacts)."""
    from convert.stages import RunOptions, _require
    from models.registry import resolve

    pair = load_pair(model_dir)
    spec = resolve(str(pair.card))
    md = RunOptions(spec=spec, out=out, threads=threads).model_dir
    fp32 = _require(md, "fp32.tflite", "convert")
    int8 = _require(md, "int8.tflite", "quantize")
    names, _, marked, msgs = watermark_heldout(pair, spec.card.config.img_size)
    rows = {}
    for aug, fn in augmentations().items():
        logits = decode_all(pair, fp32, int8, [fn(x) for x in marked])
        rows[aug] = {k: float(np.mean((v > 0) == msgs)) for k, v in logits.items()}
        rows[aug]["int8_minus_pytorch_pp"] = round(100 * (rows[aug]["int8"] - rows[aug]["pytorch"]), 3)
    report = {"num_images": len(names), "nbits": int(msgs.shape[1]), "bit_accuracy": rows, "machine": machine_description()}
    dd = out / "demo"
    write_json(dd / "robustness.json", report)
    lines = ["| augmentation | PyTorch | FP32 | INT8 | INT8 - PyTorch (pp) |", "|---|---|---|---|---|"]
    lines += [
        f"| {a} | {r['pytorch']:.2%} | {r['fp32']:.2%} | {r['int8']:.2%} | {r['int8_minus_pytorch_pp']:+.2f} |" for a, r in rows.items()
    ]
    write_text(dd / "robustness.md", "# Robustness (bit accuracy vs true messages)\n\n" + "\n".join(lines) + "\n")
    _plot(rows, dd / "robustness.png")
    print("\n".join(lines))
    return report


def _plot(rows: dict[str, dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from convert.artifacts import atomic_path

    augs = list(rows)
    xs = np.arange(len(augs))
    fig, ax = plt.subplots(figsize=(8, 3.5))
    for i, k in enumerate(("pytorch", "fp32", "int8")):
        ax.bar(xs + (i - 1) * 0.27, [rows[a][k] for a in augs], 0.27, label=k)
    ax.set_xticks(xs, augs, rotation=20)
    ax.set_ylabel("bit accuracy")
    ax.set_ylim(0.4, 1.0)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
