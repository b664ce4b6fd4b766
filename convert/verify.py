"""Stage 4: compare a converted file with the PyTorch reference, for either part, through a runner.

Checks names, then shapes, then values: the file's inputs and outputs must carry the part's
contract names and shapes, then every output is compared with the reference on the part's input
set and judged by the one rule of ``models/gate.py`` under the variant's floor. Writes
``verify-<prefix><variant>.json`` and ``.md``; a file that fails is moved to ``<name>.failed.tflite``
(it never sits under a shipping name) and VerificationError names why. ``require_verified`` is what
every command that uses files (evaluate, arm-check, bench, package) asks before it does.
The file is run by ``opts.opener`` (in-process LiteRT unless another runner is plugged in).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from videoseal_litert.convert.parts import InputSet, Part, Reference
from videoseal_litert.core.artifacts import machine_description, read_json, sha256_file, write_json, write_text
from videoseal_litert.core.console import progress
from videoseal_litert.core.errors import ArtifactMissingError, UnverifiedFileError, VerificationError
from videoseal_litert.models.gate import Rule
from videoseal_litert.models.variants import Variant, rule_for
from videoseal_litert.runtime.runners import Opener, Runner, kernels, run_all

log = logging.getLogger(__name__)


def check_io(part: Part, runner: Runner, path: Path) -> None:
    """Names, then shapes, of the file's inputs against the part's contract."""
    want = part.input_shapes()
    got = runner.input_shapes
    if set(got) != set(want):
        raise VerificationError(f"{path}: inputs {sorted(got)}, the {part.name} contract says {sorted(want)}: not a file of this part")
    for name, shape in want.items():
        if tuple(got[name]) != tuple(shape):
            raise VerificationError(f"{path}: input {name!r} has shape {tuple(got[name])}, expected {tuple(shape)}")


def run_file(part: Part, path: Path, inputs: InputSet, threads: int, opener: Opener) -> dict[str, np.ndarray]:
    """The file's outputs on every input, (N, ...) by name, checked for names and shapes."""
    return _run(part, path, inputs, threads, opener)[0]


def _run(part: Part, path: Path, inputs: InputSet, threads: int, opener: Opener) -> tuple[dict[str, np.ndarray], str]:
    runner = opener(path, threads)
    check_io(part, runner, path)
    got = run_all(runner, progress(inputs.inputs, desc=f"running {path.name}", unit="inputs"))
    missing = sorted(set(part.contract.output_names) - set(got))
    if missing:
        raise VerificationError(f"{path}: no output named {', '.join(missing)}; outputs: {sorted(got)}")
    return got, kernels(runner)


FAILED_SUFFIX = ".failed.tflite"


def failed_path(path: Path) -> Path:
    """Where a file that failed verification is kept: ``int8.tflite`` -> ``int8.failed.tflite``."""
    return path.with_name(path.name.removesuffix(FAILED_SUFFIX).removesuffix(".tflite") + FAILED_SUFFIX)


def report_path(path: Path) -> Path:
    """A file's verification report (JSON), beside it: ``verify-<name>.json`` (a failed file's too)."""
    return path.with_name(f"verify-{path.name.removesuffix(FAILED_SUFFIX).removesuffix('.tflite')}.json")


def quarantine(part: Part, path: Path, report: dict[str, Any], reason: str | None = None) -> Path:
    """Move a file that failed to its failed name, so it never sits under a shipping name, and write its
    report saying so (``reason``: a failure found after verification, such as a missed target)."""
    bad = failed_path(path)
    if path.exists():
        path.replace(bad)
    report.update(file=bad.name, passed=False)
    if reason:
        report["failures"] = [*report.get("failures", []), reason]
    write_json(report_path(path), report)
    write_text(report_path(path).with_suffix(".md"), render_markdown(part, report))
    return bad


