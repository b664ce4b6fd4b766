"""The float pipeline's stages as functions of a part: load, inspect, export, tflite, verify, bench.

Each stage takes a part of the model (``convert/parts.py``: the extractor or the embedder), reads
what it needs (card, checkpoint, earlier artifacts), writes its own files atomically, and records
its inputs' fingerprint in ``records/<prefix><stage>.json``; with unchanged inputs and intact
outputs it is skipped. Every stage returns a one-table summary for the command line.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from videoseal_litert.convert.options import RunOptions
from videoseal_litert.convert.parts import PARTS, Part
from videoseal_litert.core.artifacts import (
    collect_if_large,
    machine_description,
    peak_rss_mb,
    read_json,
    release_memory,
    sha256_file,
    write_json,
    write_text,
)
from videoseal_litert.core.console import say
from videoseal_litert.core.errors import UsageError
from videoseal_litert.models.variants import rule_for, variant

log = logging.getLogger(__name__)
T = TypeVar("T")

ONNX_LIMIT_BYTES = 2**31 - 1


def exclusive_stage(fn: Callable[..., T]) -> Callable[..., T]:
    """Run a stage ``fn(opts, ...)`` holding its model directory's lock (see ``ModelDir.exclusive``)."""

    @functools.wraps(fn)
    def run(opts: RunOptions, *args: Any, **kwargs: Any) -> T:
        try:
            with opts.model_dir.exclusive(fn.__name__):
                return fn(opts, *args, **kwargs)
        finally:
            release_memory()

    return run


@dataclass
class StageSummary:
    stage: str
    model_id: str
    skipped: bool
    rows: list[tuple[str, str]]
    unverified: list[str] = field(default_factory=list)  # files used although not verified (--allow-unverified)

    def table(self) -> str:
        head = f"{self.stage} {self.model_id}: " + ("up to date, skipped" if self.skipped else "done")
        width = max((len(k) for k, _ in self.rows), default=0)
        return "\n".join([head, *[f"  {k.ljust(width)}  {v}" for k, v in self.rows]])


def is_current(opts: RunOptions, record: str, inputs: dict[str, Any]) -> bool:
    return not opts.force and opts.model_dir.up_to_date(record, inputs)


def stage_rows(opts: RunOptions, record: str) -> list[tuple[str, str]]:
    rec = opts.model_dir.stages().get(record, {})
    return [("wall time", f"{rec.get('wall_s', 0):.1f} s"), ("peak RSS", f"{rec.get('peak_rss_mb', 0):.0f} MB")]


def mb(p: Path) -> str:
    return f"{p.stat().st_size / 1e6:.1f} MB"


def say_rejected(tally: Any) -> list[tuple[str, str]]:
    """Name every rejected input file on the terminal; the summary row that counts them."""
    for f, why in tally.rejected:
        say(f"  skipped {f}: {why}")
    if not tally.rejected:
        return []
    return [("rejected files", f"{len(tally.rejected)}: " + ", ".join(f for f, _ in tally.rejected))]


@exclusive_stage
def stage_load(opts: RunOptions, part: Part) -> StageSummary:
    """Checkpoint + card -> the part, strictly loaded; writes its description (model.json / embedder.json)."""
    md, inputs, t0, rec = opts.model_dir, opts.inputs(), time.time(), part.record("load")
    title = f"load {part.name}"
    if is_current(opts, rec, inputs):
        return StageSummary(title, opts.spec.name, True, stage_rows(opts, rec))
    loaded = part.load()
    desc = part.describe(loaded)
    write_json(md / part.description_file, desc)
    md.record(rec, inputs, [part.description_file], t0)
    rows = [
        ("weights", "RANDOM (seeded), not a trained model" if loaded.random_init else f"{loaded.checkpoint_path}"),
        ("checkpoint sha256", str(loaded.checkpoint_sha256)),
        ("parameters", f"{desc['num_params']:,}"),
        ("nbits", str(part.nbits)),
    ]
    return StageSummary(title, opts.spec.name, False, rows + stage_rows(opts, rec))


