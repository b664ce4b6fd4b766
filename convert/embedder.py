"""``make embedder``: the card's watermark embedder -> ``embedder-{fp32,fp16,int8}.tflite``, each verified.

One stage over the embedder seam (``models/embedders.py``):

1. load the embed path strictly from the checkpoint's embedder keys (or RANDOM_INIT, labelled);
2. check the deploy form against the official form in float on held-out photos;
3. convert the deploy form with litert-torch: inputs ``image`` (1, S, S, 3) and ``message``
   (1, nbits), outputs ``watermarked`` (1, S, S, 3) and ``residual`` (the raw embedder output,
   for images of other sizes);
4. FP16 (float16 weights) and INT8 (the family's static ops calibrated on the calibration photos
   with random messages; JND, blend and clamp float) with ai-edge-quantizer;
5. verify every file against PyTorch on held-out photos with seeded random messages: max abs pixel
   difference, PSNR against PyTorch's watermarked image, PSNR of the watermark against the cover,
   and decoding: the card's extractor (PyTorch) reads the TFLite-embedded images and the
   PyTorch-embedded ones; the bits must agree. The route for other sizes
   (``package/run_embedder.py``) is checked on an odd-sized photo against the official path.

Writes ``embedder.json`` (summary), ``verify-embedder-<variant>.{json,md}``.
"""

from __future__ import annotations

import gc
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from videoseal_litert.calibration_data.build import Item, calibration_items, heldout_items
from videoseal_litert.convert.artifacts import atomic_path, machine_description, read_json, write_json, write_text
from videoseal_litert.convert.console import progress, working
from videoseal_litert.convert.load import LoadedEmbedder, load_embed_model, sha256_file
from videoseal_litert.convert.stages import RunOptions, StageSummary, _stage_rows, exclusive_stage, is_current
from videoseal_litert.convert.tflite import FLATBUFFER_LIMIT
from videoseal_litert.models.embedders import EMBEDDER_INPUTS, EMBEDDER_MEANINGS, EMBEDDER_OUTPUTS, message_for
from videoseal_litert.models.errors import ImageError, UsageError, VerificationError
from videoseal_litert.models.registry import EmbedderThresholds

log = logging.getLogger(__name__)

EMBEDDER_VARIANTS = ("fp32", "fp16", "int8")
CALIBRATION_CHUNK = 8
MESSAGE_SEED = 7  # verification messages: message_for(index, nbits, MESSAGE_SEED); calibration uses seed 8


ROUTE_TOLERANCE = 1e-4  # the odd-size route (host resize + JND + blend around the fp32 file) vs PyTorch
# Deploy form vs official form in float32 (summation order only): 2e-6 on the minis, 3.1e-5 on the
# full-size VideoSeal 0.0 embedder with random weights (scaling_w 1.0, no JND: rounding shows 5x more).
DEPLOY_FORM_TOLERANCE = 1e-4