def precision_of(path: Path) -> str:
    """What a file's arithmetic is, from its tensors' types: "quantized" (any 8-, 4- or 16-bit integer tensor),
    "fp16" (float16 tensors) or "fp32": which floor of the rule judges a file made elsewhere."""
    from videoseal_litert.runtime.runners import open_runner

    kinds = {np.dtype(d["dtype"]).name for d in open_runner(path, 1, use_xnnpack=False).interpreter.get_tensor_details()}
    if kinds & {"int8", "uint8", "int16", "int4"}:
        return "quantized"
    return "fp16" if "float16" in kinds else "fp32"


def verify_file(
    part: Part, row: Variant | None, path: Path, inputs: InputSet, ref: Reference, rule: Rule | None = None, in_place: bool = False
) -> dict[str, Any]:
    """Verify one file of ``part`` by the rule of ``models/gate.py``, write its JSON and Markdown reports beside it
    (``verify-<name>``), and raise VerificationError if it fails. A pipeline file (``row``) that fails is moved to
    ``<name>.failed.tflite``; a file the user brings (``row`` None, judged by ``rule``, or by the floor of what its
    tensors say it is) is judged where it lies and left there (``in_place``)."""
    opts = part.opts
    got, ran_on = _run(part, path, inputs, opts.threads, opts.opener)
    for name, want in ref.outputs.items():
        if got[name].shape != want.shape:
            raise VerificationError(f"{path}: output {name!r} has shape {got[name].shape[1:]}, PyTorch's {want.shape[1:]}")
    precision = row.precision if row is not None else precision_of(path)
    if rule is None:
        rule = rule_for(opts.spec, part.name, row, precision)
    variant = row.name if row is not None else path.name
    figures = part.figures(inputs, ref, got, rule)
    del got
    failures = figures.pop("failures")
    checks = part.extra_checks(row.name if row is not None else precision, path, ref, rule)
    failures += [f for c in checks.values() for f in c.get("failures", [])]
    report = {
        "model_id": opts.spec.name,
        "part": part.name,
        "variant": variant,
        "precision": precision,
        "file": path.name,
        "path": str(path.resolve()) if row is None else None,
        "sha256": sha256_file(path),
        "runner": opts.opener.__name__ if hasattr(opts.opener, "__name__") else type(opts.opener).__name__,
        "kernels": ran_on,
        "num_images": len(inputs.names),
        "images": inputs.names,
        "rejected": inputs.tally.as_dict()["rejected"],
        **figures,
        "checks": checks,
        "random_init": ref.random_init,
        "rule": rule.as_dict(),
        "passed": not failures,
        "failures": failures,
        "machine": machine_description(),
        "num_threads": opts.threads,
    }
    report_file = report_path(path)
    if failures and not in_place:
        bad = quarantine(part, path, report)
        raise VerificationError(
            f"{opts.spec.name} {part.name} {variant} failed verification: " + "; ".join(failures) + f" (kept as {bad.name}; "
            f"see {report_file.with_suffix('.md')})"
        )
    if not in_place:
        failed_path(path).unlink(missing_ok=True)  # an earlier attempt's failed file is stale now
    write_json(report_file, report)
    write_text(report_file.with_suffix(".md"), render_markdown(part, report))
    if failures:
        raise VerificationError(f"{path} FAILED verification: " + "; ".join(failures) + f" (see {report_file.with_suffix('.md')})")
    return report


def verification_of(path: Path) -> tuple[str, dict[str, Any] | None]:
    """("verified" | "failed" | "unverified" | "changed", its report): whether ``path`` passed verification as
    the very bytes on disk."""
    rep_file = report_path(path)
    rep = read_json(rep_file) if rep_file.is_file() else None
    if path.name.endswith(FAILED_SUFFIX) or (rep is not None and not rep.get("passed")):
        return "failed", rep
    if rep is None:
        return "unverified", None
    if rep.get("sha256") != sha256_file(path):
        return "changed", rep
    return "verified", rep