@exclusive_stage
def stage_inspect(opts: RunOptions, part: Part) -> StageSummary:
    """Write inspect.json / inspect.md: per-stage parameters, per-tensor statistics, FLOPs, flags (the extractor)."""
    from videoseal_litert.convert.inspect_checkpoint import inspect_extractor, render_markdown

    if part.name != "extractor":
        raise UsageError("inspect reports on the extractor's checkpoint tensors; use PART=extractor")
    md, t0 = opts.model_dir, time.time()
    report = inspect_extractor(part.load(allow_zero_weights=True, allow_nonfinite_weights=True))
    report["machine"] = machine_description()
    write_json(md / "inspect.json", report)
    write_text(md / "inspect.md", render_markdown(report))
    rows = [
        ("parameters", f"{report['num_params']:,}"),
        ("GFLOPs / image", f"{report['gflops_256']:.2f}"),
        ("flagged tensors", str(len(report["flagged"]))),
        ("all-zero conv/linear", str(len(report["zero_conv_linear_weights"]))),
        ("non-finite tensors", str(len(report["nonfinite_tensors"]))),
        ("report", str(md / "inspect.md")),
        ("wall time", f"{time.time() - t0:.1f} s"),
    ]
    return StageSummary("inspect", opts.spec.name, False, rows)


@exclusive_stage
def stage_export(opts: RunOptions, part: Part) -> StageSummary:
    """The part's named deploy form -> ``<part>.pt2`` (torch.export) and ONNX (checked with onnxruntime)."""
    from videoseal_litert.convert.export import export_onnx, export_program

    md, inputs, t0, rec = opts.model_dir, opts.inputs(), time.time(), part.record("export")
    title = f"export {part.name}"
    md.require(part.description_file, part.make_target("fp32"))
    if is_current(opts, rec, inputs):
        return StageSummary(title, opts.spec.name, True, stage_rows(opts, rec))
    loaded = part.load()
    random_init = loaded.random_init
    named = part.named(loaded)
    del loaded
    sample = part.sample_inputs()
    export_program(named, sample, md / part.program_file)
    weight_bytes = sum(p.numel() * p.element_size() for p in named.parameters())
    info_file = f"{part.prefix}export.json"
    outs = [part.program_file, info_file]
    rows = [(part.program_file, mb(md / part.program_file))]
    if weight_bytes >= ONNX_LIMIT_BYTES:
        # A protobuf cannot hold more than 2 GB; ONNX with external data is not produced here.
        info = {"onnx_skipped": f"{weight_bytes / 1e9:.2f} GB of weights exceeds the 2 GB protobuf limit", "random_init": random_init}
        (md / part.onnx_file).unlink(missing_ok=True)
        rows.append((part.onnx_file, "skipped: weights over the 2 GB protobuf limit"))
    else:
        res = export_onnx(named, sample, part.contract.output_names, md / part.onnx_file)
        info = {"onnx_opset": res.onnx_opset, "onnx_max_abs_diff_vs_pytorch": res.onnx_max_abs_diff, "random_init": random_init}
        outs.insert(1, part.onnx_file)
        rows += [
            (part.onnx_file, mb(md / part.onnx_file)),
            ("ONNX opset", str(res.onnx_opset)),
            ("ONNX vs PyTorch max abs diff", f"{res.onnx_max_abs_diff:.3g}"),
        ]
    write_json(md / info_file, info)
    md.record(rec, inputs, outs, t0)
    return StageSummary(title, opts.spec.name, False, rows + stage_rows(opts, rec))


