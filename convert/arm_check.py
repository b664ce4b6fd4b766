"""Every verified file of a model on the kernels a phone runs: ``make arm-check`` (``videoseal-litert arm-check``).

Each verified ``.tflite`` of each part (extractor and embedder, every variant whose verification
passed for the very bytes on disk; a failed or unverified file is refused by name unless
``--allow-unverified``) runs on a few held-out inputs through the x86 runner and through the ARM64
runner (``runtime/arm.py``) for each emulated CPU model. Written beside the model's other reports:
``arm64.json`` and ``arm64.md``.

Gates, the same for every part and variant (a miss is a ``VerificationError`` after the reports are
written):

- the ARM64 outputs are judged against PyTorch by the one rule of ``models/gate.py``, exactly as on
  x86 (``Part.figures``): every group of decisions (no clear flip, near flips within the allowance, the
  variant's SNR floor); an embedder's pixels and the decisions its output decodes to;
- the ARM64-x86 difference is bounded by the rule's ``judge_runtime_difference``: at most 2 quantization
  steps of an output dequantized from an integer tensor, 1% of PyTorch's RMS over the group for a float one.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from videoseal_litert.calibration_data.build import attack_of
from videoseal_litert.convert.options import RunOptions
from videoseal_litert.convert.parts import InputSet, Part, gate_line, parts_of
from videoseal_litert.convert.verify import failed_path, require_verified
from videoseal_litert.core.artifacts import machine_description, write_json, write_text
from videoseal_litert.core.console import progress, working
from videoseal_litert.core.errors import ArtifactMissingError, UsageError, VerificationError
from videoseal_litert.models.gate import RUNTIME_MAX_STEPS, Rule, judge_runtime_difference
from videoseal_litert.models.variants import names, rule_for, variant
from videoseal_litert.runtime.arm import CPU_MODELS, ArmRunner, Toolchain, ensure_toolchain
from videoseal_litert.runtime.runners import open_runner, run_all

log = logging.getLogger(__name__)

ARM_INPUTS = 4  # held-out inputs per file (evaluation photos, their watermarked twins, one JPEG'd view)


def arm_inputs(items: InputSet, n: int) -> InputSet:
    """``n`` inputs of the verification set: the first clean and watermarked views, and (for a model with an
    embedder) the first watermarked view after JPEG 50, where integer kernels part from PyTorch first."""
    base = [i for i, name in enumerate(items.names) if attack_of(name) is None]
    jpeg = [i for i, name in enumerate(items.names) if attack_of(name) == "jpeg_50"][:1]
    pick = sorted(base[: n - len(jpeg)] + jpeg) if n > 1 else base[:n]
    return InputSet([items.names[i] for i in pick], [items.inputs[i] for i in pick], items.tally, [items.fingerprint[i] for i in pick])


def drawn_rule(rule: Rule, report: dict[str, Any] | None) -> Rule:
    """The rule for a few inputs drawn from the file's verification set: each group keeps the near-flip
    allowance its whole group had in the x86 verification (``report``), so ARM64 is not held to a stricter
    verdict than x86 only because it ran fewer inputs. A file never verified keeps the plain rule."""
    groups = ((report or {}).get("gate") or {}).get("groups") or {}
    return rule.drawn({g: int(x["decisions"]) for g, x in groups.items() if x.get("decisions")}) if groups else rule


def chosen_files(part: Part, only: tuple[str, ...] | None, allow_unverified: bool) -> list[tuple[str, dict[str, Any]]]:
    """(variant, its verification status) of the part's files to run, in table order: every file there
    (a failed one under its ``.failed.tflite`` name), or ``only`` (file names without ``.tflite``, such as
    ``int8`` or ``embedder-int8``). A failed, unverified or changed file is UnverifiedFileError unless
    ``allow_unverified``, never dropped without a word."""
    md = part.opts.model_dir
    out = []
    for v in names(part.name):
        path = md.path / part.file(v)
        if only is not None and part.file(v).removesuffix(".tflite") not in only:
            continue
        if not path.exists() and not failed_path(path).exists():
            if only is not None:
                raise ArtifactMissingError(f"{path} does not exist: run `make {part.make_target(v)} MODEL={part.opts.spec.name}` first")
            continue
        out.append((v, require_verified(path, allow_unverified, "arm-check")))
    return out


def output_steps(path: Any, output: str) -> float | None:
    """The quantization step of the integer tensor an output is dequantized from, through reshapes and slices (None
    when the output is computed in float)."""
    r = open_runner(path, 1, use_xnnpack=False)
    interp = r.interpreter
    tensors = {d["index"]: d for d in interp.get_tensor_details()}
    producer = {int(t): o for o in interp._get_ops_details() for t in o["outputs"]}
    idx = int(r.outputs[output]["index"])
    while True:
        scale = tensors[idx]["quantization"][0]
        if scale:
            return float(scale)
        op = producer.get(idx)
        if op is None or op["op_name"] not in ("DEQUANTIZE", "RESHAPE", "SQUEEZE", "EXPAND_DIMS", "SLICE", "STRIDED_SLICE"):
            return None
        idx = int(op["inputs"][0])


ARM_MAX_STEPS = RUNTIME_MAX_STEPS  # integer kernels round differently on NEON and x86 (measured: about one output step at full size)


def arm_x86_figures(part: Part, x86: dict, arm: dict, steps: float | None, gate: dict[str, Any]) -> dict[str, Any]:
    """The ARM64-x86 difference on the part's judged outputs, bounded by the rule (``judge_runtime_difference``):
    in output steps for an integer output; for a float one against the smallest S of the file's groups
    (PyTorch's RMS: logits for an extractor, the watermark it writes for an embedder), the strictest."""
    outs = part.checked_outputs
    base = np.concatenate([x86[o].astype(np.float64).reshape(len(x86[outs[0]]), -1) for o in outs], axis=1)
    other = np.concatenate([arm[o].astype(np.float64).reshape(len(x86[outs[0]]), -1) for o in outs], axis=1)
    signal = min(g["signal_rms"] for g in gate["groups"].values() if g["signal_rms"] > 0) if gate["groups"] else 0.0
    f = judge_runtime_difference(base, other, signal, steps)
    return {**f, "max_abs_diff_to_x86": f["max_abs_diff"]}


def every_tensor_an_output(src: Path, dst: Path) -> None:
    """A copy of ``src`` whose subgraph outputs include every op's output tensor, so that XNNPACK
    materialises each one and both sides can be compared tensor by tensor. (Fusions across a tensor
    that is now an output are lost: the copy's final outputs say whether it still shows the difference.)"""
    from ai_edge_litert.tools import flatbuffer_utils

    from videoseal_litert.convert.tflite import as_numpy_buffers

    model = flatbuffer_utils.read_model(str(src))
    as_numpy_buffers(model)
    sg = model.subgraphs[0]
    outs = list(sg.outputs)
    for op in sg.operators:
        outs += [int(t) for t in op.outputs if t >= 0 and int(t) not in outs]
    sg.outputs = outs
    flatbuffer_utils.write_model(model, str(dst))


def divergence(path: Path, cpu: str, x: dict[str, np.ndarray], tc: Toolchain, threads: int, most: int = 8) -> dict[str, Any]:
    """Where ARM and x86 first part ways on one input: the ops, in graph order, whose output differs
    between the two while every input they read is equal (the op that introduces a difference)."""
    import tempfile

    from videoseal_litert.runtime.litert_runner import LiteRTRunner

    with tempfile.TemporaryDirectory(prefix="arm-trace-") as d:
        traced = Path(d) / path.name
        every_tensor_an_output(path, traced)
        local = LiteRTRunner(traced, threads)
        final_x86 = local(x)
        raw_x86 = {det["name"]: local.interpreter.get_tensor(det["index"]).copy() for det in local.interpreter.get_output_details()}
        arm = ArmRunner(traced, threads, cpu, tc, every_output=True)(x)
        interp = local.interpreter
        tensors = {det["index"]: det for det in interp.get_tensor_details()}
        ops = [o for o in interp._get_ops_details() if o["op_name"] != "DELEGATE"]
    differs = {n: not np.array_equal(v, arm["/" + n]) for n, v in raw_x86.items() if "/" + n in arm}
    first = []
    for o in ops:
        outs = [tensors[int(t)]["name"] for t in o["outputs"] if int(t) in tensors]
        ins = [tensors[int(t)]["name"] for t in o["inputs"] if t >= 0 and int(t) in tensors]
        if any(differs.get(n) for n in outs) and not any(differs.get(n) for n in ins):
            name = outs[0]
            a, b = raw_x86[name], arm["/" + name]
            scale = tensors[int(o["outputs"][0])]["quantization"][0]
            diff = float(np.max(np.abs(a.astype(np.float64) - b)))
            first.append(
                {
                    "op": o["op_name"],
                    "output": name,
                    "dtype": np.dtype(a.dtype).name,
                    "max_abs_diff": diff,
                    "in_steps": round(diff / scale, 2) if scale else None,
                    "elements_differing": int(np.sum(a != b)),
                    "elements": int(a.size),
                }
            )
    reproduced = any(not np.array_equal(final_x86[k], arm[k]) for k in final_x86)
    by_op: dict[str, int] = {}
    for f in first:
        by_op[f["op"]] = by_op.get(f["op"], 0) + 1
    return {
        "cpu": cpu,
        "tensors_compared": len(differs),
        "tensors_differing": int(sum(differs.values())),
        "difference_reproduced_with_every_tensor_an_output": reproduced,
        "introduced_by_op_type": by_op,
        "introduced_by": first[:most],
    }


def arm_check(
    opts: RunOptions,
    cpus: tuple[str, ...] = tuple(CPU_MODELS),
    files: tuple[str, ...] | None = None,
    inputs_per_file: int = ARM_INPUTS,
    toolchain: Toolchain | None = None,
    trace: bool = False,
) -> dict[str, Any]:
    unknown = [c for c in cpus if c not in CPU_MODELS]
    if unknown:
        raise UsageError(f"unknown ARM64 CPU model(s) {', '.join(unknown)}; choose from {', '.join(CPU_MODELS)}")
    # Which files, each verified (or allowed), before any emulator is set up: a refusal costs nothing.
    chosen = [(part, vs) for part in parts_of(opts) if (vs := chosen_files(part, files, opts.allow_unverified))]
    if toolchain is None:
        with working("setting up ARM64 emulation (once per machine: QEMU, an aarch64 Python, its wheels)"):
            toolchain = ensure_toolchain()
    tc = toolchain
    md, t0 = opts.model_dir, time.time()
    report: dict[str, Any] = {
        "model_id": opts.spec.name,
        "machine": machine_description(),
        "emulator": f"QEMU {tc.record['qemu_version']} user mode (Debian trixie qemu-user), aarch64 Python 3.11 (Debian 12), "
        + ", ".join(
            w["file"].split("-cp3")[0].replace("-", " ") for w in tc.record["wheels"] if w["file"].startswith(("ai_edge_litert", "numpy"))
        ),
        "cpu_models": {c: CPU_MODELS[c] for c in cpus},
        "parts": {},
    }
    failures: list[str] = []
    random_init = False
    used: list[dict[str, Any]] = []
    for part, vs in chosen:
        inputs = arm_inputs(part.verification_set(), inputs_per_file)
        ref = part.reference(inputs)
        random_init = random_init or ref.random_init
        entry: dict[str, Any] = {"inputs": inputs.names, "random_init": ref.random_init, "files": {}}
        for v, status in progress(vs, desc=f"{part.name} files on {len(cpus)} emulated ARM64 CPUs", unit="files"):
            path = Path(status["file"])
            used.append({"part": part.name, "variant": v, "file": path.name, "verification": status["status"]})
            rule = drawn_rule(rule_for(opts.spec, part.name, variant(v, part.name)), status.get("report"))
            x86 = run_all(open_runner(path, opts.threads), inputs.inputs)
            steps = output_steps(path, "bit_logits") if part.name == "extractor" else None
            per_cpu = {}
            for cpu in cpus:
                t1 = time.time()
                runner = ArmRunner(path, opts.threads, cpu, tc)
                arm = run_all(runner, inputs.inputs)
                judged = part.figures(inputs, ref, arm, rule)  # the rule, as on x86
                f = {
                    **arm_x86_figures(part, x86, arm, steps, judged["gate"]),
                    "gate": judged["gate"],
                    "bit_agreement_with_pytorch": judged.get(
                        "bit_agreement", (judged.get("decoding") or {}).get("bit_agreement_tflite_vs_pytorch_embedded")
                    ),
                }
                f["failures"] = [f"{part.file(v)} on {cpu}: {x}" for x in f["failures"] + judged["failures"]]
                deleg = runner.delegation() or {}
                f.update(
                    seconds=round(time.time() - t1, 1),
                    xnnpack_partitions=deleg.get("num_partitions"),
                    not_delegated=deleg.get("num_not_delegated"),
                )
                failures += f["failures"]
                per_cpu[cpu] = f
            entry["files"][path.name] = per_cpu
            differing = [c for c, f in per_cpu.items() if not f["exact"] and (steps is not None or f["max_abs_diff_to_x86"] > 1e-3)]
            if trace and part.name == "extractor" and differing:
                entry.setdefault("divergence", {})[part.file(v)] = divergence(path, differing[0], inputs.inputs[0], tc, opts.threads)
        report["parts"][part.name] = entry
    if not report["parts"]:
        raise ArtifactMissingError(f"no verified file in {md.path}: run `make convert MODEL={opts.spec.name}` (and `make quantize`) first")
    report.update(files_used=used, random_init=random_init, seconds=round(time.time() - t0, 1), passed=not failures, failures=failures)
    write_json(md / "arm64.json", report)
    write_text(md / "arm64.md", render(report))
    if failures:
        raise VerificationError("ARM64: " + "; ".join(failures[:5]) + (f"; and {len(failures) - 5} more" if len(failures) > 5 else ""))
    return report


def _fmt(v: float | None, spec: str = ".3g") -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def verdict_summary(f: dict[str, Any]) -> str:
    return gate_line(f["gate"])


def render(r: dict[str, Any]) -> str:
    lines = [
        f"# {r['model_id']} on ARM64 kernels (emulated)"
        + (" (RANDOM weights: agreement here is not fidelity)" if r["random_init"] else ""),
        "",
        f"Host: {r['machine']}. Emulator: {r['emulator']}.",
        "",
        "CPU models: " + "; ".join(f"`{c}` {k}" for c, k in r["cpu_models"].items()) + ".",
        "",
        f"Result: **{'PASSED' if r['passed'] else 'FAILED'}** ({r['seconds']} s). Each file's ARM64 outputs are judged against "
        f"PyTorch by the same rule as on x86 (docs/verification.md); the ARM64-x86 difference may be no more than "
        f"{ARM_MAX_STEPS} steps of an integer output, 1% of PyTorch's RMS for a float one.",
        "",
    ]
    unverified = [u for u in r.get("files_used", []) if u["verification"] != "verified"]
    if unverified:
        lines += [
            "**Run with --allow-unverified**: " + ", ".join(f"{u['file']} ({u['verification']})" for u in unverified) + ".",
            "",
        ]
    for part, title in (("extractor", "Extractor"), ("embedder", "Embedder")):
        ex = r["parts"].get(part)
        if not ex:
            continue
        lines += [
            f"## {title} ({len(ex['inputs'])} held-out inputs: {', '.join(ex['inputs'])})",
            "",
            "| file | CPU | exact | max diff to x86 | in output steps | bound | against PyTorch (the rule) | result |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for file, per in ex["files"].items():
            for cpu, f in per.items():
                cap = f"{f['bound']:.3g} ({f['bound_is']})"
                lines.append(
                    f"| {file} | {cpu} | {'yes' if f['exact'] else 'no'} | {_fmt(f['max_abs_diff_to_x86'])} | {_fmt(f['diff_in_output_steps'])} | "
                    f"{cap} | {verdict_summary(f)} | {'pass' if not f['failures'] else 'FAIL'} |"
                )
        flips = [
            (file, cpu, group, kind, x)
            for file, per in ex["files"].items()
            for cpu, f in per.items()
            for group, g in f["gate"]["groups"].items()
            for kind, key in (("clear", "clear_flip_list"), ("near", "near_flip_list"))
            for x in g.get(key, [])
        ]
        if flips:
            lines += [
                "",
                "Flips against PyTorch on ARM64 (any clear one fails; near ones within the group's allowance):",
                "",
                "| file | CPU | group | clear/near | input | output | PyTorch | ARM64 |",
                "|---|---|---|---|---|---|---|---|",
            ]
            lines += [
                f"| {file} | {cpu} | {group} | {kind} | {x['input']} | {x['output']} | {x['pytorch']:+.4g} | {x['file']:+.4g} |"
                for file, cpu, group, kind, x in flips[:40]
            ]
        for file, dv in ex.get("divergence", {}).items():
            lines += [
                "",
                f"Where {file} first differs on {dv['cpu']} (one input, every tensor made an output; difference "
                f"{'reproduced' if dv['difference_reproduced_with_every_tensor_an_output'] else 'NOT reproduced'} that way): "
                f"{dv['tensors_differing']} of {dv['tensors_compared']} tensors differ; introduced by "
                + ", ".join(f"{k} x{n}" for k, n in dv["introduced_by_op_type"].items())
                + ":",
                "",
                "| op | output | dtype | max diff | in steps | elements differing |",
                "|---|---|---|---|---|---|",
            ]
            lines += [
                f"| {f['op']} | {f['output'][-60:]} | {f['dtype']} | {f['max_abs_diff']:.3g} | {_fmt(f['in_steps'])} | {f['elements_differing']} / {f['elements']} |"
                for f in dv["introduced_by"]
            ]
        lines.append("")
    if r["failures"]:
        lines += ["## Failures", ""] + [f"- {f}" for f in r["failures"]]
    return "\n".join(lines) + "\n"
