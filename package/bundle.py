"""Stage 7: ``make package`` - a self-contained, hashed, verified bundle of both parts for a mobile team.

``dist/<model id>/`` holds the chosen ``.tflite`` files of each part (each carrying its description
as model metadata), ``model.json``, golden vectors (extractor: PNG inputs with the expected logits
and bits of every file; embedder: cover PNGs and messages with the expected watermarked pixels,
one cover at an odd size for the route), the verification / quantization / benchmark reports, the
torch-free runners from ``runtime/`` (``run_extractor.py``, ``run_embedder.py``, ``litert_runner.py``,
``route.py``) and ``manifest.json`` with the sha256 of every file and where it came from. The
bundle is built in a temporary folder and renamed into place when complete; it names no path of
the machine that built it.

A file is packaged only if its verification passed on the very file being packaged (the sha256
recorded at verification must match); otherwise packaging stops and says what to rerun, or, with
``reverify``, verifies again and goes on only if that passes.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from videoseal_litert.calibration_data.build import heldout_items, is_watermarked
from videoseal_litert.convert.arm_check import output_steps
from videoseal_litert.convert.options import RunOptions
from videoseal_litert.convert.parts import EmbedderPart, ExtractorPart, InputSet, Part
from videoseal_litert.convert.stages import StageSummary, exclusive_stage
from videoseal_litert.convert.tflite import FLATBUFFER_LIMIT, as_numpy_buffers
from videoseal_litert.convert.verify import failed_path, report_path, verification_of
from videoseal_litert.core.artifacts import machine_description, read_json, sha256_file, tool_versions, write_json, write_text
from videoseal_litert.core.console import say, working
from videoseal_litert.core.errors import NativeRunError, PackagingError, PipelineError, UnverifiedFileError
from videoseal_litert.core.images import Tally, to_uint8
from videoseal_litert.core.message import MESSAGE_FORMAT, message_hex
from videoseal_litert.core.metrics import DETECTION_PVALUE
from videoseal_litert.models.embedders import message_for
from videoseal_litert.models.gate import Verdict, judge_embedder, judge_extractor
from videoseal_litert.models.variants import VARIANTS, rule_for, variant
from videoseal_litert.package.route_graphs import ship_route_graphs
from videoseal_litert.runtime.litert_runner import METADATA_NAME
from videoseal_litert.runtime.native_build import build_x86, stb_dir
from videoseal_litert.runtime.route import embed as route_embed
from videoseal_litert.runtime.route import resize_aa as route_resize
from videoseal_litert.runtime.run_extractor import bits_hex

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
RUNTIME = ROOT / "runtime"
GOLDEN_MESSAGE_SEED = 11


def check_verified(part: Part, name: str, reverify: bool, allow_unverified: bool = False) -> tuple[Path, dict[str, Any]]:
    """(the file to ship, its passing verification report) for the part's ``name``, for the very bytes on disk
    (or re-verified). UnverifiedFileError for a failed, unverified or changed file unless ``allow_unverified``:
    then the file ships under the name it has (``.failed.tflite`` for a failed one) and the bundle says so."""
    opts = part.opts
    md = opts.model_dir
    path = md / part.file(name)
    make = f"make {part.make_target(name)} MODEL={opts.spec.name}"
    src = path if path.exists() or not failed_path(path).exists() else failed_path(path)
    if not src.exists():
        raise PackagingError(f"{path} not found: run `{make}` first")
    if src.stat().st_size >= FLATBUFFER_LIMIT:
        raise PackagingError(
            f"{src} is over 2 GB: its weights sit outside the flatbuffer, so no metadata can be embedded; package int8 or fp16"
        )
    status, rep = verification_of(src)  # the verified bytes, not the recorded ones: REVERIFY=1 can accept a changed file
    if status == "verified":
        return src, rep  # type: ignore[return-value]
    if reverify and status in ("unverified", "changed"):
        return path, _reverify(part, name)
    if allow_unverified:
        return src, {**(rep or {"failures": ["never verified"]}), "passed": False, "sha256": sha256_file(src), "status": status}
    rerun = f"`make verify MODEL={opts.spec.name} PART={part.name} VARIANT={name}` (or `make package ... REVERIFY=1`)"
    why = {
        "failed": f"failed verification ({'; '.join((rep or {}).get('failures', []))}); see {report_path(src).with_suffix('.md')}; "
        f"rerun `{make}` after fixing the cause",
        "unverified": f"was never verified: run {rerun}",
        "changed": f"changed after it was verified (sha256 {sha256_file(src)[:12]}... != verified {(rep or {}).get('sha256', '')[:12]}...): run {rerun}",
    }[status]
    raise UnverifiedFileError(
        f"{src.name if status == 'failed' else path} {why}. A bundle holds verified files only (--allow-unverified, "
        "ALLOW_UNVERIFIED=1, ships it labelled as such)"
    )


def _reverify(part: Part, name: str) -> dict[str, Any]:
    from videoseal_litert.convert.stages import stage_verify

    log.info("re-verifying %s %s", part.name, name)
    try:
        stage_verify(part.opts, part, name)
    except PipelineError as e:
        raise PackagingError(f"{part.name} {name}: re-verification failed, not packaged: {e}") from e
    return read_json(part.opts.model_dir / f"{part.report(name)}.json")


def bench_picks(part: Part) -> dict[str, str]:
    """The ship table's pick per target (``make bench``'s ``<prefix>bench.json``: phones and the web page), where the
    part was benchmarked; empty otherwise."""
    bench = part.opts.model_dir / f"{part.prefix}bench.json"
    if not bench.is_file():
        return {}
    return {p["target"]: p["variant"] for p in read_json(bench).get("ship", {}).get("recommended", []) if p.get("variant")}


def to_ship(part: Part, asked: tuple[str, ...] | None) -> tuple[str, ...]:
    """``asked``, or by default every ship-by-default variant of the part and every file the ship table recommends
    (``bench_picks``), each whose file is written (or failed) and fits one flatbuffer (a file over 2 GB cannot carry
    metadata: named on the terminal and left out)."""
    if asked is not None:
        for n in asked:
            variant(n, part.name)
        return asked
    md, out, picks = part.opts.model_dir, [], set(bench_picks(part).values())
    for v in VARIANTS.values():
        path = md / part.file(v.name)
        if not ((v.ships or v.name in picks) and part.name in v.parts and (path.exists() or failed_path(path).exists())):
            continue  # a failed file is chosen too, and refused by check_verified: never dropped without a word
        path = path if path.exists() else failed_path(path)
        if path.stat().st_size >= FLATBUFFER_LIMIT:
            say(f"  not shipped: {path.name} is over 2 GB (weights outside the flatbuffer; no metadata can be embedded)")
            continue
        out.append(v.name)
    return tuple(out)


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


def _golden_images(part: ExtractorPart, n: int, folder: Path) -> list[tuple[str, np.ndarray]]:
    """The first ``n`` held-out photos (full view) as 8-bit PNGs, each followed by its watermarked
    version for a model whose embedder weights are there; the inputs are exactly bytes / 255."""
    items = part.with_watermarks([i for i in heldout_items(None, part.size) if i.name.endswith(":full")][:n])
    out = []
    for it in items:
        u8 = to_uint8(it.pixels[0].transpose(1, 2, 0))
        name = it.name.replace(":", "_") + ".png"
        Image.fromarray(u8).save(folder / name)
        out.append((name, (u8.astype(np.float32) / 255.0)[None]))
    return out


def _same_outputs(a: dict[str, np.ndarray], b: dict[str, np.ndarray], dst: Path) -> dict[str, np.ndarray]:
    if a.keys() != b.keys() or not all(np.array_equal(a[k], b[k]) for k in a):
        raise PackagingError(f"{dst.name}: embedding metadata changed the outputs; not packaged")
    return b


def _refuse_failing(dst: Path, verdict: Verdict, where: str, verified: bool) -> None:
    """A verified file's x86 outputs on the golden vectors must pass the rule themselves: a bundle's self-test judges
    every other runtime by it (a file shipped unverified is labelled so and skipped by the self-tests)."""
    if verified and not verdict.passed:
        raise PackagingError(f"{dst.name} fails the rule against PyTorch on {where}: {'; '.join(verdict.failures)}; not packaged")


def _extractor_golden(
    part: Part, name: str, src: Path, dst: Path, images: list[tuple[str, np.ndarray]], stage: Path, pt: Any, verified: bool
) -> dict[str, Any]:
    """The file's outputs on the golden images (the x86 reference of every other runtime) with PyTorch's on the
    same images and the rule the self-tests judge them by."""
    a, b = part.opts.opener(src, 2), part.opts.opener(dst, 2)
    rule = rule_for(part.opts.spec, part.name, variant(name, part.name))
    vectors = []
    for i, (img, x) in enumerate(images):
        out = _same_outputs(a({"image": x}), b({"image": x}), dst)
        bits = out["bit_logits"].reshape(-1)
        vectors.append(
            {
                "image": img,
                "watermarked": is_watermarked(Path(img).stem),
                "mask_logit": float(out["mask_logit"].reshape(-1)[0]),
                "bit_logits": [float(t) for t in bits],
                "bits_hex": bits_hex(bits),
                "pytorch": {"mask_logit": float(pt["mask_logit"][i, 0]), "bit_logits": [float(t) for t in pt["bit_logits"][i]]},
            }
        )
    got = np.array([[v["mask_logit"], *v["bit_logits"]] for v in vectors])
    ref = np.array([[v["pytorch"]["mask_logit"], *v["pytorch"]["bit_logits"]] for v in vectors])
    verdict = judge_extractor(ref, got, [v["image"] for v in vectors], [v["watermarked"] for v in vectors], rule)
    _refuse_failing(dst, verdict, "the golden images", verified)
    return {"file": dst.name, "rule": rule.as_dict(), "output_step": output_steps(dst, "bit_logits"), "vectors": vectors}


def _embedder_covers(part: Part, images: list[tuple[str, np.ndarray]], stage: Path) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, cover (H, W, 3), message) of the embedder's golden vectors: the unwatermarked golden images and one at
    320 x 240, so the self-test runs the route."""
    (stage / "golden" / "embedder").mkdir(exist_ok=True)
    covers = [(n, x[0]) for n, x in images if "+wm" not in n][:2]
    odd_name = Path(covers[0][0]).stem + "_320x240.png"
    if not (stage / "golden" / odd_name).exists():
        Image.fromarray(to_uint8(covers[0][1])).resize((320, 240), Image.BILINEAR).save(stage / "golden" / odd_name)
    covers.append((odd_name, np.asarray(Image.open(stage / "golden" / odd_name), np.float32) / 255))
    return [(n, x, message_for(i, part.nbits, GOLDEN_MESSAGE_SEED).numpy()[0]) for i, (n, x) in enumerate(covers)]


