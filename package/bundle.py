"""Stage 7: ``make package`` - a self-contained, hashed, verified bundle for a mobile team.

``dist/<model id>/`` holds the chosen ``.tflite`` files (each carrying its description as model
metadata), ``model.json``, golden vectors (PNG inputs with the expected logits and bits of every
variant), the verification / quantization / benchmark reports, the torch-free
``run_extractor.py`` and ``manifest.json`` with the sha256 of every file and where it came from.
The bundle is built in a temporary folder and renamed into place when complete.

A variant is packaged only if its verification passed on the very file being packaged (the
sha256 recorded at verification must match); otherwise packaging stops and says what to rerun,
or, with ``reverify``, verifies again and goes on only if that passes.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from videoseal_litert.convert.artifacts import read_json, tool_versions, write_json, write_text
from videoseal_litert.convert.load import sha256_file
from videoseal_litert.convert.runtime import TFLiteExtractor
from videoseal_litert.convert.stages import RunOptions, StageSummary, exclusive_stage, require_artifact
from videoseal_litert.convert.tflite import FLATBUFFER_LIMIT, as_numpy_buffers
from videoseal_litert.models.errors import PipelineError
from videoseal_litert.models.families import OUTPUT_NAMES
from videoseal_litert.package.run_extractor import METADATA_NAME, bits_hex

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_VARIANTS = ("int8", "fp16", "fp32")
# Golden-vector tolerance on logits: the runner on another CPU (or another XNNPACK build) may round
# differently; float files agree to ~1e-5 across machines, integer kernels to about one output step.
LOGIT_ATOL = {"fp32": 1e-3, "fp16": 2e-3}
INT_LOGIT_ATOL_FRACTION = 0.02


class PackagingError(PipelineError):
    """A variant cannot go into a bundle (unverified, failed, changed since verification, too big)."""


def _check_verified(opts: RunOptions, variant: str, reverify: bool) -> dict[str, Any]:
    md = opts.model_dir
    path = md / f"{variant}.tflite"
    if not path.exists():
        stage = "make convert" if variant == "fp32" else "make quantize"
        raise PackagingError(f"{path} not found: run `{stage} MODEL={opts.spec.name}` first")
    if path.stat().st_size >= FLATBUFFER_LIMIT:
        raise PackagingError(
            f"{path} is over 2 GB: its weights sit outside the flatbuffer, so no metadata can be embedded; package int8 or fp16"
        )
    rep_path = md / f"verify-{variant}.json"
    rerun = f"`make verify MODEL={opts.spec.name} VARIANT={variant}` (or `make package ... REVERIFY=1`)"
    if not rep_path.exists():
        if not reverify:
            raise PackagingError(f"{path} was never verified: run {rerun}")
        return _reverify(opts, variant)
    rep = read_json(rep_path)
    if not rep["passed"]:
        raise PackagingError(
            f"{path} failed verification ({'; '.join(rep['failures'])}); a bundle never holds an unverified model. "
            f"See {rep_path.with_suffix('.md')}; rerun `make quantize MODEL={opts.spec.name}` after fixing the cause"
        )
    actual = sha256_file(path)  # the verified bytes, not the recorded ones: REVERIFY=1 can accept a changed file
    if rep.get("tflite_sha256") != actual:
        if not reverify:
            why = (
                f"changed after it was verified (sha256 {actual[:12]}... != verified {rep['tflite_sha256'][:12]}...)"
                if rep.get("tflite_sha256")
                else "has a verification report without a file hash (written before hashes were recorded)"
            )
            raise PackagingError(f"{path} {why}: run {rerun}")
        return _reverify(opts, variant)
    return rep


def _reverify(opts: RunOptions, variant: str) -> dict[str, Any]:
    from videoseal_litert.convert.stages import stage_verify

    log.info("re-verifying %s", variant)
    try:
        stage_verify(opts, variant)
    except PipelineError as e:
        raise PackagingError(f"{variant}: re-verification failed, not packaged: {e}") from e
    return read_json(opts.model_dir / f"verify-{variant}.json")


def embed_metadata(src: Path, dst: Path, description: dict[str, Any]) -> None:
    """Copy ``src`` to ``dst`` with ``description`` (JSON) as model metadata named METADATA_NAME."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(src))
    as_numpy_buffers(model)
    model.metadata = [m for m in (model.metadata or []) if (m.name.decode() if isinstance(m.name, bytes) else m.name) != METADATA_NAME]
    buf = schema.BufferT()
    buf.data = np.frombuffer(json.dumps(description, sort_keys=True).encode("utf-8"), dtype=np.uint8)
    model.buffers.append(buf)
    meta = schema.MetadataT()
    meta.name = METADATA_NAME
    meta.buffer = len(model.buffers) - 1
    model.metadata.append(meta)
    flatbuffer_utils.write_model(model, str(dst))


