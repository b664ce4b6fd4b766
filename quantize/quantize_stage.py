"""Stage 5: a part's fp32 file -> its quantized variants (rows of ``models/variants.py``), each verified.

Starts from the FP32 artifact (never re-converts). Calibration runs once, on the part's calibration
inputs only. Every automatic choice is made on the photo pool's validation split: the accuracy
control (``control.py``) and, for a variant whose row allows it, the fallback (when the file fails
the rule of ``models/gate.py`` there, the ops with the worst output SQNR are kept float, as few as
needed, and which and what it cost are recorded). Then each file is verified on the held-out
(evaluation) views, which choose nothing; a file that fails, or misses an accuracy target the user
set, is kept as ``<name>.failed.tflite`` and fails the stage. A float file over the 2 GB flatbuffer
limit is quantized in parts (``partition.py``), where the accuracy control does not run: int4-mixed
and a user's target are refused there by name.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from videoseal_litert.convert.bench import interleaved_medians
from videoseal_litert.convert.options import RunOptions
from videoseal_litert.convert.parts import InputSet, Part, Reference
from videoseal_litert.convert.stages import StageSummary, exclusive_stage, is_current, say_rejected
from videoseal_litert.convert.tflite import FLATBUFFER_LIMIT
from videoseal_litert.convert.verify import failed_path, quarantine, run_file, verify_file
from videoseal_litert.core.artifacts import atomic_path, collect_if_large, machine_description, read_json, sha256_file, write_json
from videoseal_litert.core.console import progress, working
from videoseal_litert.core.errors import UsageError, VerificationError
from videoseal_litert.core.images import Tally
from videoseal_litert.models.families import QuantPolicy
from videoseal_litert.models.variants import Variant, default_variants, rule_for, variant
from videoseal_litert.quantize.calibrate import calibrate_part
from videoseal_litert.quantize.op_error import op_errors, write_op_report
from videoseal_litert.quantize.partition import PieceSource, quantize_partitioned
from videoseal_litert.quantize.recipes import build_quantizer

log = logging.getLogger(__name__)

OP_ERROR_IMAGES = 4  # the validator's per-tensor metrics cost about 1.5 s per input on a 15 MB model
MAX_FALLBACK_ROUNDS = 6
DEFAULT_TARGET_AGREEMENT = 0.999
DEFAULT_TARGET_WATERMARK_SNR_DB = 10.0
CALIBRATION_MANIFEST = Path(__file__).resolve().parent.parent / "calibration_data" / "manifest.json"


def quantize_to(fp32: Path, out: Path, row: Variant, qsvs: dict | None, keep_float: list[str], io_int8: bool, policy: QuantPolicy) -> None:
    """Quantize ``fp32`` to ``out`` (atomically) as ``row`` with the family's policy, ``keep_float`` ops left float."""
    q = build_quantizer(str(fp32), row, policy, keep_float, io_int8)
    with working(f"quantizing {out.name}"):
        result = q.quantize(qsvs if q.need_calibration else None, enable_progress_report=False)
    with atomic_path(out) as tmp:
        tmp.write_bytes(result.quantized_model)


@dataclass
class FileSource:
    """What the quantize stage quantizes from for a part in one float file (``PieceSource``: in pieces)."""

    fp32: Path
    qsvs: dict | None
    io_int8: bool
    policy: QuantPolicy
    threads: int

    def quantize(self, out: Path, row: Variant, keep_float: list[str]) -> None:
        quantize_to(self.fp32, out, row, self.qsvs, keep_float, self.io_int8, self.policy)

    def op_errors(self, quantized: Path, inputs: list[dict]) -> list[dict[str, Any]]:
        return op_errors(self.fp32, quantized, inputs, self.threads)


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


def check_quantizable(part: Part, variants: tuple[str, ...]) -> None:
    """Refuse up front what cannot be quantized: a part over the 2 GB flatbuffer limit (which
    ai-edge-quantizer cannot read) whose family cannot be cut into pieces."""
    if variants and part.float_bytes() >= FLATBUFFER_LIMIT and getattr(part.family, "units", None) is None:
        raise UsageError(
            f"the {part.opts.spec.name} {part.name} has {part.float_bytes() / 1e9:.1f} GB of float weights: its FP32 file is over the "
            f"2 GB flatbuffer limit, which ai-edge-quantizer cannot read, and the {part.family.name} family cannot be cut into "
            "pieces; only fp32 is available for it"
        )