def _embedder_pytorch(part: Part, images: list[tuple[str, np.ndarray]], stage: Path) -> dict[str, str]:
    """PyTorch's watermarked output on each golden cover and message (the official path, any size), saved once: {cover: npy}."""
    import torch

    module = part.load().module.eval()
    out = {}
    for img, x, m in _embedder_covers(part, images, stage):
        with torch.no_grad():
            want = module(torch.from_numpy(x).permute(2, 0, 1)[None].float(), torch.from_numpy(m)[None].long())[0].permute(1, 2, 0).numpy()
        npy = f"golden/embedder/pytorch-{Path(img).stem}.npy"
        np.save(stage / npy, want.astype(np.float32))
        out[img] = npy
    return out


def _embedder_golden(
    part: Part, name: str, src: Path, dst: Path, images: list[tuple[str, np.ndarray]], stage: Path, pt: Any, verified: bool
) -> dict[str, Any]:
    """Each golden cover and message through the file by the route ``run_embedder.py`` follows (the x86 reference of
    every other runtime), PyTorch's output on the same, and the rule the self-tests judge them by."""
    route = read_json(part.opts.model_dir / part.description_file)["route"]
    rule = rule_for(part.opts.spec, part.name, variant(name, part.name))
    a, b = part.opts.opener(src, 2), part.opts.opener(dst, 2)
    vectors = []
    for img, x, m in _embedder_covers(part, images, stage):
        wa, wb = route_embed(a, route, part.size, x, m), route_embed(b, route, part.size, x, m)
        _same_outputs({"w": wa}, {"w": wb}, dst)
        _refuse_failing(dst, judge_embedder(x, np.load(stage / pt[img]), wb, rule), f"the golden cover {img}", verified)
        npy = f"golden/embedder/{name}-{Path(img).stem}.npy"
        np.save(stage / npy, wb)
        vectors.append(
            {
                "image": img,
                "message": "".join(str(int(t)) for t in m),
                "message_hex": message_hex(m),
                "watermarked": npy,
                "pytorch": pt[img],
                # The same arrays for readers without numpy (Android): raw little-endian float32, row-major, this shape.
                "shape": list(wb.shape),
                "watermarked_f32": _raw_f32(stage, npy, wb),
                "pytorch_f32": _raw_f32(stage, pt[img], np.load(stage / pt[img])),
            }
        )
    return {"file": dst.name, "rule": rule.as_dict(), "vectors": vectors}