def git_commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+uncommitted-changes" if dirty else "")


def _variant_description(desc: dict[str, Any], variant: str, path: Path) -> dict[str, Any]:
    from videoseal_litert.quantize.stage import io_params

    io = io_params(path)  # from the file itself: model.json is the load stage's alone
    return {
        "model_id": desc["model_id"],
        "variant": variant,
        "nbits": desc["nbits"],
        "random_init": desc["random_init"],
        "input": desc["input"],
        "outputs": desc["outputs"],
        "decoding": "bit i = bit_logits[i] > 0; hex packs bit 0 as the most significant bit of byte 0",
        "integer_io": io if io and any(d["dtype"] != "float32" for d in [*io["input"], *io["outputs"]]) else None,
    }


def _golden_images(opts: RunOptions, n: int, folder: Path) -> list[tuple[str, np.ndarray]]:
    """The first ``n`` held-out photos (full view) as 8-bit PNGs, each followed by its watermarked
    version for a model with an embedder; the inputs are exactly bytes / 255."""
    from videoseal_litert.calibration_data.build import heldout_items

    out = []
    items = opts.with_watermarks([i for i in heldout_items(None, opts.spec.card.config.img_size) if i.name.endswith(":full")][:n])
    for it in items:
        u8 = np.clip(np.round(it.pixels[0].transpose(1, 2, 0) * 255.0), 0, 255).astype(np.uint8)
        name = it.name.replace(":", "_") + ".png"
        Image.fromarray(u8).save(folder / name)
        out.append((name, (u8.astype(np.float32) / 255.0)[None]))
    return out


EMBEDDER_ATOL = {"fp32": 1e-4, "fp16": 1e-3, "int8": 2e-2}  # golden watermarked pixels, across CPUs
GOLDEN_MESSAGE_SEED = 11


def embedder_variants_to_ship(opts: RunOptions, asked: tuple[str, ...] | None) -> tuple[str, ...]:
    """``asked`` (each must be written and verified), or by default every embedder file with a passing report."""
    md = opts.model_dir
    if asked is None:
        return tuple(
            v
            for v in ("int8", "fp16", "fp32")
            if (md / f"verify-embedder-{v}.json").exists() and read_json(md / f"verify-embedder-{v}.json")["passed"]
        )
    for v in asked:
        rep = md / f"verify-embedder-{v}.json"
        if not (md / f"embedder-{v}.tflite").exists() or not rep.exists():
            raise PackagingError(f"embedder-{v}.tflite is not written and verified: run `make embedder MODEL={opts.spec.name}` first")
        r = read_json(rep)
        if not r["passed"]:
            raise PackagingError(f"embedder-{v}.tflite failed verification ({'; '.join(r['failures'])}); not packaged")
        if r["sha256"] != sha256_file(md / f"embedder-{v}.tflite"):
            raise PackagingError(f"embedder-{v}.tflite changed after it was verified: rerun `make embedder MODEL={opts.spec.name} FORCE=1`")
    return asked