@exclusive_stage
def stage_tflite(opts: RunOptions, part: Part) -> StageSummary:
    """The part's named deploy form -> ``<prefix>fp32.tflite`` with litert-torch."""
    from videoseal_litert.convert.split import convert_in_pieces
    from videoseal_litert.convert.tflite import convert_fp32

    md, inputs, t0, rec = opts.model_dir, opts.inputs(), time.time(), part.record("tflite")
    title = f"tflite {part.name}"
    out = part.file("fp32")
    md.require(part.description_file, part.make_target("fp32"))
    if is_current(opts, rec, inputs):
        return StageSummary(title, opts.spec.name, True, stage_rows(opts, rec))
    if part.in_pieces(opts):
        convert_in_pieces(opts, part, md / out)
    else:
        named = part.named(part.load())
        convert_fp32(named, part.sample_inputs(), md / out)
        del named
        collect_if_large((md / out).stat().st_size)
    md.record(rec, inputs, [out], t0)
    return StageSummary(title, opts.spec.name, False, [(out, mb(md / out))] + stage_rows(opts, rec))


@exclusive_stage
def stage_verify(opts: RunOptions, part: Part, name: str = "fp32") -> StageSummary:
    """Compare ``<prefix><variant>.tflite`` with PyTorch on held-out photos by the one rule; raise (and
    keep the file as ``.failed.tflite``) when it fails."""
    from videoseal_litert.convert.verify import verify_file

    row = variant(name, part.name)
    md, t0, rec = opts.model_dir, time.time(), part.report(name)
    path = md.require(part.file(name), part.make_target(name))
    inputs = part.verification_set()
    rejected = say_rejected(inputs.tally)
    fingerprint = {
        **opts.inputs(),
        "sha256": sha256_file(path),
        "images": inputs.fingerprint,
        "threads": opts.threads,
        "rule": rule_for(opts.spec, part.name, row).as_dict(),
    }
    if is_current(opts, rec, fingerprint):
        return StageSummary(rec, opts.spec.name, True, verify_rows(part, read_json(md / f"{rec}.json")) + rejected + stage_rows(opts, rec))
    ref = part.reference(inputs)
    try:
        report = verify_file(part, row, path, inputs, ref)
    finally:
        log.info("verify peak RSS %.0f MB", peak_rss_mb())
    md.record(rec, fingerprint, [f"{rec}.json", f"{rec}.md"], t0)
    return StageSummary(rec, opts.spec.name, False, verify_rows(part, report) + rejected + stage_rows(opts, rec))


def stage_verify_file(opts: RunOptions, path: Path) -> StageSummary:
    """Judge any ``.tflite`` (made by another tool, edited by hand) against the model's PyTorch on the held-out
    photos, wherever it lies: the part from its signature (``image`` -> extractor, ``image`` and ``message`` ->
    embedder), the floor from what its tensors say it is, the report beside it (``verify-<name>.{json,md}``).
    VerificationError (exit 2) naming the failing groups; the file is never moved."""
    from videoseal_litert.convert.parts import make_part
    from videoseal_litert.convert.verify import precision_of, report_path, verify_file
    from videoseal_litert.core.errors import ArtifactMissingError, VerificationError
    from videoseal_litert.runtime.runners import open_runner

    path = Path(path)
    if not path.is_file():
        raise ArtifactMissingError(f"--file {path}: no such file")
    inputs_of = set(open_runner(path, 1, use_xnnpack=False).input_shapes)
    by_inputs = {frozenset(p.contract.input_names): name for name, p in PARTS.items()}
    part_name = by_inputs.get(frozenset(inputs_of))
    if part_name is None:
        raise VerificationError(
            f"{path}: inputs {sorted(inputs_of)} are neither an extractor's ({sorted(PARTS['extractor'].contract.input_names)}) nor an "
            f"embedder's ({sorted(PARTS['embedder'].contract.input_names)}): not a file of a {opts.spec.name} part"
        )
    part = make_part(opts, part_name)
    inputs = part.verification_set()
    rejected = say_rejected(inputs.tally)
    say(
        f"verify {path}: a {part_name} file of {opts.spec.name} ({precision_of(path)} floor), against PyTorch on {len(inputs.names)} inputs"
    )
    ref = part.reference(inputs)
    report = verify_file(part, None, path, inputs, ref, in_place=True)
    rows = verify_rows(part, report) + rejected + [("report", str(report_path(path).with_suffix(".md")))]
    return StageSummary(f"verify {path.name}", opts.spec.name, False, rows)