def _raw_f32(stage: Path, npy: str, arr: np.ndarray) -> str:
    """``arr`` beside its ``.npy`` as raw little-endian float32 (``.f32``, row-major): the bundle path."""
    raw = npy.removesuffix(".npy") + ".f32"
    np.ascontiguousarray(arr, dtype="<f4").tofile(stage / raw)
    return raw


def _extractor_pytorch(part: Part, images: list[tuple[str, np.ndarray]], stage: Path) -> dict[str, np.ndarray]:
    """PyTorch's extractor outputs on the golden images, once for every file."""
    inputs = InputSet([n for n, _ in images], [{"image": x} for _, x in images], Tally(), [])
    return part.reference(inputs).outputs


# The rule (models/gate.py) and its figures (core/metrics.py) ship beside the runners (each self-test judges by it), and
# the one message format (core/message.py) they print and read.
RULE_FILES = ("models/gate.py", "core/metrics.py", "core/message.py")
GOLDEN: dict[str, tuple[str, Callable[..., dict[str, Any]], Callable[..., Any], tuple[str, ...]]] = {
    # part -> (golden.json, writer, PyTorch's outputs on the golden inputs, files (from the repository root) the bundle's runner needs)
    "extractor": (
        "golden/golden.json",
        _extractor_golden,
        _extractor_pytorch,
        ("runtime/run_extractor.py", "runtime/litert_runner.py", *RULE_FILES),
    ),
    "embedder": (
        "golden/embedder/golden.json",
        _embedder_golden,
        _embedder_pytorch,
        ("runtime/run_embedder.py", "runtime/litert_runner.py", "runtime/route.py", *RULE_FILES),
    ),
}
REPORT_KEYS = ("passed", "num_images", "band", "checks", "failures")


