"""Where a part's time goes, float and INT8, and which more ops could run integer: ``videoseal-litert op-cost``.

``make op-cost MODEL=...`` measures two things on the part's model and writes ``op-cost.{json,md}``
(``embedder-op-cost.*`` for ``PART=embedder``) beside its other reports:

1. **Cost of each op group, by removal.** The part's leaf modules that keep their input's shape
   (depthwise convolutions, LayerNorm, GELU, GRN, ...) are grouped by kind; for each group the part
   is converted once more with the group replaced by identity and quantized with the family's
   ``int8`` recipe. A group's cost is the latency of the full file minus that of the file without it,
   in FP32 and in INT8, all files timed interleaved in one run at 1 and 2 threads. What remains (the
   full file minus every group) is the GEMMs (1x1 and strided convolutions, linears) and the rest.
   Removal, because XNNPACK runs the whole graph as one delegate partition: LiteRT's Python API has
   no per-op timer inside it, and timing ops one by one outside the graph misses the fused layout.
   The numbers of a file with a group removed are garbage; only its time is used.
2. **Integer candidates.** Each op type of the float graph that the family's static policy leaves
   float is added to the policy's static ops, one at a time: whether XNNPACK still takes every op, the
   latency against ``int8`` and FP32, and the task metric on the validation split (the accuracy
   control's: bit agreement with PyTorch for an extractor) against the target.

Timings depend on the CPU's vector ISA (named in the report); compare ratios from one run only.
"""

from __future__ import annotations

import copy
import logging
import tempfile
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from videoseal_litert.convert.bench import interleaved_medians
from videoseal_litert.convert.parts import Part
from videoseal_litert.convert.tflite import convert_fp32
from videoseal_litert.core.artifacts import machine_description, write_json, write_text
from videoseal_litert.core.console import progress
from videoseal_litert.models.families import QuantPolicy
from videoseal_litert.models.variants import VARIANTS
from videoseal_litert.quantize.calibrate import calibrate_part
from videoseal_litert.quantize.control import task_metric
from videoseal_litert.quantize.quantize_stage import quantize_to
from videoseal_litert.runtime.runners import Opener, open_runner, run_all

log = logging.getLogger(__name__)

# Ops that move or reshape data rather than compute, and the graph's edges: never candidates.
STRUCTURAL = {"INPUT", "OUTPUT", "RESHAPE", "TRANSPOSE", "CONCATENATION", "SLICE", "STRIDED_SLICE", "PAD", "QUANTIZE", "DEQUANTIZE"}
# Timing calibration (the removal files): a handful of photos; ranges barely move kernel speed.
TIMING_CALIBRATION_INPUTS = 4


def group_kind(module: nn.Module) -> str | None:
    """The removal group of a leaf module, or None when it is not removable: GEMMs (linears and dense
    convolutions) carry the model's FLOPs and change the channel count; containers are not leaves."""
    if any(True for _ in module.children()) or isinstance(module, nn.Identity | nn.Dropout | nn.Linear):
        return None
    if isinstance(module, nn.Conv2d):
        return "depthwise conv" if module.groups == module.in_channels == module.out_channels > 1 else None
    return type(module).__name__


def removable_groups(named: nn.Module, sample_inputs: dict[str, torch.Tensor]) -> dict[str, list[str]]:
    """Kind -> qualified names of the leaf modules of that kind whose output has their input's shape
    (seen on one forward pass of ``sample_inputs``): replacing them by identity keeps the graph valid."""
    kinds = {n: k for n, m in named.named_modules() if n and (k := group_kind(m))}
    same: dict[str, bool] = {}

    def hook(name: str) -> Callable[[nn.Module, tuple, Any], None]:
        def record(_m: nn.Module, args: tuple, out: Any) -> None:
            x = args[0] if args else None
            ok = isinstance(x, torch.Tensor) and isinstance(out, torch.Tensor) and x.shape == out.shape
            same[name] = same.get(name, True) and ok

        return record

    handles = [named.get_submodule(n).register_forward_hook(hook(n)) for n in kinds]
    try:
        with torch.no_grad():
            named(**sample_inputs)
    finally:
        for h in handles:
            h.remove()
    groups: dict[str, list[str]] = defaultdict(list)
    for n, k in kinds.items():
        if same.get(n):
            groups[k].append(n)
    return dict(groups)


