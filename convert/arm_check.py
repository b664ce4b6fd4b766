"""Every verified file of a model on the kernels a phone runs: ``make arm-check`` (``videoseal-litert arm-check``).

Each verified ``.tflite`` of each part (extractor and embedder, every variant whose verification
report passed) runs on a few held-out inputs through the x86 runner and through the ARM64 runner
(``runtime/arm.py``) for each emulated CPU model; both are compared with each other and with PyTorch.
Written beside the model's other reports: ``arm64.json`` and ``arm64.md``.

Extractor, per CPU model and file: the largest ARM-x86 difference in the bit and mask logits (also in
steps of the output's quantization where the logits come out of an integer op), exact match, bit and
mask agreement with x86 and with PyTorch, and the **margin check**: a bit whose x86 |logit| is less
than twice the ARM-x86 difference is a *near-flip* (listed with image and bit), because that
difference could have turned its sign. Embedder: the largest pixel difference and PSNR to x86, and
whether the ARM output is within the variant's pixel floor against PyTorch.

Gates (a miss is a ``VerificationError`` after the reports are written): a bit may differ from x86
only where its x86 |logit| is within the ARM-x86 difference measured on the bits that did not flip
(a flipped bit moved by at least its own |logit|, so its own difference explains nothing); on a trained
model (not random weights) every bit of a watermarked input and every mask must equal x86's (the bits
of a clean photo carry no message: there they follow the first rule, and the report lists them; a
model without embedder weights has no watermarked input, so only the first rule and the mask apply);
an embedder file must keep its pixel floor.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from videoseal_litert.calibration_data.build import is_watermarked
from videoseal_litert.convert.artifacts import machine_description, read_json, write_json, write_text
from videoseal_litert.convert.console import progress, working
from videoseal_litert.convert.options import RunOptions
from videoseal_litert.convert.parts import InputSet, Part, parts_of, psnr_db
from videoseal_litert.models.errors import ArtifactMissingError, UsageError, VerificationError
from videoseal_litert.runtime.arm import CPU_MODELS, ArmRunner, Toolchain, ensure_toolchain
from videoseal_litert.runtime.runners import open_runner, run_all
from videoseal_litert.runtime.variants import floors_for, names

log = logging.getLogger(__name__)

ARM_INPUTS = 4  # held-out inputs per file (evaluation photos, their watermarked twins first pairs)


def verified_variants(part: Part, only: tuple[str, ...] | None = None) -> list[str]:
    """The part's variants whose file exists and whose verification report passed (in table order);
    ``only``: file names without ``.tflite`` (``int8``, ``embedder-int8``) to keep."""
    md = part.opts.model_dir
    out = []
    for v in names(part.name):
        if only is not None and part.file(v).removesuffix(".tflite") not in only:
            continue
        report = md.path / f"{part.report(v)}.json"
        if (md.path / part.file(v)).is_file() and report.is_file() and read_json(report).get("passed"):
            out.append(v)
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


def near_flips(names_: list[str], x86: np.ndarray, arm: np.ndarray, diff: float, most: int = 20) -> list[dict[str, Any]]:
    """Bits whose x86 |logit| is less than twice the ARM-x86 difference, smallest margin first."""
    rows, cols = np.nonzero(np.abs(x86) < 2 * diff)
    found = [
        {
            "image": names_[r],
            "bit": int(c),
            "x86_logit": float(x86[r, c]),
            "arm_logit": float(arm[r, c]),
            "flipped": bool((x86[r, c] > 0) != (arm[r, c] > 0)),
        }
        for r, c in zip(rows, cols, strict=True)
    ]
    return sorted(found, key=lambda f: abs(f["x86_logit"]))[:most]


def extractor_figures(inputs: InputSet, ref: dict, x86: dict, arm: dict, steps: float | None) -> dict[str, Any]:
    bx, ba, bp = x86["bit_logits"], arm["bit_logits"], ref["bit_logits"]
    # Agreement with PyTorch counts the watermarked inputs (a clean image's bits are noise), all without an
    # embedder; the trained-model gate counts watermarked inputs only (none: no bit carries a message).
    wm = [i for i, n in enumerate(inputs.names) if is_watermarked(n)]
    marked = wm or list(range(len(inputs.names)))
    mx, ma = x86["mask_logit"].reshape(len(bx), -1), arm["mask_logit"].reshape(len(bx), -1)
    bit_diff = float(np.max(np.abs(bx - ba)))
    mask_diff = float(np.max(np.abs(mx - ma)))
    flips = (bx > 0) != (ba > 0)
    near = near_flips(inputs.names, bx, ba, bit_diff)
    # A flipped bit moved by at least its own |logit|, so the difference that explains a flip is the one
    # measured on the bits that kept their sign: a flip further from zero than that is not kernel noise.
    kept = float(np.max(np.abs(bx - ba)[~flips])) if (~flips).any() else 0.0
    unexplained = [
        {"image": inputs.names[r], "bit": int(c), "x86_logit": float(bx[r, c]), "arm_logit": float(ba[r, c])}
        for r, c in zip(*np.nonzero(flips & (np.abs(bx) > kept)), strict=True)
    ]
    return {
        "exact": bool(np.array_equal(bx, ba) and np.array_equal(mx, ma)),
        "max_abs_diff_bit_logits": bit_diff,
        "max_abs_diff_unflipped_bits": kept,
        "max_abs_diff_mask_logit": mask_diff,
        "diff_in_output_steps": None if steps is None else round(bit_diff / steps, 2),
        "output_step": steps,
        "bit_agreement_with_x86": float(np.mean(~flips)),
        "bits_flipped_vs_x86": int(np.sum(flips)),
        "watermarked_inputs": len(wm),
        "bits_flipped_on_watermarked": int(np.sum(flips[wm])) if wm else 0,
        "mask_agreement_with_x86": float(np.mean((mx > 0) == (ma > 0))),
        "bit_agreement_with_pytorch": float(np.mean((ba[marked] > 0) == (bp[marked] > 0))),
        "x86_bit_agreement_with_pytorch": float(np.mean((bx[marked] > 0) == (bp[marked] > 0))),
        "smallest_x86_margin": float(np.min(np.abs(bx))),
        "near_flips": near,
        "unexplained_flips": unexplained,
    }


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


def embedder_figures(part: Part, variant: str, ref: dict, x86: dict, arm: dict) -> dict[str, Any]:
    out = "watermarked"
    d = np.abs(x86[out].astype(np.float64) - arm[out])
    floors = floors_for(part.opts.spec, part.name, variant)
    vs_ref = float(np.max(np.abs(arm[out].astype(np.float64) - ref[out])))
    limit = getattr(floors, "max_abs_pixel_diff", None)
    return {
        "exact": bool(np.array_equal(x86[out], arm[out])),
        "max_abs_pixel_diff_to_x86": float(d.max()),
        "psnr_to_x86_db": None if d.max() == 0 else round(psnr_db(x86[out], arm[out]), 2),
        "max_abs_pixel_diff_to_pytorch": vs_ref,
        "pixel_floor": limit,
        "within_pixel_floor": None if limit is None else bool(vs_ref <= limit),
    }


def _gate(part: Part, variant: str, cpu: str, f: dict[str, Any], random_init: bool) -> list[str]:
    where = f"{part.file(variant)} on {cpu}"
    if part.name == "extractor":
        bad = []
        if f["unexplained_flips"]:
            bad.append(
                f"{where}: {len(f['unexplained_flips'])} bit(s) flipped with an x86 |logit| above the ARM-x86 difference of the "
                f"other bits ({f['max_abs_diff_unflipped_bits']:.3g})"
            )
        if not random_init and (f["bits_flipped_on_watermarked"] or f["mask_agreement_with_x86"] < 1):
            bad.append(
                f"{where}: a trained model must decode every bit of a watermarked image and every mask as on x86 "
                f"({f['bits_flipped_on_watermarked']} bit(s) and {1 - f['mask_agreement_with_x86']:.0%} of masks differ)"
            )
        return bad
    if f["within_pixel_floor"] is False:
        return [f"{where}: pixels {f['max_abs_pixel_diff_to_pytorch']:.3g} from PyTorch, floor {f['pixel_floor']}"]
    return []


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
    for part in parts_of(opts):
        vs = verified_variants(part, files)
        if not vs:
            continue
        items = part.verification_set()
        inputs = InputSet(items.names[:inputs_per_file], items.inputs[:inputs_per_file], items.tally, items.fingerprint[:inputs_per_file])
        ref = part.reference(inputs)
        random_init = random_init or ref.random_init
        entry: dict[str, Any] = {"inputs": inputs.names, "random_init": ref.random_init, "files": {}}
        for v in progress(vs, desc=f"{part.name} files on {len(cpus)} emulated ARM64 CPUs"):
            path = md.path / part.file(v)
            x86 = run_all(open_runner(path, opts.threads), inputs.inputs)
            steps = output_steps(path, "bit_logits") if part.name == "extractor" else None
            per_cpu = {}
            for cpu in cpus:
                t1 = time.time()
                runner = ArmRunner(path, opts.threads, cpu, tc)
                arm = run_all(runner, inputs.inputs)
                f = (
                    extractor_figures(inputs, ref.outputs, x86, arm, steps)
                    if part.name == "extractor"
                    else embedder_figures(part, v, ref.outputs, x86, arm)
                )
                deleg = runner.delegation() or {}
                f.update(
                    seconds=round(time.time() - t1, 1),
                    xnnpack_partitions=deleg.get("num_partitions"),
                    not_delegated=deleg.get("num_not_delegated"),
                )
                failures += _gate(part, v, cpu, f, ref.random_init)
                per_cpu[cpu] = f
            entry["files"][part.file(v)] = per_cpu
            differing = [
                c for c, f in per_cpu.items() if not f["exact"] and (steps is not None or f.get("max_abs_diff_bit_logits", 0) > 1e-3)
            ]
            if trace and part.name == "extractor" and differing:
                entry.setdefault("divergence", {})[part.file(v)] = divergence(path, differing[0], inputs.inputs[0], tc, opts.threads)
        report["parts"][part.name] = entry
    if not report["parts"]:
        raise ArtifactMissingError(f"no verified file in {md.path}: run `make convert MODEL={opts.spec.name}` (and `make quantize`) first")
    report.update(random_init=random_init, seconds=round(time.time() - t0, 1), passed=not failures, failures=failures)
    write_json(md / "arm64.json", report)
    write_text(md / "arm64.md", render(report))
    if failures:
        raise VerificationError("ARM64: " + "; ".join(failures[:5]) + (f"; and {len(failures) - 5} more" if len(failures) > 5 else ""))
    return report


def _fmt(v: float | None, spec: str = ".3g") -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def render(r: dict[str, Any]) -> str:
    lines = [
        f"# {r['model_id']} on ARM64 kernels (emulated)"
        + (" (RANDOM weights: agreement here is not fidelity)" if r["random_init"] else ""),
        "",
        f"Host: {r['machine']}. Emulator: {r['emulator']}.",
        "",
        "CPU models: " + "; ".join(f"`{c}` {k}" for c, k in r["cpu_models"].items()) + ".",
        "",
        f"Result: **{'PASSED' if r['passed'] else 'FAILED'}** ({r['seconds']} s).",
        "",
    ]
    ex = r["parts"].get("extractor")
    if ex:
        lines += [
            f"## Extractor ({len(ex['inputs'])} held-out inputs: {', '.join(ex['inputs'])})",
            "",
            "| file | CPU | exact | max diff to x86 (bits) | in output steps | mask diff | bits flipped vs x86 (of them on watermarked inputs) | near-flips | smallest x86 margin | agreement with PyTorch, watermarked (x86) |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for file, per in ex["files"].items():
            for cpu, f in per.items():
                lines.append(
                    f"| {file} | {cpu} | {'yes' if f['exact'] else 'no'} | {_fmt(f['max_abs_diff_bit_logits'])} | {_fmt(f['diff_in_output_steps'])} | "
                    f"{_fmt(f['max_abs_diff_mask_logit'])} | {f['bits_flipped_vs_x86']} ({f['bits_flipped_on_watermarked']}) | {len(f['near_flips'])} | {_fmt(f['smallest_x86_margin'])} | "
                    f"{f['bit_agreement_with_pytorch']:.4f} ({f['x86_bit_agreement_with_pytorch']:.4f}) |"
                )
        near = [(file, cpu, n) for file, per in ex["files"].items() for cpu, f in per.items() for n in f["near_flips"]]
        if near:
            lines += [
                "",
                "Near-flips (x86 |logit| under twice the ARM-x86 difference):",
                "",
                "| file | CPU | image | bit | x86 logit | ARM logit | flipped |",
                "|---|---|---|---|---|---|---|",
            ]
            lines += [
                f"| {file} | {cpu} | {n['image']} | {n['bit']} | {n['x86_logit']:.4g} | {n['arm_logit']:.4g} | {'yes' if n['flipped'] else 'no'} |"
                for file, cpu, n in near[:40]
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
    em = r["parts"].get("embedder")
    if em:
        lines += [
            f"## Embedder ({len(em['inputs'])} held-out inputs)",
            "",
            "| file | CPU | exact | max pixel diff to x86 | PSNR to x86 dB | max pixel diff to PyTorch | floor | within |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for file, per in em["files"].items():
            for cpu, f in per.items():
                within = "" if f["within_pixel_floor"] is None else ("yes" if f["within_pixel_floor"] else "no")
                lines.append(
                    f"| {file} | {cpu} | {'yes' if f['exact'] else 'no'} | {_fmt(f['max_abs_pixel_diff_to_x86'])} | {_fmt(f['psnr_to_x86_db'])} | "
                    f"{_fmt(f['max_abs_pixel_diff_to_pytorch'])} | {_fmt(f['pixel_floor'])} | {within} |"
                )
        lines.append("")
    if r["failures"]:
        lines += ["## Failures", ""] + [f"- {f}" for f in r["failures"]]
    return "\n".join(lines) + "\n"
