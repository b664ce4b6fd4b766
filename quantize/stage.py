"""Stage 5: fp32.tflite -> int8, int8-full, int8-dynamic and fp16 variants, each verified.

Starts from the FP32 artifact (never re-converts). Calibration runs once, on the calibration
set only; verification and the per-op error report use the disjoint held-out set. When ``int8``
misses its gate, the accuracy-driven fallback keeps the ops with the worst output SQNR in float,
as few as needed, and records which and what it cost.
"""

from __future__ import annotations

import gc
import hashlib
import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from videoseal_litert.convert.artifacts import atomic_path, machine_description, read_json, write_json
from videoseal_litert.convert.bench import interleaved_medians
from videoseal_litert.convert.console import progress, working
from videoseal_litert.convert.load import sha256_file
from videoseal_litert.convert.runtime import delegation_report
from videoseal_litert.convert.stages import RunOptions, StageSummary, exclusive_stage, is_current, require_artifact
from videoseal_litert.convert.tflite import FLATBUFFER_LIMIT
from videoseal_litert.convert.verify import reference_logits, verify_variant
from videoseal_litert.models.errors import UsageError, VerificationError
from videoseal_litert.models.families import Int8Policy
from videoseal_litert.quantize.calibrate import calibrate
from videoseal_litert.quantize.op_error import op_errors, write_op_report
from videoseal_litert.quantize.partition import quantize_partitioned
from videoseal_litert.quantize.recipes import VARIANTS, build_quantizer

log = logging.getLogger(__name__)

OP_ERROR_IMAGES = 6
MAX_FALLBACK_ROUNDS = 6


def io_params(path: Path) -> dict[str, Any]:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path))

    def desc(d: dict) -> dict[str, Any]:
        scale, zp = d["quantization"]
        out = {"name": d["name"], "dtype": d["dtype"].__name__}
        if scale:
            out.update(scale=float(scale), zero_point=int(zp))
        return out

    return {"input": [desc(d) for d in it.get_input_details()], "outputs": [desc(d) for d in it.get_output_details()]}


def quantize_to(fp32: Path, out: Path, variant: str, qsvs: dict | None, keep_float: list[str], io_int8: bool, policy: Int8Policy) -> None:
    """Quantize ``fp32`` to ``out`` (atomically) with the family's policy, ``keep_float`` ops left float."""
    q = build_quantizer(str(fp32), variant, policy, keep_float, io_int8)
    with working(f"quantizing {out.name}"):
        result = q.quantize(qsvs if q.need_calibration else None, enable_progress_report=False)
    with atomic_path(out) as tmp:
        tmp.write_bytes(result.quantized_model)


def dir_fingerprint(folder: Path | None) -> str | None:
    """sha256 over every file's relative name and sha256: a changed, added or removed image reruns the stage."""
    if folder is None:
        return None
    if not folder.is_dir():
        raise UsageError(f"CALIB={folder} is not a directory of images")
    h = hashlib.sha256()
    for p in sorted(q for q in folder.rglob("*") if q.is_file()):
        h.update(f"{p.relative_to(folder).as_posix()}:{sha256_file(p)}\n".encode())
    return h.hexdigest()