def _embedder_part(opts: RunOptions, variants: tuple[str, ...], stage: Path, images: list[tuple[str, np.ndarray]]) -> dict[str, Any]:
    """Embedder files (description as metadata), golden vectors (cover PNG + message -> watermarked .npy), reports."""
    from videoseal_litert.models.embedders import message_for
    from videoseal_litert.package.run_embedder import Embedder

    md = opts.model_dir
    summary = read_json(md / "embedder.json")
    nbits = summary["embedder"]["nbits"]
    part: dict[str, Any] = {k: summary[k] for k in ("embedder", "contract", "route", "random_init", "num_params")}
    part["variants"], golden = {}, {}
    (stage / "golden" / "embedder").mkdir()
    # One odd-sized cover too (240 x 320), so the selftest runs the route for other sizes.
    odd = Image.fromarray(np.round(images[0][1][0] * 255).astype(np.uint8)).resize((320, 240), Image.BILINEAR)
    odd_name = Path(images[0][0]).stem + "_320x240.png"
    odd.save(stage / "golden" / odd_name)
    covers = [(n, x[0]) for n, x in images] + [(odd_name, np.asarray(odd, np.float32) / 255)]
    for v in variants:
        src, dst = md / f"embedder-{v}.tflite", stage / f"embedder-{v}.tflite"
        rep = read_json(md / f"verify-embedder-{v}.json")
        embed_metadata(
            src,
            dst,
            {
                "model_id": opts.spec.name,
                "variant": v,
                "role": "embedder",
                "contract": summary["contract"],
                "route": summary["route"],
                "random_init": summary["random_init"],
            },
        )
        a, b = Embedder(src, summary["route"]), Embedder(dst, summary["route"])
        vectors = []
        for i, (name, x) in enumerate(covers):
            m = message_for(i, nbits, GOLDEN_MESSAGE_SEED).numpy()[0]
            wa, wb = a.embed(x, m), b.embed(x, m)
            if not np.array_equal(wa, wb):
                raise PackagingError(f"{dst.name}: embedding metadata changed the outputs; not packaged")
            npy = f"golden/embedder/{v}-{Path(name).stem}.npy"
            np.save(stage / npy, wb)
            vectors.append({"image": name, "message": "".join(str(int(t)) for t in m), "watermarked": npy})
        golden[v] = {"file": dst.name, "atol": EMBEDDER_ATOL[v], "vectors": vectors}
        part["variants"][v] = {
            "file": dst.name,
            "size_bytes": dst.stat().st_size,
            "verified_sha256": rep["sha256"],
            "verification": {
                k: rep[k]
                for k in (
                    "passed",
                    "num_images",
                    "max_abs_pixel_diff",
                    "psnr_vs_pytorch_db",
                    "psnr_watermark_vs_cover_db",
                    "decoding",
                    "thresholds",
                )
            },
        }
        for ext in ("json", "md"):
            shutil.copy(md / f"verify-embedder-{v}.{ext}", stage / "reports")
    shutil.copy(md / "embedder.json", stage / "reports")
    write_json(stage / "golden" / "embedder" / "golden.json", {"model_id": opts.spec.name, "nbits": nbits, "variants": golden})
    shutil.copy(Path(__file__).with_name("run_embedder.py"), stage / "run_embedder.py")
    (stage / "android").mkdir()
    shutil.copy(Path(__file__).parent / "android" / "EmbedWatermark.kt", stage / "android" / "EmbedWatermark.kt")
    return part