def psnr_db(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


class NamedEmbedder(torch.nn.Module):
    def __init__(self, deploy: torch.nn.Module) -> None:
        super().__init__()
        self.deploy = deploy

    def forward(self, image: torch.Tensor, message: torch.Tensor) -> dict[str, torch.Tensor]:
        wm, res = self.deploy(image, message)
        return {EMBEDDER_OUTPUTS[0]: wm, EMBEDDER_OUTPUTS[1]: res}


def sample_inputs(size: int, nbits: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"image": torch.rand(1, size, size, 3, generator=g), "message": torch.randint(0, 2, (1, nbits), generator=g).float()}


def convert_embedder_fp32(deploy: torch.nn.Module, size: int, nbits: int, path: Path) -> None:
    import litert_torch

    from videoseal_litert.convert.tflite import LIGHTWEIGHT_ABOVE_PARAMS, compact_tensor_names

    n_params = sum(p.numel() for p in deploy.parameters())
    with working(f"converting to {path.name}"):
        edge = litert_torch.convert(
            NamedEmbedder(deploy).eval(),
            sample_kwargs=sample_inputs(size, nbits),
            lightweight_conversion=n_params > LIGHTWEIGHT_ABOVE_PARAMS,
        )
    with working(f"writing {path.name}"), atomic_path(path) as tmp:
        edge.export(str(tmp))
        del edge
        gc.collect()
        compact_tensor_names(tmp)


class TFLiteEmbedder:
    """A converted embedder through its signature: (image NHWC, message) -> (watermarked, residual)."""

    def __init__(self, path: Path, num_threads: int = 2) -> None:
        from videoseal_litert.convert.runtime import open_interpreter

        self.it = open_interpreter(path, num_threads=num_threads)
        self.runner = self.it.get_signature_runner()
        names = set(self.runner.get_input_details())
        if names != set(EMBEDDER_INPUTS):
            from videoseal_litert.models.errors import ArtifactCorruptError

            raise ArtifactCorruptError(
                f"{path}: inputs {sorted(names)}, expected {list(EMBEDDER_INPUTS)}: not an embedder this pipeline wrote"
            )

    def __call__(self, image_nhwc: np.ndarray, message: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = self.runner(image=image_nhwc.astype(np.float32), message=message.astype(np.float32))
        return out["watermarked"], out["residual"]


def _nhwc(item: Item) -> np.ndarray:
    return item.pixels.transpose(0, 2, 3, 1).copy()


def calibrate_embedder(fp32: Path, items: list[Item], nbits: int) -> tuple[dict, int]:
    """Min/max statistics over calibration photos with random messages, fed in chunks (flat memory)."""
    from videoseal_litert.quantize.calibrate import calibration_mode
    from videoseal_litert.quantize.recipes import build_quantizer

    q = build_quantizer(str(fp32), "int8-full")
    result, done = None, 0
    for i in progress(range(0, len(items), CALIBRATION_CHUNK), desc="calibrating the embedder"):
        chunk = [
            {"image": _nhwc(it), "message": message_for(i + k, nbits, seed=8).float().numpy()}
            for k, it in enumerate(items[i : i + CALIBRATION_CHUNK])
        ]
        result = q.calibrate({"serving_default": chunk}, previous_calibration_result=result, num_threads=2, mode=calibration_mode())
        done += len(chunk)
    # The inputs' declared ranges, not what the photos spanned: [0, 1] for pixels and bits.
    from ai_edge_litert.interpreter import Interpreter

    for d in Interpreter(model_path=str(fp32)).get_input_details():
        old = result.get(d["name"])
        if old is not None:
            shape = np.shape(old["min"])
            result[d["name"]] = {**old, "min": np.zeros(shape, np.float32), "max": np.ones(shape, np.float32)}
    return result, done


def quantize_embedder(fp32: Path, out: Path, variant: str, policy, qsvs: dict | None) -> None:
    """FP16 weights, or static INT8 for the family's ops only: JND lowers to DEPTHWISE_CONV_2D, POW,
    SQRT and SELECT, none in the U-Net policy, so it stays float with LayerNorm, blend and clamp."""
    from videoseal_litert.quantize.recipes import build_quantizer

    q = build_quantizer(str(fp32), variant, policy)
    with working(f"quantizing {out.name}"):
        result = q.quantize(qsvs if q.need_calibration else None, enable_progress_report=False)
    with atomic_path(out) as tmp:
        tmp.write_bytes(result.quantized_model)


@dataclass
class Reference:
    names: list[str]
    images: np.ndarray  # (N, S, S, 3) covers
    messages: np.ndarray  # (N, nbits)
    watermarked: np.ndarray  # (N, S, S, 3) PyTorch, official form
    decoded: np.ndarray | None  # (N, nbits) bit logits of the extractor on PyTorch's watermarked images


def pytorch_reference(loaded: LoadedEmbedder, items: list[Item]) -> Reference:
    nbits = loaded.config.nbits
    imgs, msgs, wms = [], [], []
    with torch.no_grad():
        for i, it in enumerate(progress(items, desc="PyTorch reference")):
            m = message_for(i, nbits, MESSAGE_SEED)
            imgs.append(_nhwc(it)[0])
            msgs.append(m[0].numpy())
            wms.append(loaded.module(torch.from_numpy(it.pixels), m)[0].permute(1, 2, 0).numpy())
    return Reference([i.name for i in items], np.stack(imgs), np.stack(msgs), np.stack(wms), None)


def run_file(path: Path, ref: Reference, threads: int) -> np.ndarray:
    """The file's ``watermarked`` output for every reference image and message: (N, S, S, 3)."""
    tfl = TFLiteEmbedder(path, threads)
    return np.stack([tfl(ref.images[i : i + 1], ref.messages[i : i + 1])[0][0] for i in range(len(ref.names))])


def decode_bits(extractor: torch.nn.Module, images: np.ndarray) -> np.ndarray:
    """(N, nbits) bit logits of the extractor (PyTorch) on NHWC images."""
    with torch.no_grad():
        return np.stack([extractor(torch.from_numpy(np.ascontiguousarray(g.transpose(2, 0, 1)))[None])[0, 1:].numpy() for g in images])


def verify_embedder_file(
    model_id: str,
    variant: str,
    path: Path,
    ref: Reference,
    got: np.ndarray,
    decoded: np.ndarray | None,
    random_init: bool,
    thresholds: EmbedderThresholds,
) -> dict[str, Any]:
    """Compare the file's outputs ``got`` with PyTorch's, and ``decoded`` (the extractor's bit logits on
    ``got``) with the extractor on PyTorch's watermarked images."""
    r: dict[str, Any] = {
        "model_id": model_id,
        "variant": variant,
        "file": path.name,
        "sha256": sha256_file(path),
        "num_images": len(ref.names),
        "images": ref.names,
        "max_abs_pixel_diff": float(np.abs(got - ref.watermarked).max()),
        "mean_abs_pixel_diff": float(np.abs(got - ref.watermarked).mean()),
        "psnr_vs_pytorch_db": psnr_db(got, ref.watermarked),
        "psnr_watermark_vs_cover_db": {"tflite": psnr_db(got, ref.images), "pytorch": psnr_db(ref.watermarked, ref.images)},
        # The watermark itself (PyTorch's watermarked minus cover) against the file's error on it.
        "watermark_snr_db": 10
        * math.log10(
            float(np.sum((ref.watermarked.astype(np.float64) - ref.images) ** 2))
            / max(float(np.sum((got.astype(np.float64) - ref.watermarked) ** 2)), 1e-30)
        ),
        "output_range": [float(got.min()), float(got.max())],
        "random_init": random_init,
        "thresholds": asdict(thresholds),
        "machine": machine_description(),
    }
    if decoded is not None and ref.decoded is not None:
        dec = decoded
        r["decoding"] = {
            "extractor": "the card's extractor in PyTorch",
            "bit_agreement_tflite_vs_pytorch_embedded": float(np.mean((dec > 0) == (ref.decoded > 0))),
            "bit_accuracy_pytorch_embedded": float(np.mean((ref.decoded > 0) == (ref.messages > 0.5))),
            "bit_accuracy_tflite_embedded": float(np.mean((dec > 0) == (ref.messages > 0.5))),
        }
    else:
        r["decoding"] = None
    fails = []
    if thresholds.max_abs_pixel_diff is not None and not r["max_abs_pixel_diff"] <= thresholds.max_abs_pixel_diff:
        fails.append(f"max abs pixel diff {r['max_abs_pixel_diff']:.3g} > {thresholds.max_abs_pixel_diff:g}")
    if thresholds.min_psnr_vs_pytorch_db is not None and not r["psnr_vs_pytorch_db"] >= thresholds.min_psnr_vs_pytorch_db:
        fails.append(f"PSNR vs PyTorch {r['psnr_vs_pytorch_db']:.1f} dB < {thresholds.min_psnr_vs_pytorch_db:g} dB")
    if r["decoding"] and not r["decoding"]["bit_agreement_tflite_vs_pytorch_embedded"] >= thresholds.min_decode_agreement:
        fails.append(
            f"decoded bit agreement {r['decoding']['bit_agreement_tflite_vs_pytorch_embedded']:.4f} < {thresholds.min_decode_agreement}"
        )
    if not (0.0 <= r["output_range"][0] and r["output_range"][1] <= 1.0):
        fails.append(f"output outside [0, 1]: {r['output_range']}")
    r["passed"], r["failures"] = not fails, fails
    return r


def render_markdown(r: dict[str, Any]) -> str:
    lines = [
        f"# Embedder verification: {r['model_id']} {r['variant']}",
        "",
        f"- file: `{r['file']}`; weights: {'RANDOM (not a trained model)' if r['random_init'] else 'checkpoint'}",
        f"- {r['num_images']} held-out photos, seeded random messages; machine: {r['machine']}",
        f"- result: **{'PASSED' if r['passed'] else 'FAILED'}** " + ("; ".join(r["failures"])),
        "",
        "| measure | value |",
        "|---|---|",
        f"| max abs pixel diff vs PyTorch | {r['max_abs_pixel_diff']:.3g} |",
        f"| PSNR vs PyTorch | {r['psnr_vs_pytorch_db']:.1f} dB |",
        f"| watermark SNR (PyTorch's watermark vs the file's error on it) | {r['watermark_snr_db']:.1f} dB |",
        f"| PSNR watermark vs cover (TFLite / PyTorch) | {r['psnr_watermark_vs_cover_db']['tflite']:.2f} / {r['psnr_watermark_vs_cover_db']['pytorch']:.2f} dB |",
    ]
    d = r["decoding"]
    if d:
        lines += [
            f"| decoded bits, TFLite-embedded vs PyTorch-embedded | {d['bit_agreement_tflite_vs_pytorch_embedded']:.4%} |",
            f"| bit accuracy, PyTorch-embedded / TFLite-embedded | {d['bit_accuracy_pytorch_embedded']:.4%} / {d['bit_accuracy_tflite_embedded']:.4%} |",
        ]
    else:
        lines.append("| decoding | not checked: the card has no extractor |")
    lines += ["", f"Floors: `{r['thresholds']}`", ""]
    return "\n".join(lines)


def route_case(loaded: LoadedEmbedder) -> tuple[str, np.ndarray, np.ndarray, np.ndarray]:
    """An odd-sized real photo (240 x 320), a random message, and the official path's output for them."""
    g = torch.Generator().manual_seed(3)
    # A real photo at an odd size: the first held-out photo, resized to 240 x 320 in PyTorch.
    first = next(iter(heldout_items(None, loaded.config.img_size)))
    img = torch.nn.functional.interpolate(torch.from_numpy(first.pixels), size=(240, 320), mode="bilinear", antialias=True).clamp(0, 1)
    msg = torch.randint(0, 2, (1, loaded.config.nbits), generator=g)
    with torch.no_grad():
        want = loaded.module(img, msg)[0].permute(1, 2, 0).numpy()
    return f"{first.name} resized to 240x320", img[0].permute(1, 2, 0).numpy(), msg[0].numpy(), want


def check_route(case: tuple[str, np.ndarray, np.ndarray, np.ndarray], route: dict[str, Any], fp32: Path, threads: int) -> dict[str, Any]:
    """The odd-size route of ``package/run_embedder.py`` around the fp32 file against the official path."""
    from videoseal_litert.package.run_embedder import Embedder

    name, img, msg, want = case
    got = Embedder(fp32, route, threads).embed(img, msg)
    diff = float(np.abs(got - want).max())
    return {"image": name, "max_abs_diff_vs_pytorch": diff, "tolerance": ROUTE_TOLERANCE, "passed": diff <= ROUTE_TOLERANCE}


@exclusive_stage
def stage_embedder(opts: RunOptions, variants: tuple[str, ...] = EMBEDDER_VARIANTS) -> StageSummary:
    from videoseal_litert.convert.artifacts import peak_rss_mb

    md, t0 = opts.model_dir, time.time()
    card = opts.spec.card
    cfg = card.embedder  # CardError when the card has no embedder section
    size = cfg.img_size
    items = list(heldout_items(opts.images, size))
    if not items:
        raise ImageError(f"no readable image in {opts.images}: every file was skipped (the warnings above say why)")
    if opts.spec.verify_images and opts.images is None:
        items = items[: opts.spec.verify_images]
    inputs = {**opts.inputs(), "variants": list(variants), "images": [f"{i.name}:{i.sha256}" for i in items], "stage": "embedder"}
    inputs["thresholds"] = {v: asdict(opts.spec.embedder_thresholds[v]) for v in variants}
    if is_current(opts, "embedder", inputs):
        return StageSummary("embedder", opts.spec.name, True, _rows(read_json(md / "embedder.json")))
    # Phase 1, the embedder in memory: PyTorch reference, deploy form checked, FP32 file; then freed
    # (a 4 GB ChunkySeal embedder and its 3 GB extractor never sit in memory together).
    loaded = load_embed_model(opts.spec, opts.ckpt, opts.random_init, opts.allow_nonfinite_weights)
    family = loaded.family
    float_bytes = sum(p.numel() * 4 for p in loaded.module.parameters())
    if float_bytes >= FLATBUFFER_LIMIT and set(variants) - {"fp32"}:
        raise UsageError(
            f"the {opts.spec.name} embedder has {float_bytes / 1e9:.1f} GB of float weights: its FP32 file is over the 2 GB "
            "flatbuffer limit, which ai-edge-quantizer cannot read, and FP16 would not fit one flatbuffer either; "
            "only EMBEDDER_VARIANTS=fp32 is available for it"
        )
    random_init, ckpt_path, ckpt_sha = loaded.random_init, loaded.checkpoint_path, loaded.checkpoint_sha256
    num_params = sum(p.numel() for n, p in loaded.module.named_parameters() if not n.startswith("attenuation"))
    ref = pytorch_reference(loaded, items)
    case = route_case(loaded)
    # The deploy form against the official form, in float, on the same photos and messages (the
    # deploy form reuses the loaded weights: no second copy).
    deploy = family.deploy_form(loaded.module)
    del loaded
    with torch.no_grad():
        dep = np.stack(
            [
                deploy(torch.from_numpy(ref.images[i : i + 1]), torch.from_numpy(ref.messages[i : i + 1]).float())[0][0].numpy()
                for i in range(len(items))
            ]
        )
    deploy_diff = float(np.abs(dep - ref.watermarked).max())
    if deploy_diff > DEPLOY_FORM_TOLERANCE:
        raise VerificationError(
            f"the converter-friendly form differs from the official embed path by {deploy_diff:.3g} (> {DEPLOY_FORM_TOLERANCE:g}) in float"
        )
    fp32 = md / "embedder-fp32.tflite"
    convert_embedder_fp32(deploy, size, cfg.nbits, fp32)
    del deploy
    gc.collect()
    # Phase 2: the quantized files, and every file's outputs on the reference images.
    calib_count = 0
    qsvs = None
    if "int8" in variants:
        calib = list(calibration_items(None, size, {}))
        if opts.spec.calibration_images:
            calib = calib[: opts.spec.calibration_images]
        qsvs, calib_count = calibrate_embedder(fp32, calib, cfg.nbits)
    outputs: dict[str, np.ndarray] = {}
    for v in progress(variants, desc="embedder variants"):
        path = md / f"embedder-{v}.tflite"
        if v != "fp32":
            quantize_embedder(fp32, path, v, family.int8, qsvs if v == "int8" else None)
        outputs[v] = run_file(path, ref, opts.threads)
    del qsvs
    gc.collect()
    # Phase 3: decoding with the card's extractor (PyTorch), when the card has one and the weights do.
    decoded: dict[str, np.ndarray] = {}
    if has_extractor_weights(opts):
        extractor = opts.load().module
        ref.decoded = decode_bits(extractor, ref.watermarked)
        decoded = {v: decode_bits(extractor, got) for v, got in progress(outputs.items(), desc="decoding")}
        del extractor
        gc.collect()
    results: dict[str, Any] = {}
    failures = []
    for v in variants:
        path = md / f"embedder-{v}.tflite"
        rep = verify_embedder_file(opts.spec.name, v, path, ref, outputs[v], decoded.get(v), random_init, opts.spec.embedder_thresholds[v])
        rep["size_bytes"] = path.stat().st_size
        rep["size_ratio_to_fp32"] = round(path.stat().st_size / fp32.stat().st_size, 4)
        write_json(md / f"verify-embedder-{v}.json", rep)
        write_text(md / f"verify-embedder-{v}.md", render_markdown(rep))
        results[v] = rep
        if not rep["passed"]:
            failures.append(f"{v}: " + "; ".join(rep["failures"]))
    route = check_route(case, family.route(cfg), fp32, opts.threads)
    if not route["passed"]:
        failures.append(f"route for other sizes: max abs diff {route['max_abs_diff_vs_pytorch']:.3g} > {ROUTE_TOLERANCE}")
    summary = {
        "model_id": opts.spec.name,
        "embedder": {"family": family.name, **family.describe(cfg), "nbits": cfg.nbits},
        "num_params": num_params,
        "checkpoint": ckpt_path,
        "checkpoint_sha256": ckpt_sha,
        "random_init": random_init,
        "contract": {
            "inputs": [
                {"name": "image", "shape": [1, size, size, 3], "dtype": "float32", "meaning": EMBEDDER_MEANINGS["image"]},
                {"name": "message", "shape": [1, cfg.nbits], "dtype": "float32", "meaning": EMBEDDER_MEANINGS["message"]},
            ],
            "outputs": [
                {"name": "watermarked", "shape": [1, size, size, 3], "dtype": "float32", "meaning": EMBEDDER_MEANINGS["watermarked"]},
                {"name": "residual", "dtype": "float32", "meaning": EMBEDDER_MEANINGS["residual"]},
            ],
        },
        "route": family.route(cfg),
        "route_check": route,
        "deploy_form_max_abs_diff_vs_official": deploy_diff,
        "int8_ops": {"static_int8": list(family.int8.static), "why": family.int8.why},
        "calibration_images": calib_count,
        "decoding_checked": bool(decoded),
        "variants": {
            v: {
                k: r[k]
                for k in (
                    "file",
                    "size_bytes",
                    "size_ratio_to_fp32",
                    "max_abs_pixel_diff",
                    "psnr_vs_pytorch_db",
                    "watermark_snr_db",
                    "psnr_watermark_vs_cover_db",
                    "decoding",
                    "passed",
                )
            }
            for v, r in results.items()
        },
        "peak_rss_mb": peak_rss_mb(),
        "wall_s": round(time.time() - t0, 1),
        "machine": machine_description(),
    }
    write_json(md / "embedder.json", summary)
    if failures:
        raise VerificationError("embedder: " + "; ".join(failures))
    outs = [f"embedder-{v}.tflite" for v in variants] + [f"verify-embedder-{v}.json" for v in variants] + ["embedder.json"]
    md.record("embedder", inputs, outs, t0)
    return StageSummary("embedder", opts.spec.name, False, _rows(summary) + _stage_rows(opts, "embedder"))


def has_extractor_weights(opts: RunOptions) -> bool:
    """True when the card has an extractor and its weights are there: random (RANDOM_INIT) or ``detector.`` keys in the checkpoint."""
    if opts.spec.card.extractor_config is None:
        return False
    if opts.random_init:
        return True
    from videoseal_litert.convert.load import read_tensors

    path = opts.checkpoint_path()
    return bool(path and path.is_file() and any(k.startswith("detector.") for k in read_tensors(path)))


def _rows(s: dict[str, Any]) -> list[tuple[str, str]]:
    rows = [("weights", "RANDOM (not trained)" if s["random_init"] else str(s["checkpoint"]))]
    for v, r in s["variants"].items():
        d = r.get("decoding")
        dec = f", decoded bits {d['bit_agreement_tflite_vs_pytorch_embedded']:.2%} as PyTorch's" if d else ""
        rows.append(
            (
                f"embedder-{v}.tflite",
                f"{r['size_bytes'] / 1e6:.1f} MB, {'pass' if r['passed'] else 'FAIL'}: max diff {r['max_abs_pixel_diff']:.1e}, "
                f"PSNR vs PyTorch {r['psnr_vs_pytorch_db']:.1f} dB, vs cover {r['psnr_watermark_vs_cover_db']['tflite']:.1f} dB{dec}",
            )
        )
    rows.append(("other sizes (route)", f"max diff {s['route_check']['max_abs_diff_vs_pytorch']:.1e} vs PyTorch on 240x320"))
    return rows


# ---- benchmark (make bench writes it into bench.json under "embedder") ----------------------------

_EMB_RSS_SCRIPT = """
import sys, numpy as np
from ai_edge_litert.interpreter import Interpreter
it = Interpreter(model_path=sys.argv[1], num_threads=int(sys.argv[2]))
run = it.get_signature_runner()
d = run.get_input_details()
for _ in range(3):
    run(image=np.random.default_rng(0).random(d["image"]["shape"], dtype=np.float32), message=np.ones(d["message"]["shape"], np.float32))
print(int([l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0].split()[1]) / 1024.0)
"""


def bench_embedder(model_dir: Path, threads: tuple[int, ...], runs: int = 10, warmup: int = 2) -> dict[str, Any]:
    """Latency of every embedder file, interleaved (one run of each per round; ratios to FP32 from the
    same run), sizes, and each file's peak RSS in a fresh process."""
    import subprocess
    import sys

    files = {v: model_dir / f"embedder-{v}.tflite" for v in EMBEDDER_VARIANTS if (model_dir / f"embedder-{v}.tflite").exists()}
    runners = {v: TFLiteEmbedder(p) for v, p in files.items()}
    s = int(runners["fp32"].runner.get_input_details()["image"]["shape"][1])
    nbits = int(runners["fp32"].runner.get_input_details()["message"]["shape"][1])
    x = np.random.default_rng(0).random((1, s, s, 3), dtype=np.float32)
    m = (np.random.default_rng(1).random((1, nbits)) > 0.5).astype(np.float32)
    latency: dict[str, Any] = {}
    for t in threads:
        rs = {v: TFLiteEmbedder(p, num_threads=t) for v, p in files.items()}
        ms: dict[str, list[float]] = {v: [] for v in rs}
        for r in rs.values():
            for _ in range(warmup):
                r(x, m)
        for _ in progress(range(runs), desc=f"benchmarking the embedder ({t} thread(s))"):
            for v, r in rs.items():
                t0 = time.perf_counter()
                r(x, m)
                ms[v].append((time.perf_counter() - t0) * 1e3)
        base = float(np.median(ms["fp32"]))
        latency[str(t)] = {
            v: {
                "median_ms": round(float(np.median(a)), 3),
                "p90_ms": round(float(np.percentile(a, 90)), 3),
                "ratio_to_fp32": round(float(np.median(a)) / base, 3),
            }
            for v, a in ms.items()
        }
        del rs
    del runners
    gc.collect()
    rss = {}
    for v, p in files.items():
        out = subprocess.run([sys.executable, "-c", _EMB_RSS_SCRIPT, str(p), str(max(threads))], capture_output=True, text=True, check=True)
        rss[v] = round(float(out.stdout.strip().splitlines()[-1]), 1)
    fp32_size = files["fp32"].stat().st_size
    return {
        "mode": "interleaved: one run of every embedder file per round",
        "runs": runs,
        "latency": latency,
        "size": {v: {"bytes": p.stat().st_size, "ratio_to_fp32": round(p.stat().st_size / fp32_size, 4)} for v, p in files.items()},
        "peak_rss_mb": rss,
        "stage": {k: read_json(model_dir / "embedder.json").get(k) for k in ("wall_s", "peak_rss_mb")},
    }


def render_bench(r: dict[str, Any]) -> str:
    lines = ["## Embedder", "", f"{r['mode']}, {r['runs']} rounds.", ""]
    for t, stats in r["latency"].items():
        lines += [
            f"### {t} thread(s)",
            "",
            "| file | median ms | p90 ms | x FP32 latency | size MB | x FP32 size | peak RSS MB |",
            "|---|---|---|---|---|---|---|",
        ]
        for v, st in stats.items():
            z = r["size"][v]
            lines.append(
                f"| embedder-{v} | {st['median_ms']:.1f} | {st['p90_ms']:.1f} | {st['ratio_to_fp32']:.2f} | {z['bytes'] / 1e6:.1f} | {z['ratio_to_fp32']:.3f} | {r['peak_rss_mb'][v]:.0f} |"
            )
        lines.append("")
    st = r.get("stage") or {}
    lines += [f"`make embedder` itself: {st.get('wall_s')} s, peak RSS {st.get('peak_rss_mb', 0):.0f} MB.", ""]
    return "\n".join(lines)