def without(named: nn.Module, names: list[str]) -> nn.Module:
    """A copy of ``named`` with the modules ``names`` replaced by identity."""
    m = copy.deepcopy(named)
    for n in names:
        parent, _, attr = n.rpartition(".")
        setattr(m.get_submodule(parent) if parent else m, attr, nn.Identity())
    return m


def candidate_ops(fp32: Path, policy: QuantPolicy, opener: Opener | None = None) -> list[str]:
    """Compute op types of the float graph that the policy's static ops leave float, most frequent first
    (the op list needs the Interpreter runner's op details: ``open_runner`` unless another is given)."""
    from ai_edge_quantizer import qtyping

    known = qtyping.TFLOperationName.__members__  # what the quantizer can configure (not the DELEGATE node)
    counts = Counter((opener or open_runner)(fp32).op_of_tensor().values())
    return [op for op, _ in counts.most_common() if op in known and op not in STRUCTURAL and op not in policy.static]


def op_cost(part: Part, threads: tuple[int, ...] = (1, 2), runs: int = 10, candidates: list[str] | None = None) -> dict[str, Any]:
    opts = part.opts
    md = opts.model_dir
    fp32 = md.require(part.file("fp32"), part.make_target("fp32"))
    policy = part.family.quant
    loaded = part.load()
    random_init = loaded.random_init
    named = part.named(loaded)
    groups = removable_groups(named, part.sample_inputs())
    with tempfile.TemporaryDirectory(dir=md.path) as d:
        tmp = Path(d)
        floats = {"full": fp32}
        for kind, names in progress(list(groups.items()), desc="converting without each op group", unit="op groups"):
            floats[kind] = tmp / f"fp32-without-{len(floats)}.tflite"
            convert_fp32(without(named, names), part.sample_inputs(), floats[kind])
        del named, loaded
        ints = {}
        for kind, path in progress(list(floats.items()), desc="quantizing them (int8 recipe)", unit="files"):
            ints[kind] = tmp / f"int8-{path.name}"
            quantize_to(
                path, ints[kind], VARIANTS["int8"], calibrate_part(part, path, limit=TIMING_CALIBRATION_INPUTS)[0], [], False, policy
            )
        files = {f"fp32:{k}": p for k, p in floats.items()} | {f"int8:{k}": p for k, p in ints.items()}
        timing = {str(t): interleaved_medians(opts, files, t, runs) for t in threads}
        removal = _removal_rows(groups, timing)
        cand_rows = _candidates(part, fp32, policy, tmp, candidates, threads[-1], runs)
    report = {
        "model_id": opts.spec.name,
        "part": part.name,
        "random_init": random_init,
        "machine": machine_description(),
        "runs": runs,
        "policy_static": list(policy.static),
        "median_ms_by_threads": {t: {k: v for k, v in m.items()} for t, m in timing.items()},
        "removal": removal,
        "candidates": cand_rows,
    }
    write_json(md / f"{part.prefix}op-cost.json", report)
    write_text(md / f"{part.prefix}op-cost.md", render(report))
    return report