@exclusive_stage
def build_bundle(
    opts: RunOptions,
    variants: tuple[str, ...] = DEFAULT_VARIANTS,
    dist: Path = Path("dist"),
    reverify: bool = False,
    golden: int = 3,
    embedder_variants: tuple[str, ...] | None = None,
) -> StageSummary:
    md = opts.model_dir
    if opts.spec.card.extractor_config is None:
        raise PackagingError(
            f"card {opts.spec.card_path} has no extractor: a bundle holds the extractor, with the embedder beside it; "
            "an embedder-only bundle is not supported (the embedder files and run_embedder.py are in the model directory)"
        )
    desc = read_json(require_artifact(md, "model.json", "load"))
    reports = {v: _check_verified(opts, v, reverify) for v in variants}
    emb_variants = embedder_variants_to_ship(opts, embedder_variants)
    dist.mkdir(parents=True, exist_ok=True)
    final = dist / opts.spec.name
    stage = Path(tempfile.mkdtemp(prefix=f".{opts.spec.name}-", dir=dist))
    stage.chmod(0o755)
    try:
        (stage / "golden").mkdir()
        (stage / "reports").mkdir()
        images = _golden_images(opts, golden, stage / "golden")
        bundle_variants, golden_json = {}, {}
        for v in variants:
            src = md / f"{v}.tflite"
            dst = stage / f"{v}.tflite"
            vdesc = _variant_description(desc, v, src)
            embed_metadata(src, dst, vdesc)
            a, b = TFLiteExtractor(src), TFLiteExtractor(dst)
            vectors = []
            for name, x in images:
                ma, ba = a(x)
                mb, bb = b(x)
                if not (np.array_equal(ma, mb) and np.array_equal(ba, bb)):
                    raise PackagingError(f"{dst.name}: embedding metadata changed the outputs; not packaged")
                vectors.append(
                    {
                        "image": name,
                        OUTPUT_NAMES[0]: float(mb.reshape(-1)[0]),
                        OUTPUT_NAMES[1]: [float(t) for t in bb.reshape(-1)],
                        "bits_hex": bits_hex(bb.reshape(-1)),
                    }
                )
            scale = max(max(abs(t) for t in vec[OUTPUT_NAMES[1]]) for vec in vectors)
            tol = LOGIT_ATOL.get(v, max(1e-3, INT_LOGIT_ATOL_FRACTION * scale))
            golden_json[v] = {"file": dst.name, "logit_atol": tol, "vectors": vectors}
            bundle_variants[v] = {
                "file": dst.name,
                "size_bytes": dst.stat().st_size,
                "verified_sha256": reports[v]["tflite_sha256"],
                "verification": {
                    k: reports[v][k] for k in ("passed", "num_images", "bit_agreement", "mask_agreement", "sqnr_db", "thresholds")
                },
                "integer_io": vdesc["integer_io"],
            }
            shutil.copy(md / f"verify-{v}.json", stage / "reports")
            shutil.copy(md / f"verify-{v}.md", stage / "reports")
        for extra in ("quantize.json", "bench.json", "bench.md", "op-error-int8.md", "op-error-int8.png", "inspect.md"):
            if (md / extra).exists():
                shutil.copy(md / extra, stage / "reports")
        write_json(stage / "golden" / "golden.json", {"model_id": desc["model_id"], "nbits": desc["nbits"], "variants": golden_json})
        model = {k: desc[k] for k in ("model_id", "description", "nbits", "architecture", "num_params", "input", "outputs", "random_init")}
        model["decoding"] = "bit i = bit_logits[i] > 0; P(bit i = 1) = sigmoid(bit_logits[i]); hex packs bit 0 as the MSB of byte 0"
        model["variants"] = bundle_variants
        if emb_variants:
            covers = [(n, x) for n, x in images if "+wm" not in n][:2]
            model["embedder"] = _embedder_part(opts, emb_variants, stage, covers)
        write_json(stage / "model.json", model)
        shutil.copy(Path(__file__).with_name("run_extractor.py"), stage / "run_extractor.py")
        write_text(stage / "README.md", _readme(model))
        files = sorted(p for p in stage.rglob("*") if p.is_file())
        manifest = {
            "model_id": desc["model_id"],
            "random_init": desc["random_init"],
            "checkpoint_sha256": desc.get("checkpoint_sha256"),
            "calibration_manifest_sha256": sha256_file(ROOT / "calibration_data" / "manifest.json"),
            "tool_versions": tool_versions(),
            "git_commit": git_commit(),
            "files": {str(p.relative_to(stage)): sha256_file(p) for p in files},
        }
        write_json(stage / "manifest.json", manifest)
        if final.exists():
            old = final.with_name(f".{final.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            final.rename(old)
            stage.rename(final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            stage.rename(final)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    rows = [
        (v, f"{r['size_bytes'] / 1e6:.1f} MB, verified bits {r['verification']['bit_agreement']:.2%}") for v, r in bundle_variants.items()
    ]
    rows += [
        (f"embedder-{v}", f"{r['size_bytes'] / 1e6:.1f} MB, max diff vs PyTorch {r['verification']['max_abs_pixel_diff']:.1e}")
        for v, r in (model.get("embedder") or {}).get("variants", {}).items()
    ]
    rows += [
        (
            "golden vectors",
            f"{len(images)} images x {len(variants)} variants" + (f"; embedder: {len(emb_variants)} variants" if emb_variants else ""),
        ),
        ("files", str(len(manifest["files"]) + 1)),
        ("bundle", str(final)),
    ]
    return StageSummary("package", opts.spec.name, False, rows)


def _readme(model: dict[str, Any]) -> str:
    warn = "**RANDOM WEIGHTS: this bundle exercises the pipeline; it is not a watermark extractor.**\n\n" if model["random_init"] else ""
    inp = model["input"]
    emb = model.get("embedder")
    emb_text = ""
    if emb:
        steps = "\n".join(f"    {i + 1}. {t}" for i, t in enumerate(emb["route"]["steps"]))
        emb_text = f"""
## Embedder

Files: {", ".join(v["file"] for v in emb["variants"].values())}. Inputs `image` (1, 256, 256, 3) RGB NHWC float32 in [0, 1]
and `message` (1, {model["nbits"]}) float32 0/1; output `watermarked` (1, 256, 256, 3) in [0, 1] (residual, attenuation,
blend and clamp in the graph) and `residual`. For an image of another size (the official route):

{steps}

    python run_embedder.py --selftest                                       # embedder golden vectors
    python run_embedder.py embedder-int8.tflite photo.jpg --bits 0110... --out marked.png

`android/EmbedWatermark.kt` is the same in Kotlin with the LiteRT Interpreter (an example: not compiled here).
"""
    return f"""# {model["model_id"]} extractor bundle

{warn}{model["description"]}. Files: {", ".join(v["file"] for v in model["variants"].values())}; description in `model.json`
(also embedded in each `.tflite` as metadata `{METADATA_NAME}`); hashes in `manifest.json`.

Input: {inp["channel_order"]} {inp["layout"]} {inp["shape"]} {inp["dtype"]} in {inp["range"]} (bytes / 255). Resize rule: {inp["resize_rule"]}.
Outputs: `mask_logit` (1, 1), then `bit_logits` (1, {model["nbits"]}); bit i = bit_logits[i] > 0.

    pip install ai-edge-litert numpy pillow
    python run_extractor.py --selftest                 # golden vectors, exits 1 on a mismatch
    python run_extractor.py int8.tflite photo.png      # mask logit and bits (hex)
    python run_extractor.py int8.tflite --info         # embedded description
{emb_text}"""