@exclusive_stage
def stage_quantize(
    opts: RunOptions,
    part: Part,
    calib_dir: Path | None = None,
    io_int8: bool = False,
    variants: tuple[str, ...] | None = None,
    target: float | None = None,
    target_variants: tuple[str, ...] | None = None,
) -> StageSummary:
    """The part's quantized ``variants`` (default: its spec's) from its FP32 file, each made, chosen on the
    validation split and verified: plan, skip when current, open the source (one file or pieces), each
    variant (:func:`_make_variant`), then the summary and the stage record. A ``target`` given gates every
    variant (or those of ``target_variants``): the accuracy control reaches for it where a row has one, and a
    variant that misses it on the validation split fails."""
    md, t0 = opts.model_dir, time.time()
    run = _plan(opts, part, calib_dir, io_int8, variants, target, target_variants)
    rec, summary_file = part.record("quantize"), f"{part.prefix}quantize.json"
    inputs = part.verification_set()
    rejected = say_rejected(inputs.tally)
    fingerprint = _fingerprint(run, inputs)
    if is_current(opts, rec, fingerprint):
        return StageSummary(f"quantize {part.name}", opts.spec.name, True, _rows(read_json(md / summary_file)) + rejected)
    if not run.rows:
        raise UsageError(f"no quantized variant for the {part.name} of {opts.spec.name} (its spec lists none)")
    if io_int8 and run.partitioned:
        raise UsageError("IO=int8 is not available for models quantized in parts (over 2 GB); use int8-full for integer IO")
    if run.partitioned:
        refuse_control_in_pieces(part, run.rows, run.target_is_gate)
    calib = Tally()
    with contextlib.ExitStack() as stack:  # the pieces, when quantizing in pieces, until every variant is written
        run.source = _open_source(run, stack, calib)
        rejected += say_rejected(calib)
        # The PyTorch reference once for all variants; its module is freed before any file is opened.
        ref = part.reference(inputs)
        results = {
            row.name: _make_variant(run, row, inputs, ref)
            for row in progress(run.rows, desc=f"quantizing and verifying the {part.name}'s variants", unit="variants")
        }
    summary = {
        "model_id": opts.spec.name,
        "part": part.name,
        "random_init": ref.random_init,
        "calibration": calib.as_dict(),
        "fp32_size_bytes": run.fp32.stat().st_size,
        "partitioned": run.source.record if isinstance(run.source, PieceSource) else None,
        "accuracy_control": CONTROL_IN_PIECES if run.partitioned and run.target is not None else None,
        "variants": results,
    }
    write_json(md / summary_file, summary)
    if run.failures:
        raise VerificationError("; ".join(run.failures))
    names = [row.name for row in run.rows]
    outs = [part.file(v) for v in names] + [f"{part.report(v)}.json" for v in names] + [summary_file]
    md.record(rec, fingerprint, outs, t0)
    return StageSummary(f"quantize {part.name}", opts.spec.name, False, _rows(summary) + rejected)


@dataclass
class _Run:
    """One quantize stage's choices and what its steps share."""

    opts: RunOptions
    part: Part
    rows: tuple[Variant, ...]
    fp32: Path
    calib_dir: Path | None
    io_int8: bool
    target: float | None  # the accuracy control's target (None: off)
    target_is_gate: bool  # set by the user (or the demo): a miss fails the stage
    gated: frozenset[str]  # the variants the user's target gates (every row unless the caller named some)
    partitioned: bool
    source: FileSource | PieceSource | None = None
    qsvs: dict | None = None
    valref: dict[str, Any] = field(default_factory=dict)  # the validation split and its reference, made once
    failures: list[str] = field(default_factory=list)