@exclusive_stage
def stage_quantize(
    opts: RunOptions, calib_dir: Path | None = None, io_int8: bool = False, variants: tuple[str, ...] = VARIANTS
) -> StageSummary:
    md, t0 = opts.model_dir, time.time()
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants:
        raise UsageError(f"unknown variant(s) {', '.join(map(repr, unknown)) or '(none given)'}; choose from {', '.join(VARIANTS)}")
    fp32 = require_artifact(md, "fp32.tflite", "convert")
    items = opts.verify_items()
    inputs = {
        **opts.inputs(),
        "fp32_sha256": sha256_file(fp32),
        "calibration_manifest_sha256": sha256_file(Path(__file__).resolve().parent.parent / "calibration_data" / "manifest.json"),
        "calib_dir": str(calib_dir) if calib_dir else None,
        "calib_dir_sha256": dir_fingerprint(calib_dir),
        "io_int8": io_int8,
        "variants": list(variants),
        "thresholds": {v: asdict(opts.spec.thresholds[v]) for v in variants},
        "images": [f"{i.name}:{i.sha256}" for i in items],
        "calibration_images": opts.spec.calibration_images,
        "max_part_bytes": opts.max_part_bytes,
    }
    if is_current(opts, "quantize", inputs):
        return StageSummary("quantize", opts.spec.name, True, _rows(read_json(md / "quantize.json")))
    partitioned = opts.max_part_bytes is not None or fp32.stat().st_size >= FLATBUFFER_LIMIT
    img_size = opts.spec.card.config.img_size
    qsvs, counts, parts_info = None, {}, None
    if partitioned:
        if io_int8:
            raise UsageError("IO=int8 is not available for models quantized in parts (over 2 GB); use int8-full for integer IO")
        counts, parts_info = quantize_partitioned(opts, variants, calib_dir)
    else:
        if {"int8", "int8-full"} & set(variants):
            log.info("calibrating on the calibration set%s", f" + {calib_dir}" if calib_dir else "")
            qsvs, counts = calibrate(build_quantizer(str(fp32), "int8-full"), fp32, opts.calibration_stream(calib_dir, counts), counts)
            log.info("calibration: %s", counts)
    # PyTorch reference once for all variants; the model is freed before any interpreter loads.
    loaded = opts.load()
    reference = reference_logits(loaded.module, items)
    random_init = loaded.random_init
    del loaded
    gc.collect()
    results: dict[str, Any] = {}
    failures: list[str] = []
    fp32_size = fp32.stat().st_size
    policy = opts.family.int8
    for variant in progress(variants, desc="quantizing and verifying variants"):
        path = md / f"{variant}.tflite"
        keep: list[str] = []
        if not partitioned:
            log.info("quantizing %s", variant)
            quantize_to(fp32, path, variant, qsvs, keep, io_int8 and variant == "int8", policy)
        entry: dict[str, Any] = {"file": path.name}
        try:
            rep = verify_variant(
                opts.spec.name, variant, reference, path, opts.spec.thresholds[variant], random_init, md.path, img_size, opts.threads
            )
        except VerificationError as e:
            if variant != "int8" or partitioned:
                failures.append(str(e))
                rep = None
            else:
                rep, keep, cost = _fallback(opts, fp32, path, qsvs, reference, random_init, items, io_int8, str(e))
                entry["fallback"] = cost
                if rep is None:
                    failures.append(str(e))
        if variant in ("int8", "int8-full") and not partitioned:
            rows = op_errors(fp32, path, items[:OP_ERROR_IMAGES], opts.threads)
            write_op_report(rows, md.path, variant, [i.name for i in items[:OP_ERROR_IMAGES]], opts.spec.name)
        deleg = delegation_report(path, opts.threads)
        entry.update(
            size_bytes=path.stat().st_size,
            size_ratio_to_fp32=round(path.stat().st_size / fp32_size, 4),
            passed=bool(rep and rep.passed),
            bit_agreement=rep.bit_agreement if rep else None,
            mask_agreement=rep.mask_agreement if rep else None,
            sqnr_db=rep.sqnr_db if rep else None,
            kept_float_by_fallback=keep,
            xnnpack={k: deleg[k] for k in ("num_ops", "num_partitions", "num_not_delegated", "not_delegated")},
            io=io_params(path),
        )
        results[variant] = entry
    summary = {
        "model_id": opts.spec.name,
        "random_init": random_init,
        "calibration": counts,
        "fp32_size_bytes": fp32_size,
        "partitioned": parts_info,
        "variants": results,
    }
    write_json(md / "quantize.json", summary)
    if failures:
        raise VerificationError("; ".join(failures))
    outs = [f"{v}.tflite" for v in variants] + [f"verify-{v}.json" for v in variants] + ["quantize.json"]
    md.record("quantize", inputs, outs, t0)
    return StageSummary("quantize", opts.spec.name, False, _rows(summary))


def _fallback(opts, fp32, path, qsvs, reference, random_init, items, io_int8, first_error):
    """Keep the worst ops float, doubling how many each round, until int8 passes its gate."""
    log.warning("int8 missed its gate (%s); trying the accuracy-driven fallback", first_error)
    rows = op_errors(fp32, path, items[:OP_ERROR_IMAGES], opts.threads)
    static = opts.family.int8.static
    ranked = [r["tensor"] for r in rows if r["sqnr_db"] is not None and r["op"] in static]
    first = path.with_name(f".{path.name}.first-attempt.tmp")
    first.write_bytes(path.read_bytes())
    try:
        rep, keep = _fallback_rounds(opts, fp32, path, qsvs, reference, random_init, io_int8, ranked)
        cost = {
            "kept_float": keep,
            "passed": rep is not None,
            "size_bytes_before": first.stat().st_size,
            "size_bytes_after": path.stat().st_size,
        }
        med = interleaved_medians({"before": first, "after": path}, opts.threads)
        cost.update(
            latency_ms_before=med["before"],
            latency_ms_after=med["after"],
            latency_ratio_after_to_before=round(med["after"] / med["before"], 3),
            latency_note=f"median of 10 interleaved runs at {opts.threads} thread(s) on {machine_description()}",
        )
        log.info("fallback cost: %s", cost)
    finally:
        first.unlink(missing_ok=True)
    return rep, keep, cost


def _fallback_rounds(opts, fp32, path, qsvs, reference, random_init, io_int8, ranked):
    n = 1
    for _ in range(MAX_FALLBACK_ROUNDS):
        keep = ranked[:n]
        quantize_to(fp32, path, "int8", qsvs, keep, io_int8, opts.family.int8)
        try:
            rep = verify_variant(
                opts.spec.name,
                "int8",
                reference,
                path,
                opts.spec.thresholds["int8"],
                random_init,
                opts.model_dir.path,
                opts.spec.card.config.img_size,
                opts.threads,
            )
            log.info("int8 passes with %d op(s) kept float: %s", len(keep), keep)
            return rep, keep
        except VerificationError:
            if n >= len(ranked):
                break
            n = min(2 * n, len(ranked))
    return None, ranked[:n]


def _rows(s: dict[str, Any]) -> list[tuple[str, str]]:
    rows = [("calibration images", str(s["calibration"].get("used", "-")))]
    for v, r in s["variants"].items():
        sq = "exact" if r["sqnr_db"] is None else f"{r['sqnr_db']:.1f} dB"
        ba = "-" if r["bit_agreement"] is None else f"{r['bit_agreement']:.2%}"
        rows.append(
            (
                v,
                f"{'PASS' if r['passed'] else 'FAIL'}  {r['size_ratio_to_fp32']:.3f}x size  bits {ba}  SQNR {sq}  "
                f"not delegated {r['xnnpack']['num_not_delegated']}/{r['xnnpack']['num_ops']}"
                + (f"  kept float {len(r['kept_float_by_fallback'])}" if r["kept_float_by_fallback"] else ""),
            )
        )
    return rows
