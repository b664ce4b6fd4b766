"""Stage 4: compare a converted file with the PyTorch reference, for either part, through a runner.

Checks names, then shapes, then values: the file's inputs and outputs must carry the part's
contract names and shapes, then every output is compared with the reference on the part's input
set, and the part's floors gate the figures (``convert/parts.py``). Writes
``verify-<prefix><variant>.json`` and ``.md``; raises VerificationError when a floor is missed.
The file is run by ``opts.opener`` (in-process LiteRT unless another runner is plugged in).
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from videoseal_litert.convert.artifacts import machine_description, write_json, write_text
from videoseal_litert.convert.console import progress
from videoseal_litert.convert.load import sha256_file
from videoseal_litert.convert.parts import InputSet, Part, Reference
from videoseal_litert.models.errors import VerificationError
from videoseal_litert.runtime.runners import Runner, kernels, run_all
from videoseal_litert.runtime.variants import floors_for

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


def run_file(part: Part, path: Path, inputs: InputSet, threads: int, opener: Any) -> dict[str, np.ndarray]:
    """The file's outputs on every input, (N, ...) by name, checked for names and shapes."""
    return _run(part, path, inputs, threads, opener)[0]


def _run(part: Part, path: Path, inputs: InputSet, threads: int, opener: Any) -> tuple[dict[str, np.ndarray], str]:
    runner = opener(path, threads)
    check_io(part, runner, path)
    got = run_all(runner, progress(inputs.inputs, desc=f"running {path.name}"))
    missing = sorted(set(part.contract.output_names) - set(got))
    if missing:
        raise VerificationError(f"{path}: no output named {', '.join(missing)}; outputs: {sorted(got)}")
    return got, kernels(runner)


def verify_file(part: Part, variant: str, path: Path, inputs: InputSet, ref: Reference) -> dict[str, Any]:
    """Verify one file of ``part``, write its JSON and Markdown reports, raise if it misses a floor."""
    opts = part.opts
    got, ran_on = _run(part, path, inputs, opts.threads, opts.opener)
    for name, want in ref.outputs.items():
        if got[name].shape != want.shape:
            raise VerificationError(f"{path}: output {name!r} has shape {got[name].shape[1:]}, PyTorch's {want.shape[1:]}")
    figures = part.figures(inputs, ref, got)
    del got
    floors = floors_for(opts.spec, part.name, variant)
    failures = part.check(figures, floors)
    checks = part.extra_checks(variant, path, ref)
    failures += [
        f"{name}: " + ", ".join(f"{k} {v}" for k, v in c.items() if k != "passed") for name, c in checks.items() if not c["passed"]
    ]
    report = {
        "model_id": opts.spec.name,
        "part": part.name,
        "variant": variant,
        "file": path.name,
        "sha256": sha256_file(path),
        "runner": opts.opener.__name__ if hasattr(opts.opener, "__name__") else type(opts.opener).__name__,
        "kernels": ran_on,
        "num_images": len(inputs.names),
        "images": inputs.names,
        "rejected": inputs.tally.as_dict()["rejected"],
        **figures,
        "checks": checks,
        "random_init": ref.random_init,
        "floors": asdict(floors),
        "passed": not failures,
        "failures": failures,
        "machine": machine_description(),
        "num_threads": opts.threads,
    }
    stem = part.report(variant)
    write_json(path.parent / f"{stem}.json", report)
    write_text(path.parent / f"{stem}.md", render_markdown(part, report))
    if failures:
        raise VerificationError(
            f"{opts.spec.name} {part.name} {variant} failed verification: " + "; ".join(failures) + f" (see {path.parent / stem}.md)"
        )
    return report


def render_table(part: Part, r: dict[str, Any]) -> str:
    rows = ["| figure | measured | floor |", "|---|---|---|"]
    return "\n".join(rows + [f"| {a} | {b} | {c} |" for a, b, c in part.table(r)])


def render_markdown(part: Part, r: dict[str, Any]) -> str:
    status = "PASSED" if r["passed"] else "FAILED: " + "; ".join(r["failures"])
    weights = "**RANDOM weights (not a trained model)**" if r["random_init"] else "checkpoint weights"
    rejected = f" Rejected: {', '.join(x['file'] + ' (' + x['why'] + ')' for x in r['rejected'])}." if r["rejected"] else ""
    return (
        f"# Verification: {r['model_id']} {part.name} / {r['variant']}\n\n"
        f"{status}\n\n"
        f"`{r['file']}` against the PyTorch {part.name} ({weights}) on {r['num_images']} held-out images "
        f"({', '.join(r['images'])}), 256x256 views resized as official `detect()` does; {r['num_threads']} threads on {r['machine']}, "
        f"{r.get('kernels', 'XNNPACK')}.{rejected}\n\n"
        f"{render_table(part, r)}\n"
    )