def verify_rows(part: Part, r: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        ("result", "PASSED" if r["passed"] else "FAILED"),
        ("images", str(r["num_images"])),
        *[(a, b) for a, b, _ in part.table(r)],
        ("weights", "RANDOM (not trained)" if r["random_init"] else "checkpoint"),
    ]


@exclusive_stage
def stage_bench(
    opts: RunOptions, part: Part, runs: int = 20, warmup: int = 3, thread_counts: tuple[int, ...] | None = None
) -> StageSummary:
    """``<prefix>bench.json`` / ``.md``: PyTorch eager and every file of the part at each of ``thread_counts`` (default 1
    and the run's threads), interleaved."""
    from videoseal_litert.convert.bench import bench, write_bench

    md = opts.model_dir
    md.require(part.file("fp32"), part.make_target("fp32"))
    report = bench(opts, part, threads=thread_counts or tuple(sorted({1, opts.threads})), runs=runs, warmup=warmup)
    write_bench(md.path, part, report)
    rows = []
    for t, stats in report["latency"].items():
        for v, s in stats.items():
            size = report["size"].get(v, {}).get("ratio_to_fp32")
            rows.append(
                (
                    f"{t} thr {part.prefix}{v}",
                    f"{s['median_ms']:.1f} ms median ({s['ratio_to_fp32']:.2f}x fp32)" + (f", {size:.3f}x size" if size else ""),
                )
            )
    rows += [
        (f"{part.prefix}{v}", f"benchmarked UNVERIFIED ({st}, --allow-unverified)")
        for v, st in report["verification"].items()
        if st != "verified"
    ]
    return StageSummary(f"bench {part.name}", opts.spec.name, False, rows)


def artifact_summary(model_dir: Path, entries: Iterable[tuple[str, str]], elapsed_s: float | None, title: str) -> tuple[str, bool]:
    """One table: each (part, variant)'s file, size, verification by the rule and report; then PASSED or the
    gates that failed. Read from the files the stages wrote (``verify-*.json``); a file that failed sits
    under its ``.failed.tflite`` name."""
    from videoseal_litert.convert.verify import failed_path

    rows, failed = [], []
    for part_name, v in entries:
        part = PARTS[part_name]
        f = model_dir / part.file(v)
        rep_path = model_dir / f"{part.report(v)}.json"
        label = f"{part.prefix}{v}"
        if not f.exists() and failed_path(f).exists():
            f = failed_path(f)
        if not f.exists():
            rows.append((f.name, "-", "missing", "-"))
            failed.append(f"{label}: no file")
            continue
        if not rep_path.exists():
            rows.append((f.name, f"{f.stat().st_size / 1e6:.1f} MB", "not verified", "-"))
            failed.append(f"{label}: not verified")
            continue
        r = json.loads(rep_path.read_text())
        rows.append(
            (
                f.name,
                f"{f.stat().st_size / 1e6:.1f} MB",
                ("pass  " if r["passed"] else "FAIL  ") + part.one_line(r),
                str(rep_path.with_suffix(".md")),
            )
        )
        if not r["passed"]:
            failed.append(f"{label}: " + "; ".join(r.get("failures", [])))
    head = ("artifact", "size", "verification (the rule: docs/verification.md)", "report")
    widths = [max(len(str(x[i])) for x in [head, *rows]) for i in range(4)]
    lines = [
        title + (f" ({elapsed_s:.0f} s)" if elapsed_s is not None else ""),
        "  " + "  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)),
    ]
    lines += ["  " + "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    lines = [ln.rstrip() for ln in lines]
    lines.append("PASSED" if not failed else "FAILED: " + " | ".join(failed))
    return "\n".join(lines), not failed