def _ship_part(
    part: Part, names: tuple[str, ...], reports: dict[str, tuple[Path, dict]], stage: Path, images: list, desc: dict[str, Any]
) -> dict[str, Any]:
    """The part's files (description as metadata), golden vectors, reports and runner files into ``stage``;
    a file shipped with --allow-unverified keeps the name it has (``.failed.tflite`` when it failed)."""
    md = part.opts.model_dir
    golden_file, writer, pytorch, runtime_files = GOLDEN[part.name]
    shipped, golden = {}, {}
    pt = pytorch(part, images, stage)
    for v in names:
        src, rep = reports[v]
        dst = stage / src.name
        io = part.opts.opener(src, 2).io()
        integer_io = io if io and any(d["dtype"] != "float32" for d in [*io["inputs"], *io["outputs"]]) else None
        embed_metadata(
            src,
            dst,
            {
                "model_id": desc["model_id"],
                "part": part.name,
                "variant": v,
                "nbits": part.nbits,
                "random_init": desc["random_init"],
                "contract": part.contract.describe(part.size, part.nbits, desc.get("route", {}).get("residual_channels")),
                "integer_io": integer_io,
            },
        )
        golden[v] = writer(part, v, src, dst, images, stage, pt, bool(rep.get("passed")))
        shipped[v] = {
            "file": dst.name,
            "size_bytes": dst.stat().st_size,
            "verified_sha256": rep["sha256"] if rep.get("passed") else None,  # of the file verified (before its metadata)
            "sha256": sha256_file(dst),
            "verification": {k: rep[k] for k in (*REPORT_KEYS, *part.summary_keys) if k in rep},
            "integer_io": integer_io,
        }
        if not rep.get("passed"):
            shipped[v]["UNVERIFIED"] = f"{rep.get('status', 'failed')}: shipped with --allow-unverified"
        for ext in ("json", "md"):
            if (md / f"{part.report(v)}.{ext}").exists():
                shutil.copy(md / f"{part.report(v)}.{ext}", stage / "reports")
    write_json(stage / golden_file, {"model_id": desc["model_id"], "nbits": part.nbits, "variants": golden})
    for f in runtime_files:
        shutil.copy(ROOT / f, stage / Path(f).name)
    for extra in (
        f"{part.prefix}quantize.json",
        f"{part.prefix}bench.json",
        f"{part.prefix}bench.md",
        f"op-error-{part.prefix}int8.md",
        f"op-error-{part.prefix}int8.png",
    ):
        if (md / extra).exists():
            shutil.copy(md / extra, stage / "reports")
    return shipped