def _plan(
    opts: RunOptions,
    part: Part,
    calib_dir: Path | None,
    io_int8: bool,
    variants: tuple[str, ...] | None,
    target: float | None,
    target_variants: tuple[str, ...] | None = None,
) -> _Run:
    """The rows to make (each looked up once), the target and whether it gates, the FP32 file, whether in pieces."""
    names = default_variants(opts.spec, part.name) if variants is None else variants
    rows = tuple(variant(v, part.name) for v in names)
    for row in rows:
        if row.recipe is None:
            raise UsageError(f"{row.name} is written by the tflite stage (make convert / make embedder), not by quantize")
    check_quantizable(part, names)
    fp32 = opts.model_dir.require(part.file("fp32"), part.make_target("fp32"))
    partitioned = opts.max_part_bytes is not None or fp32.stat().st_size >= FLATBUFFER_LIMIT
    # The accuracy control's target for this part (None: the part's default; 0: off).
    chosen = default_target(part) if target is None else (target or None)
    gated = frozenset(row.name for row in rows if target and (target_variants is None or row.name in target_variants))
    return _Run(opts, part, rows, fp32, calib_dir, io_int8, chosen, bool(gated), gated, partitioned)


def _fingerprint(run: _Run, inputs: InputSet) -> dict[str, Any]:
    """What the stage's outputs depend on: a change reruns it."""
    opts, part = run.opts, run.part
    return {
        **opts.inputs(),
        "fp32_sha256": sha256_file(run.fp32),
        "calibration_manifest_sha256": sha256_file(CALIBRATION_MANIFEST),
        "calib_dir": str(run.calib_dir) if run.calib_dir else None,
        "calib_dir_sha256": dir_fingerprint(run.calib_dir),
        "io_int8": run.io_int8,
        "variants": [row.name for row in run.rows],
        "rules": {row.name: rule_for(opts.spec, part.name, row).as_dict() for row in run.rows},
        "images": inputs.fingerprint,
        "calibration_images": opts.spec.calibration_images,
        "max_part_bytes": opts.max_part_bytes,
        "control_target": run.target,
        "control_target_is_gate": run.target_is_gate,
        "target_gates": sorted(run.gated),
    }


def _open_source(run: _Run, stack: contextlib.ExitStack, calib: Tally) -> FileSource | PieceSource:
    """What the variants are quantized from: the part in pieces (calibrated piece by piece), or the one FP32
    file with its calibration statistics when a row needs them."""
    opts, part = run.opts, run.part
    if run.partitioned:
        return stack.enter_context(quantize_partitioned(opts, part, run.rows, run.calib_dir, calib))
    if any(row.needs_calibration for row in run.rows):
        log.info("calibrating on the calibration set%s", f" + {run.calib_dir}" if run.calib_dir else "")
        run.qsvs, calib.used = calibrate_part(part, run.fp32, run.calib_dir, calib)
    return FileSource(run.fp32, run.qsvs, run.io_int8, part.family.quant, opts.threads)