def _removal_rows(groups: dict[str, list[str]], timing: dict[str, dict[str, float]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for t, m in timing.items():
        f_full, i_full = m["fp32:full"], m["int8:full"]
        rows = []
        for kind, names in groups.items():
            fc, ic = f_full - m[f"fp32:{kind}"], i_full - m[f"int8:{kind}"]
            rows.append(
                {
                    "group": kind,
                    "modules": len(names),
                    "fp32_ms": round(fc, 2),
                    "fp32_share": round(fc / f_full, 3),
                    "int8_ms": round(ic, 2),
                    "int8_share_of_fp32": round(ic / f_full, 3),
                }
            )
        rest_f = f_full - sum(r["fp32_ms"] for r in rows)
        rest_i = i_full - sum(r["int8_ms"] for r in rows)
        rows.append(
            {
                "group": "rest (GEMMs: linears, dense and strided convs; everything not removed)",
                "modules": None,
                "fp32_ms": round(rest_f, 2),
                "fp32_share": round(rest_f / f_full, 3),
                "int8_ms": round(rest_i, 2),
                "int8_share_of_fp32": round(rest_i / f_full, 3),
            }
        )
        out[t] = {"fp32_ms": f_full, "int8_ms": i_full, "int8_ratio_to_fp32": round(i_full / f_full, 3), "groups": rows}
    return out


def _candidates(part: Part, fp32: Path, policy: QuantPolicy, tmp: Path, only: list[str] | None, threads: int, runs: int) -> dict[str, Any]:
    from videoseal_litert.quantize.quantize_stage import default_target

    opts = part.opts
    valset = part.validation_set()
    ref = part.reference(valset)
    what, rows, metric = task_metric(part.name, valset, ref.outputs)
    qsvs = calibrate_part(part, fp32)[0]
    ops = only if only is not None else candidate_ops(fp32, policy)
    files = {"fp32": fp32}
    trials = {"int8": policy} | {
        f"int8+{op}": QuantPolicy(static=(*policy.static, op), dynamic=(), weight_only=tuple(w for w in policy.weight_only if w != op))
        for op in ops
    }
    out_rows = []
    for name, pol in progress(list(trials.items()), desc="trying more ops in int8", unit="trials"):
        path = tmp / f"{name.replace('+', '-')}.tflite"
        quantize_to(fp32, path, VARIANTS["int8"], qsvs, [], False, pol)
        runner = opts.opener(path, opts.threads)
        deleg = runner.delegation() or {}
        m = metric(run_all(runner, (valset.inputs[i] for i in rows)))
        files[name] = path
        out_rows.append(
            {
                "variant": name,
                "static_ops": list(pol.static),
                "metric": round(m.value, 6),
                "misses": m.misses,
                "not_delegated": deleg.get("num_not_delegated"),
                "partitions": deleg.get("num_partitions"),
                "size_bytes": path.stat().st_size,
            }
        )
    med = interleaved_medians(opts, files, threads, runs)
    for r in out_rows:
        r["latency_ratio_to_fp32"] = round(med[r["variant"]] / med["fp32"], 3)
        r["latency_ratio_to_int8"] = round(med[r["variant"]] / med["int8"], 3)
    target = default_target(part)
    for r in out_rows:
        r["meets_target"] = None if target is None else bool(r["metric"] >= target)
    return {"metric": what, "validation_inputs": len(rows), "target": target, "threads": threads, "fp32_ms": med["fp32"], "rows": out_rows}


def render(r: dict[str, Any]) -> str:
    title = f"# Where the time goes: {r['model_id']} {r['part']}" + (" (RANDOM weights: timings only)" if r["random_init"] else "")
    lines = [
        title,
        "",
        f"Measured on {r['machine']}; medians of {r['runs']} interleaved runs; `int8` is the family's recipe (static: {', '.join(r['policy_static'])}).",
        "",
    ]
    lines += ["## Cost of each op group (latency of the full file minus the file with the group removed)", ""]
    for t, block in r["removal"].items():
        lines += [
            f"{t} thread(s): FP32 {block['fp32_ms']:.1f} ms, int8 {block['int8_ms']:.1f} ms ({block['int8_ratio_to_fp32']:.3f}x FP32)",
            "",
            "| group | modules | FP32 ms | share of FP32 | int8 file ms | as share of FP32 |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {g['group']} | {g['modules'] if g['modules'] is not None else ''} | {g['fp32_ms']:.1f} | {g['fp32_share']:.1%} | {g['int8_ms']:.1f} | {g['int8_share_of_fp32']:.1%} |"
            for g in block["groups"]
        ]
        lines.append("")
    c = r["candidates"]
    target = "no target" if c["target"] is None else f"target {c['target']}"
    lines += [
        "## One more op type in static int8",
        "",
        f"Task metric: {c['metric']} ({c['validation_inputs']} inputs; {target}); latency at {c['threads']} thread(s), interleaved.",
        "",
        "| variant | metric | meets target | ops not delegated | latency / FP32 | latency / int8 | MB |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {x['variant']} | {x['metric']:.4f} | {'' if x['meets_target'] is None else ('yes' if x['meets_target'] else 'no')} | {x['not_delegated']} | {x['latency_ratio_to_fp32']:.3f} | {x['latency_ratio_to_int8']:.3f} | {x['size_bytes'] / 1e6:.2f} |"
        for x in c["rows"]
    ]
    return "\n".join(lines) + "\n"