@exclusive_stage
def build_bundle(
    opts: RunOptions,
    variants: tuple[str, ...] | None = None,
    dist: Path = Path("dist"),
    reverify: bool = False,
    golden: int = 3,
    embedder_variants: tuple[str, ...] | None = None,
    arm_cpus: tuple[str, ...] = (),
) -> StageSummary:
    md = opts.model_dir
    if opts.spec.card.extractor_config is None:
        raise PackagingError(
            f"card {opts.spec.card_path.name} has no extractor: a bundle holds the extractor, with the embedder beside it; "
            "an embedder-only bundle is not supported (the embedder files and their reports are in the model directory)"
        )
    extractor = ExtractorPart(opts)
    md.require(extractor.description_file, "convert")
    chosen: dict[str, tuple[Part, tuple[str, ...]]] = {"extractor": (extractor, to_ship(extractor, variants))}
    if opts.spec.card.has_embedder:
        embedder = EmbedderPart(opts)
        if names := to_ship(embedder, embedder_variants):
            chosen["embedder"] = (embedder, names)
    if not chosen["extractor"][1]:
        raise PackagingError(
            f"no extractor file to ship in {md.path}: run `make convert MODEL={opts.spec.name}` (and `make quantize`) first"
        )
    reports = {p: {v: check_verified(part, v, reverify, opts.allow_unverified) for v in names} for p, (part, names) in chosen.items()}
    unverified = [src.name for files in reports.values() for src, rep in files.values() if not rep.get("passed")]
    dist.mkdir(parents=True, exist_ok=True)
    final = dist / opts.spec.name
    stage = Path(tempfile.mkdtemp(prefix=f".{opts.spec.name}-", dir=dist))
    stage.chmod(0o755)
    try:
        shipped, images, manifest = _fill(stage, opts, chosen, reports, unverified, golden, arm_cpus)
        _replace(final, stage)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    rows = [
        (chosen[p][0].file(v), f"{r['size_bytes'] / 1e6:.1f} MB, {chosen[p][0].one_line(r['verification'])}")
        for p, files in shipped.items()
        for v, r in files.items()
    ]
    rows += [(f, "UNVERIFIED: shipped with --allow-unverified") for f in unverified]
    rows += [
        ("golden vectors", f"{len(images)} images; " + ", ".join(f"{p}: {len(n)} files" for p, (_, n) in chosen.items())),
        ("files", str(len(manifest["files"]) + 1)),
        ("bundle", str(final)),
    ]
    return StageSummary("package", opts.spec.name, False, rows, unverified)


ANDROID_FILES = ("DetectWatermark.kt", "WatermarkImage.kt", "WatermarkMessage.kt")
GPU_RULE = "a GPU delegate computes in float16 or float32: the float file (fp16 where shipped, else fp32); not measured here"
WEB_TARGET = "web page (LiteRT.js)"


def ship_advice(part: Part, shipped: dict[str, Any]) -> dict[str, Any]:
    """Which of the part's shipped files to use where: the ship table's picks (measured by ``make bench``) among them,
    the GPU delegate's float file by rule, and, without a benchmark, the verified INT8 file by rule."""
    files = {v: f["file"] for v, f in shipped.items() if not f.get("UNVERIFIED")}
    picks = {t: files[v] for t, v in bench_picks(part).items() if v in files}
    measured = bool(picks)
    if not measured:
        default = next((v for v in ("int8", "int8-dynamic", "fp32") if v in files), None)
        picks = {t: files[default] for t in ("flagship phone", "mid-range phone", "low-RAM phone", WEB_TARGET)} if default else {}
    gpu = next((files[v] for v in ("fp16", "fp32") if v in files), None)
    return {
        "cpu_and_web": picks,
        "measured": measured,
        "why": "the ship table of make bench (reports/" + f"{part.prefix}bench.md)"
        if measured
        else "no benchmark was run before packaging (make bench, then make package): integer kernels first, verified against PyTorch; speed not measured",
        "phone GPU (delegate)": gpu,
        "gpu_rule": GPU_RULE,
    }


def _signature(files: list[Path]) -> str:
    """The one signature name of the shipped files (``serving_default`` from litert-torch); PackagingError if they differ."""
    from ai_edge_litert.interpreter import Interpreter

    names = {f.name: tuple(Interpreter(model_path=str(f)).get_signature_list()) for f in files}
    found = set(names.values())
    if len(found) != 1 or len(next(iter(found))) != 1:
        raise PackagingError(f"the bundle's files do not share one signature: {names}")
    return next(iter(found))[0]