def require_verified(path: Path, allow_unverified: bool, command: str) -> dict[str, Any]:
    """The verification status of a file ``command`` is about to use: {"file", "status", "report"}.
    UnverifiedFileError (naming the report and what to do) for a failed, unverified or changed file unless
    ``allow_unverified``; a registry name whose file failed resolves to its ``.failed.tflite`` then."""
    if not path.exists() and failed_path(path).exists():
        path = failed_path(path)
    if not path.exists():
        raise ArtifactMissingError(f"{path} does not exist")
    status, rep = verification_of(path)
    if status != "verified" and not allow_unverified:
        why = {
            "failed": f"failed verification ({'; '.join((rep or {}).get('failures', [])[:3]) or 'see its report'})",
            "unverified": "was never verified (no verify-*.json beside it)",
            "changed": "changed since it was verified (its sha256 is not the verified one)",
        }[status]
        raise UnverifiedFileError(
            f"{command}: {path} {why}; it uses verified files only. Report: {report_path(path).with_suffix('.md')}. "
            f"Pass --allow-unverified (make ... ALLOW_UNVERIFIED=1) to use it anyway; the summary will say so"
        )
    return {"file": str(path), "status": status, "report": rep}


def render_table(part: Part, r: dict[str, Any]) -> str:
    rows = ["| figure | measured | rule |", "|---|---|---|"]
    return "\n".join(rows + [f"| {a} | {b} | {c} |" for a, b, c in part.table(r)])


def render_flips(r: dict[str, Any]) -> str:
    """The flips each group found, clear ones first (each fails the file)."""
    out = []
    for name, g in (r.get("gate") or {}).get("groups", {}).items():
        for title, key in (("clear flips (each fails the file)", "clear_flip_list"), ("near flips", "near_flip_list")):
            flips = g.get(key) or []
            if flips:
                out += [
                    f"\n{name}: {title}, largest PyTorch margin first:\n",
                    "| input | output | PyTorch | file |",
                    "|---|---|---|---|",
                    *[f"| {f['input']} | {f['output']} | {f['pytorch']:+.4g} | {f['file']:+.4g} |" for f in flips[:20]],
                ]
    return "\n".join(out)


def rule_text(rule: dict[str, Any]) -> str:
    """The rule in one paragraph, with this file's figures."""
    det = "" if rule["detection_gated"] else " Detection is reported, not gated: the card says the mask head was not trained."
    return (
        f"Rule (docs/verification.md): each group of decisions (detection on every input; bits on watermarked inputs; each "
        f"attack's views a group of their own) against PyTorch: no flip of a clear decision (|PyTorch| > {rule['clear_fraction']:g} x "
        f"the RMS of PyTorch's values in the group), at most floor({rule['near_flip_fraction']:g} x N) near flips, and SNR >= "
        f"{rule['floor_db']:g} dB ({rule['floor_why']}).{det}"
    )


def render_markdown(part: Part, r: dict[str, Any]) -> str:
    status = "PASSED" if r["passed"] else "FAILED: " + "; ".join(r["failures"])
    weights = "**RANDOM weights (not a trained model)**" if r["random_init"] else "checkpoint weights"
    rejected = f" Rejected: {', '.join(x['file'] + ' (' + x['why'] + ')' for x in r['rejected'])}." if r["rejected"] else ""
    notes = "".join(f"\n- {n}" for n in r.get("notes") or [])
    return (
        f"# Verification: {r['model_id']} {part.name} / {r['variant']}\n\n"
        f"{status}\n\n"
        f"`{r['file']}` against the PyTorch {part.name} ({weights}) on {r['num_images']} held-out inputs "
        f"({_names(r['images'])}), 256x256 views resized as official `detect()` does; {r['num_threads']} threads on {r['machine']}, "
        f"{r.get('kernels', 'XNNPACK')}.{rejected}\n\n"
        f"{rule_text(r['rule'])}\n" + (f"\nNotes:{notes}\n" if notes else "") + f"\n{render_table(part, r)}\n{render_flips(r)}\n"
    )


def _names(names: list[str], most: int = 12) -> str:
    return ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")