def _make_variant(run: _Run, row: Variant, inputs: InputSet, ref: Reference) -> dict[str, Any]:
    """One variant: quantize, the accuracy control and the fallback (on the validation split), verification
    (the exam), the target's gate, the per-op reports; its summary entry. A failure is added to ``run.failures``."""
    opts, part, v = run.opts, run.part, row.name
    md, source = opts.model_dir, run.source
    assert source is not None
    path = md / part.file(v)
    controlled: list[str] = []  # op outputs the accuracy control kept float
    fallback: list[str] = []  # and the fallback, on top of them
    entry: dict[str, Any] = {"file": path.name}
    source.quantize(path, row, controlled)
    if run.target is not None and row.controlled is not None:
        if run.partitioned:  # only the default target reaches here (refuse_control_in_pieces)
            entry["accuracy_control"] = {"not_run": CONTROL_IN_PIECES}
        else:
            entry["accuracy_control"] = _control(
                part, run.fp32, path, row, run.qsvs, run.io_int8, part.family.quant, run.target, run.valref
            )
            controlled = entry["accuracy_control"]["kept_float_ops"]
    if row.fallback:  # chosen on the validation split; the verification below is the exam
        valset, vref = _validation(part, run.valref)
        why = _failures_on(part, path, row, valset, vref)
        if why:
            fallback, entry["fallback"] = _fallback(part, source, path, row, valset, vref, why, controlled)
    rep = _verify_and_gate(run, row, path, inputs, ref, entry.get("accuracy_control") or {})
    final = path if rep is not None else failed_path(path)
    shown = rep if rep is not None else _failed_report(part, v, final)  # the figures a failed file was judged by
    if row.needs_calibration:
        sample = inputs.inputs[:OP_ERROR_IMAGES]
        write_op_report(
            source.op_errors(final, sample),
            md.path,
            f"op-error-{part.prefix}{v}",
            inputs.names[: len(sample)],
            f"{opts.spec.name} {part.name} {v}",
        )
        if part.name == "extractor" and not run.partitioned:  # builtin kernels, every tensor kept: one file under 2 GB
            _watermark_report(part, run.fp32, final, v, inputs)
    runner = opts.opener(final, opts.threads)
    deleg = runner.delegation() or {}
    entry.update(
        file=final.name,
        size_bytes=final.stat().st_size,
        size_ratio_to_fp32=round(final.stat().st_size / run.fp32.stat().st_size, 4),
        passed=rep is not None,
        verification={k: shown.get(k) for k in part.summary_keys} if shown else None,
        failures=(shown or {}).get("failures", []) if rep is None else [],
        kept_float_by_fallback=fallback,
        xnnpack={k: deleg.get(k) for k in ("num_ops", "num_partitions", "num_not_delegated", "not_delegated")},
        io=runner.io(),
    )
    # Not held into the next variant: ChunkySeal's FP16 embedder holds 6 GB once opened, and the
    # next variant opens its own file and loads a 3.1 GB decoder (10.2 GB peak before this, measured).
    del runner
    collect_if_large(final.stat().st_size)
    return entry


def _verify_and_gate(
    run: _Run, row: Variant, path: Path, inputs: InputSet, ref: Reference, control: dict[str, Any]
) -> dict[str, Any] | None:
    """The file's verification report, or None when it failed the rule or missed a target the user set (then
    it is kept as ``.failed.tflite`` and the reason is in ``run.failures``)."""
    opts, part = run.opts, run.part
    try:
        rep = verify_file(part, row, path, inputs, ref)
    except VerificationError as e:
        run.failures.append(str(e))
        return None
    gated = row.name in run.gated
    if gated and control.get("reached") is False:
        miss = (
            f"{opts.spec.name} {part.name} {row.name}: accuracy target {run.target:g} missed ({control['metric']} "
            f"{control['curve'][-1]['value']:.4f} with {len(control['kept_float_groups'])} op group(s) kept float; see "
            f"control-{part.prefix}{row.name}.md)"
        )
        quarantine(part, path, rep, miss)
        run.failures.append(miss)
        return None
    if gated and row.controlled is None:
        # A target the user set gates every variant it applies to: one the control does not make is measured on
        # the validation split by the same task metric, and a miss fails it.
        got = _target_measure(run, path)
        rep["target"] = got
        if not got["reached"]:
            miss = (
                f"{opts.spec.name} {part.name} {row.name}: accuracy target {run.target:g} missed ({got['metric']} {got['value']:.4f}; "
                f"{row.name} has no accuracy control to reach it)"
            )
            quarantine(part, path, rep, miss)
            run.failures.append(miss)
            return None
    return rep


def _target_measure(run: _Run, path: Path) -> dict[str, Any]:
    """The accuracy control's task metric of ``path`` on the validation split, against the user's target."""
    from videoseal_litert.quantize.control import task_metric
    from videoseal_litert.runtime.runners import run_all

    opts, part = run.opts, run.part
    valset, ref = _validation(part, run.valref)
    what, rows, metric = task_metric(part.name, valset, ref.outputs)
    m = metric(run_all(opts.opener(path, opts.threads), (valset.inputs[i] for i in rows)))
    assert run.target is not None
    return {"metric": what, "value": m.value, "target": run.target, "reached": m.value >= run.target}