def _fill(
    stage: Path, opts: RunOptions, chosen: dict, reports: dict, unverified: list[str], golden: int, arm_cpus: tuple[str, ...]
) -> tuple[dict[str, Any], list, dict[str, Any]]:
    """The bundle's files in the staging folder ``stage``: golden vectors, each part's files with their reports,
    model.json, the README, the native runner, the manifest and the self-tests. (shipped, golden images, manifest)."""
    md = opts.model_dir
    extractor = chosen["extractor"][0]
    desc = read_json(md.require(extractor.description_file, "convert"))
    (stage / "golden").mkdir()
    (stage / "reports").mkdir()
    images = _golden_images(extractor, golden, stage / "golden")
    model = {k: desc[k] for k in ("model_id", "description", "nbits", "architecture", "num_params", "input", "outputs", "random_init")}
    model["decoding"] = "bit i = bit_logits[i] > 0; P(bit i = 1) = sigmoid(bit_logits[i]); hex packs bit 0 as the MSB of byte 0"
    model["message_format"] = MESSAGE_FORMAT
    model["unverified_files"] = unverified
    shipped = {"extractor": _ship_part(extractor, chosen["extractor"][1], reports["extractor"], stage, images, desc)}
    model["variants"] = shipped["extractor"]
    if "embedder" in chosen:
        part, names = chosen["embedder"]
        edesc = read_json(md.require(part.description_file, "embedder"))
        shipped["embedder"] = _ship_part(part, names, reports["embedder"], stage, images, edesc)
        model["embedder"] = {
            **{k: edesc[k] for k in ("embedder", "contract", "route", "random_init", "num_params")},
            "variants": shipped["embedder"],
        }
    if "embedder" in shipped:
        model["embedder"]["route_graphs"] = _ship_route_graphs(chosen["embedder"][0], stage, images[0][1][0])
    # The Kotlin examples: detection, the pixels and message helpers, and embedding where there is an embedder.
    (stage / "android").mkdir()
    for kt in ANDROID_FILES + (("EmbedWatermark.kt",) if "embedder" in shipped else ()):
        shutil.copy(Path(__file__).parent / "android" / kt, stage / "android" / kt)
    # The signature every file is called through (Interpreter.getSignatureRunner / get_signature_runner).
    model["signature"] = _signature([stage / f["file"] for files in shipped.values() for f in files.values()])
    model["detection"] = {"pvalue_threshold": DETECTION_PVALUE, "mask_trained": opts.spec.card.verification.mask_trained}
    model["ship"] = {p: ship_advice(part, shipped[p]) for p, (part, _) in chosen.items() if p in shipped}
    if (md / "inspect.md").exists():
        shutil.copy(md / "inspect.md", stage / "reports")
    (stage / "native").mkdir()
    shutil.copy(RUNTIME / "native" / "litert_run.c", stage / "native" / "litert_run.c")
    shutil.copy(stb_dir() / "stb_image.h", stage / "native" / "stb_image.h")  # decodes --image (public domain)
    write_json(stage / "model.json", model)
    write_text(stage / "README.md", _readme(model))
    manifest = _manifest(stage, desc, unverified)
    scripts = ["run_extractor.py"] + (["run_embedder.py"] if "embedder" in shipped else [])
    manifest["golden_checked_on"] = _selftests(stage, scripts, arm_cpus)
    write_json(stage / "manifest.json", manifest)
    return shipped, images, manifest


def _ship_route_graphs(part: Part, stage: Path, cover: np.ndarray) -> list[dict[str, Any]]:
    """The route graphs ``make route-graph`` verified for this model (package/route_graphs.py), each with its golden
    vector: PyTorch's residual of the golden frame, for a fixed message."""
    run = part.torch_runner(part.load(), ("residual",))
    bits = np.random.default_rng(0).integers(0, 2, (1, part.nbits)).astype(np.float32)

    def residual_of(frame: np.ndarray) -> np.ndarray:
        small = route_resize(frame, part.size, part.size)
        return run({"image": small[None], "message": bits})["residual"][0]

    return ship_route_graphs(part.opts.model_dir.path, stage, cover, residual_of)


def _manifest(stage: Path, desc: dict[str, Any], unverified: list[str]) -> dict[str, Any]:
    """manifest.json (written): every file of the staged bundle by sha256, and where it came from."""
    files = sorted(p for p in stage.rglob("*") if p.is_file())
    manifest = {
        "model_id": desc["model_id"],
        "random_init": desc["random_init"],
        "unverified_files": unverified,
        "checkpoint_sha256": desc.get("checkpoint_sha256"),
        "calibration_manifest_sha256": sha256_file(ROOT / "calibration_data" / "manifest.json"),
        "tool_versions": tool_versions(),
        "git_commit": git_commit(),
        "files": {str(p.relative_to(stage)): sha256_file(p) for p in files},
    }
    write_json(stage / "manifest.json", manifest)
    return manifest


def _selftests(stage: Path, scripts: list[str], arm_cpus: tuple[str, ...]) -> list[dict[str, Any]]:
    """Where the golden vectors were checked: here (they were computed here), by the bundle's own self-tests through
    the LiteRT C library and, with --arm, under each emulated ARM64 CPU (runtime/arm.py); not a file of the list."""
    checked = [{"cpu": machine_description(), "kernels": "x86-64 XNNPACK (golden vectors computed here)", "passed": True}]
    with working("the bundle's self-tests through the LiteRT C library (litert_run)"):
        checked.append(native_selftests(stage, scripts))
    if arm_cpus:
        from videoseal_litert.runtime.arm import bundle_selftests, ensure_toolchain

        with working("setting up ARM64 emulation (once per machine)"):
            tc = ensure_toolchain()
        with working(f"the bundle's self-tests on {len(arm_cpus)} emulated ARM64 CPU(s)"):
            checked += bundle_selftests(stage, arm_cpus, scripts, tc)
    return checked