def _watermark_report(part: Part, fp32: Path, path: Path, name: str, inputs: InputSet) -> None:
    """Where the watermark signal is lost (per op, on (cover, watermarked) pairs) and which bits flip,
    with their PyTorch margins (from the file's verification report): ``watermark-error-<variant>.{json,md,png}``.
    Only for a model with an embedder (without one there is no watermark to follow)."""
    from videoseal_litert.calibration_data.build import is_watermarked
    from videoseal_litert.quantize.op_error import watermark_signal_errors, write_watermark_report

    marked = [i for i, n in enumerate(inputs.names) if is_watermarked(n)]
    if not marked:
        return
    pairs_at = [i for i in marked if i > 0 and not is_watermarked(inputs.names[i - 1])][: OP_ERROR_IMAGES // 2 or 1]
    rows = watermark_signal_errors(fp32, path, [(inputs.inputs[i - 1], inputs.inputs[i]) for i in pairs_at])
    write_watermark_report(
        rows,
        read_json(path.parent / f"{part.report(name)}.json")["flipped_bits"],
        part.opts.model_dir.path,
        f"watermark-error-{part.prefix}{name}",
        [inputs.names[i - 1] for i in pairs_at],
        f"{part.opts.spec.name} {part.name} {name}",
    )


def _failed_report(part: Part, name: str, path: Path) -> dict[str, Any] | None:
    """The verification report of a file that failed, when it judged these very bytes (None: it failed before a report)."""
    report = path.parent / f"{part.report(name)}.json"
    if not (path.is_file() and report.is_file()):
        return None
    rep = read_json(report)
    return rep if rep.get("sha256") == sha256_file(path) else None


CONTROL_IN_PIECES = (
    "not run: the part is quantized in pieces (over 2 GB), where the accuracy control is not implemented (docs/large-models.md)"
)


def refuse_control_in_pieces(part: Part, rows: tuple[Variant, ...], target_is_gate: bool) -> None:
    """A part quantized in pieces has no accuracy control: a variant that is the control's output
    (int4-mixed) or a target the user set is a named refusal, not a silent no-op."""
    mixed = [row.name for row in rows if row.controlled == "int8"]
    if mixed:
        raise UsageError(
            f"{', '.join(mixed)}: the accuracy control that makes it does not run on a part quantized in pieces (the "
            f"{part.opts.spec.name} {part.name}'s FP32 file is over 2 GB, or MAX_PART_BYTES was given); quantize int4 instead"
        )
    if target_is_gate:
        raise UsageError(
            f"an accuracy target was set, but the accuracy control does not run on a part quantized in pieces (the "
            f"{part.opts.spec.name} {part.name}'s FP32 file is over 2 GB, or MAX_PART_BYTES was given): drop the target"
        )


def _validation(part: Part, valref: dict[str, Any]) -> tuple[InputSet, Reference]:
    """The part's validation split and its PyTorch reference, made once per stage: what every automatic
    choice (the fallback, the accuracy control) is made on; the evaluation split only reports."""
    if not valref:
        valset = part.validation_set()
        say_rejected(valset.tally)
        valref.update(valset=valset, ref=part.reference(valset))
    return valref["valset"], valref["ref"]


def _failures_on(part: Part, path: Path, row: Variant, inputs: InputSet, ref: Reference) -> list[str]:
    """What the rule finds wrong with ``path`` on ``inputs`` (the validation split), without writing a report."""
    opts = part.opts
    got = run_file(part, path, inputs, opts.threads, opts.opener)
    return part.figures(inputs, ref, got, rule_for(opts.spec, part.name, row))["failures"]


def default_target(part: Part) -> float | None:
    """The accuracy control's default target. Extractor: bit agreement 0.999 when its model has an
    embedder (its bits are what users decode), off otherwise (``--target-agreement`` turns it on for
    any model). Embedder: its INT8 error 10 dB below the watermark it writes."""
    if part.name == "embedder":
        return DEFAULT_TARGET_WATERMARK_SNR_DB
    return DEFAULT_TARGET_AGREEMENT if part.watermarker() is not None else None  # type: ignore[attr-defined]


def _control(
    part: Part, fp32: Path, path: Path, row: Variant, qsvs: dict | None, io_int8: bool, policy: QuantPolicy, target: float, valref: dict
) -> dict[str, Any]:
    """Run the accuracy control on ``path`` (the variant's file as its recipe wrote it), write its report, return its summary."""
    from videoseal_litert.quantize.control import Measure, control, task_metric, write_control_report
    from videoseal_litert.runtime.runners import run_all

    opts = part.opts
    name = row.name
    four = row.controlled == "int8"  # a 4-bit row: groups get 8-bit weights, not float
    valset, ref = _validation(part, valref)
    what, rows, metric = task_metric(part.name, valset, ref.outputs)

    rule = rule_for(opts.spec, part.name, row)
    row_of = {i: k for k, i in enumerate(rows)}

    def measure(p: Path, only: list[int] | None = None) -> Any:
        """The task metric on its rows and the rule on the validation split (attacked views included), or on the
        inputs ``only``; the tie-break: the worst gated group's SNR against PyTorch; the focus: the inputs of the
        groups that fail."""
        idx = list(range(len(valset.names))) if only is None else only
        sub = InputSet([valset.names[i] for i in idx], [valset.inputs[i] for i in idx], valset.tally, [])
        sref = Reference({k: v[idx] for k, v in ref.outputs.items()}, ref.random_init, ref.extras if only is None else {})
        got = run_all(opts.opener(p, opts.threads), sub.inputs)
        mine = [k for k, i in enumerate(idx) if i in row_of]
        # On inputs the metric does not count (attacked views alone) every candidate ties on it: the rule decides.
        m = metric({k: v[mine] for k, v in got.items()}, [row_of[idx[k]] for k in mine]) if mine else Measure(0.0, None)
        fig = part.figures(sub, sref, got, rule)
        gated = [g for g in fig["gate"]["groups"].values() if g["gated"]]
        worst = min((g["snr_db"] if g["snr_db"] is not None else math.inf for g in gated if g["floor_db"] is not None), default=math.inf)
        m.tiebreak = None if math.isinf(worst) else worst  # None: no error at all
        m.failures = fig["failures"]
        m.flips = sum(g.get("clear_flips", 0) + g.get("near_flips", 0) for g in gated)
        failing = {g["group"] for g in gated if not g["passed"]}
        m.focus = sorted(idx[k] for k, n in enumerate(sub.names) if part.groups_of(n) & failing) if failing else None
        return m

    def cost(all_int8: Path, controlled: Path) -> dict[str, Any]:
        med, note = _interleaved(opts, {"all-int8": all_int8, "controlled": controlled})
        return {
            "size_ratio": round(controlled.stat().st_size / all_int8.stat().st_size, 4),
            "latency_ratio": round(med["controlled"] / med["all-int8"], 3),
            "latency_ms": med,
            "latency_note": note,
        }

    res = control(
        fp32,
        path,
        lambda out, keep: quantize_to(fp32, out, row, qsvs, keep, io_int8, policy),
        measure,
        what,
        len(rows),
        target,
        policy.int4 if four else policy.static,  # the ops a group must hold to be ranked
        cost,
    )
    title = f"{opts.spec.name} {part.name} {name}" + (" (RANDOM weights: not a fidelity figure)" if ref.random_init else "")
    write_control_report(
        res,
        opts.model_dir.path,
        f"control-{part.prefix}{name}",
        title,
        ref.random_init,
        "INT4" if four else "INT8",
        "8-bit" if four else "float",
    )
    return res.as_dict()


def _interleaved(opts: RunOptions, files: dict[str, Path]) -> tuple[dict[str, float], str]:
    """Median latency of each file, timed interleaved in one run, and the note that says how and where."""
    med = interleaved_medians(opts, files, opts.threads)
    return med, f"median of 10 interleaved runs at {opts.threads} thread(s) on {machine_description()}"


def _fallback(
    part: Part,
    source: FileSource | PieceSource,
    path: Path,
    row: Variant,
    valset: InputSet,
    vref: Reference,
    first_error: list[str],
    base: list[str],
) -> tuple[list[str], dict[str, Any]]:
    """Keep the worst ops float (besides ``base``, the accuracy control's), doubling how many each round,
    until the file passes the rule on the validation split: the ops are ranked, and each round judged, there,
    never on the evaluation split. In pieces, an op of any piece can be kept (names ``piece<k>/...``)."""
    opts, name = part.opts, row.name
    log.warning("%s fails the rule on the validation split (%s); trying the accuracy-driven fallback", name, "; ".join(first_error))
    rows = source.op_errors(path, valset.inputs[:OP_ERROR_IMAGES])
    static = part.family.quant.static
    ranked = [r["tensor"] for r in rows if r["sqnr_db"] is not None and r["op"] in static and r["tensor"] not in base]
    first = path.with_name(f".{path.name}.first-attempt.tmp")
    first.write_bytes(path.read_bytes())
    try:
        passed, keep, n = False, ranked[:1], 1
        for _ in range(MAX_FALLBACK_ROUNDS):
            keep = ranked[:n]
            source.quantize(path, row, base + keep)
            if not _failures_on(part, path, row, valset, vref):
                passed = True
                log.info("%s passes on the validation split with %d op(s) kept float: %s", name, len(keep), keep)
                break
            if n >= len(ranked):
                break
            n = min(2 * n, len(ranked))
        cost: dict[str, Any] = {
            "chosen_on": f"the validation split ({len(valset.names)} inputs)",
            "kept_float": keep,
            "passed_on_validation": passed,
            "size_bytes_before": first.stat().st_size,
            "size_bytes_after": path.stat().st_size,
        }
        med, note = _interleaved(opts, {"before": first, "after": path})
        cost.update(
            latency_ms_before=med["before"],
            latency_ms_after=med["after"],
            latency_ratio_after_to_before=round(med["after"] / med["before"], 3),
            latency_note=note,
        )
        log.info("fallback cost: %s", cost)
    finally:
        first.unlink(missing_ok=True)
    return keep, cost


def _rows(s: dict[str, Any]) -> list[tuple[str, str]]:
    from videoseal_litert.convert.parts import PARTS

    part = PARTS[s["part"]]
    rows = [("calibration inputs", str(s["calibration"].get("used", "-")))]
    for v, r in s["variants"].items():
        check = part.one_line(r["verification"]) if r["verification"] else "verification failed before its figures"
        rows.append(
            (
                v,
                f"{'PASS' if r['passed'] else 'FAIL'}  {r['size_ratio_to_fp32']:.3f}x size  {check}  "
                f"not delegated {r['xnnpack']['num_not_delegated']}/{r['xnnpack']['num_ops']}"
                + (f"  kept float {len(r['kept_float_by_fallback'])}" if r["kept_float_by_fallback"] else ""),
            )
        )
        c = r.get("accuracy_control")
        if c and "not_run" in c:
            rows.append((f"{v} accuracy control", c["not_run"]))
        elif c:
            end = c["curve"][-1]["value"]
            rows.append(
                (
                    f"{v} accuracy control",
                    f"{'target met' if c['reached'] else 'TARGET MISSED'} ({c['target']:g}): validation {c['metric'].split(' on ')[0]} "
                    f"{c['start']['value']:.4f} -> {end:.4f}, {len(c['kept_float_groups'])} group(s) "
                    f"({len(c['kept_float_ops'])} ops) float",
                )
            )
    return rows


def ensure_files(opts: RunOptions, make: dict[str, tuple[str, str]], command: str) -> None:
    """Write the model's files a command names (``{path: (part, variant)}``) and does not find, with the
    pipeline's own stages (skipped when current). A file that failed is not made again: the caller's
    ``require_verified`` refuses it by name."""
    from videoseal_litert.convert.parts import make_part
    from videoseal_litert.convert.stages import stage_load, stage_tflite, stage_verify
    from videoseal_litert.core.console import say

    wanted: dict[str, list[str]] = {}
    for path, (part, v) in make.items():
        if not Path(path).is_file() and not failed_path(Path(path)).is_file():
            wanted.setdefault(part, []).append(v)
    for part_name, vs in wanted.items():
        part = make_part(opts, part_name)
        say(f"{command}: writing the {part_name}'s {', '.join(vs)} file(s) first (the pipeline's stages)")
        stage_load(opts, part)
        stage_tflite(opts, part)
        stage_verify(opts, part, "fp32")
        q = tuple(v for v in vs if v != "fp32")
        if q:
            stage_quantize(opts, part, variants=q)