def _replace(final: Path, stage: Path) -> None:
    """The staged bundle in place of ``final`` (the old one moved aside first, removed after)."""
    if final.exists():
        old = final.with_name(f".{final.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
        stage.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        stage.rename(final)


def native_selftests(bundle: Path, scripts: list[str]) -> dict[str, Any]:
    """The bundle's self-tests through ``litert_run`` built for this machine (the x86-64 wheel's libLiteRt.so);
    NativeRunError with the failing vectors when one fails."""
    from importlib.metadata import version

    exe = build_x86()
    for script in scripts:
        # --verified-only: a file shipped with --allow-unverified is named, not judged (the bundle says so everywhere).
        cmd = [sys.executable, script, "--selftest", "--verified-only", "--native", str(exe)]
        r = subprocess.run(cmd, cwd=bundle, capture_output=True, text=True)
        if r.returncode != 0:
            fails = [ln for ln in r.stdout.splitlines() if ln.startswith("FAIL")][:5]
            last = (r.stdout.strip().splitlines() or [r.stderr.strip()[-300:]])[-1]
            raise NativeRunError(f"{script} --selftest through the LiteRT C library: {last}; " + "; ".join(fails))
    return {
        "cpu": machine_description(),
        "kernels": f"LiteRT C library libLiteRt.so (ai-edge-litert {version('ai-edge-litert')}, x86-64) via native/litert_run.c",
        "selftests": scripts,
        "passed": True,
    }


def _ship_lines(model: dict[str, Any]) -> str:
    """The README's first section: which file to ship for phone CPU, phone GPU and the web, per part."""
    lines = [
        "| part | phone CPU (flagship / mid-range / low-RAM) | phone GPU (delegate) | web page (LiteRT.js) | chosen by |",
        "|---|---|---|---|---|",
    ]
    for part, a in model.get("ship", {}).items():
        cpu = a["cpu_and_web"]
        phones = " / ".join(f"`{cpu[t]}`" if t in cpu else "-" for t in ("flagship phone", "mid-range phone", "low-RAM phone"))
        gpu = f"`{a['phone GPU (delegate)']}`" if a["phone GPU (delegate)"] else "-"
        web = f"`{cpu[WEB_TARGET]}`" if WEB_TARGET in cpu else "-"
        lines.append(f"| {part} | {phones} | {gpu} | {web} | {a['why']} |")
    return "\n".join(lines) + f"\n\nGPU: {GPU_RULE}. Every file listed passed verification against PyTorch (`reports/`)."


def _route_graph_text(emb: dict[str, Any]) -> str:
    """The README's paragraph on the route graphs the bundle ships (none: how to make them)."""
    graphs = emb.get("route_graphs") or []
    if not graphs:
        return "\nNo route graph is shipped: `make route-graph` (then `make package`) adds the route at 720p and 1080p as LiteRT graphs.\n"
    names = ", ".join(f"`{g['file']}`" for g in graphs)
    return f"""
The route at a fixed size is also a LiteRT graph: {names}. Inputs `frame` (1, H, W, 3) float32 RGB in [0, 1] and
`residual` (1, 256, 256, C), the embedder's `residual` output for that frame resized to 256 x 256; output `watermarked`
(1, H, W, 3): the residual grown to the frame, the JND heatmap, the blend and the clamp in one call
(`RouteGraph` in `android/EmbedWatermark.kt`). Each was verified against `route.py` by the rule; its golden vector
(`golden/route/`: the frame as PNG, the residual as raw float32, the output rounded to 8 bits as PNG) is checked by
`run_embedder.py --selftest` (every value within one level).
"""


def _readme(model: dict[str, Any]) -> str:
    warn = "**RANDOM WEIGHTS: this bundle exercises the pipeline; it is not a watermark extractor.**\n\n" if model["random_init"] else ""
    if model.get("unverified_files"):
        warn += f"**UNVERIFIED FILES (packaged with --allow-unverified): {', '.join(model['unverified_files'])}. Do not ship them.**\n\n"
    inp, n = model["input"], model["nbits"]
    emb = model.get("embedder")
    emb_text = ""
    if emb:
        steps = "\n".join(f"    {i + 1}. {t}" for i, t in enumerate(emb["route"]["steps"]))
        emb_text = f"""
### Embedder

Inputs `image` (1, 256, 256, 3) RGB NHWC float32 in [0, 1] and `message` (1, {n}) float32 0.0 / 1.0 (bit i = message[i]);
outputs `watermarked` (1, 256, 256, 3) in [0, 1] (residual, attenuation, blend and clamp in the graph) and `residual`.
For an image of another size, the official route (`route.py`, `android/EmbedWatermark.kt`):

{steps}

    python run_embedder.py embedder-int8.tflite photo.jpg --bits e07ff66e5007 --out marked.png   # hex (or {n} characters of 0/1)
    python run_embedder.py --selftest                                       # embedder golden vectors by the rule
{_route_graph_text(emb)}"""
    return f"""# {model["model_id"]} watermark bundle

{warn}{model["description"]}.

## Which file to ship

{_ship_lines(model)}

## Calling a file

Every `.tflite` here is called through its signature `{model.get("signature", "serving_default")}` (LiteRT
`Interpreter.runSignature` / `get_signature_runner`); its description is in `model.json` and embedded in each file as
metadata `{METADATA_NAME}`; hashes in `manifest.json`.

### Extractor

Input `image`: {inp["channel_order"]} {inp["layout"]} {inp["shape"]} {inp["dtype"]} in {inp["range"]} (bytes / 255), row-major
(y, x, channel). Another size: {inp["resize_rule"]}. Outputs `mask_logit` (1, 1) and `bit_logits` (1, {n}).
A message is {n} bits: {model["message_format"]}. A message is detected when as many of its bits are read back as
would happen by chance with p < {model["detection"]["pvalue_threshold"]:g} (binomial, 1/2 a bit); the mask logit
{"is a detection score too (the model was trained for it)" if model["detection"]["mask_trained"] else "was not trained: do not use it as a verdict"}.

    pip install ai-edge-litert numpy pillow
    python run_extractor.py int8.tflite photo.png      # mask logit and the message read (hex)
    python run_extractor.py --selftest                 # golden vectors by the rule (gate.py), exits 1 on a failure
    python run_extractor.py int8.tflite --info         # embedded description
{emb_text}
### Android (Kotlin)

`android/DetectWatermark.kt` (detection), `android/EmbedWatermark.kt` (embedding at any size, where the bundle has an
embedder), `android/WatermarkImage.kt` (Bitmap in and out with alpha kept, the route's resize) and
`android/WatermarkMessage.kt` (`parseMessage` takes hex or 0/1, `messageHex`), against the LiteRT Interpreter API.

### Golden vectors (check a runtime)

`golden/golden.json`: each golden image (`golden/*.png`, 8-bit RGB at the file's size: input = bytes / 255) with this
file's x86 outputs and PyTorch's, as JSON numbers. `golden/embedder/golden.json`: each cover and message (`message` as
0/1, `message_hex`) with the watermarked output as raw little-endian float32, row-major, of `shape` (`*.f32`; the same
arrays as `.npy`). The self-tests judge a runtime by the project's rule (`gate.py`, with `metrics.py`): each file's
decisions against PyTorch's, and its difference from the x86 outputs at most two output steps of an integer output
(1% of PyTorch's RMS of a float one). Files the bundle marks unverified are refused (`--allow-unverified` runs them,
`--verified-only` skips them by name).

## Native (Android, Linux): the LiteRT C library

`native/litert_run.c` runs any file of this bundle through the LiteRT C API (`libLiteRt.so`, which the `ai-edge-litert`
wheel ships for x86-64 and aarch64; an Android app links the same library through JNI). Build it and read a photo:

    LIB=$(python -c "import ai_edge_litert, os; print(os.path.dirname(ai_edge_litert.__file__))"); cc -O2 -isystem native native/litert_run.c -o litert_run -L$LIB -l:libLiteRt.so -Wl,-rpath,$LIB -lm
    ./litert_run int8.tflite --image photo.jpg out/   # one JSON line: "runtime", "mask_logit", "message" (hex)

It reads a PNG or JPEG as `run_extractor.py` does: EXIF orientation applied, alpha dropped, grayscale repeated to RGB,
then resized to the model's input with torch's antialiased bilinear resize (the official route's); `out/image.f32` is
the input the model got, `out/mask_logit.f32` and `out/bit_logits.f32` its outputs. PNG decodes to Pillow's pixels;
JPEG decoders differ by about one level (`native/stb_image.h` here, libjpeg-turbo in Pillow and Android's
BitmapFactory). The golden vectors through it (`--native` makes the self-test call it; its lines say `native LiteRT C
library`), and raw tensors in and out:

    python run_extractor.py --selftest --native ./litert_run
    ./litert_run int8.tflite IN_DIR OUT_DIR     # IN_DIR/image.f32: the input as raw float32 (1, 256, 256, 3), row-major
                                                # -> OUT_DIR/mask_logit.f32, OUT_DIR/bit_logits.f32
"""
