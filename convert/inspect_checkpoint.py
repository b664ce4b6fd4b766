"""Checkpoint report: parameters per stage, statistics per tensor, FLOPs, suspicious tensors.

An all-zero or constant tensor is a sign of an untrained or broken checkpoint (one public
checkpoint of another detector shipped an all-zero encoder). Convolution and linear weights
that are entirely zero, and any tensor holding NaN or infinity, make ``convert`` refuse the
checkpoint (``inspect`` reports them with counts); other flags are informational
(LayerNorm scales of ones and zero biases are legitimate in an untrained layer).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from videoseal_litert.convert.load import Loaded, build_extractor, nonfinite_tensors, zero_weights
from videoseal_litert.models.families import FamilyConfig

log = logging.getLogger(__name__)


@dataclass
class TensorStats:
    name: str
    shape: list[int]
    numel: int
    mean: float
    std: float
    abs_max: float
    flag: str  # "", "all zero", "constant", "N NaN, M inf"


def count_flops(cfg: FamilyConfig) -> int:
    """FLOPs (2 per multiply-add, convolutions and matmuls) for one image, counted on the meta device."""
    module = build_extractor(cfg, device="meta")
    x = torch.empty(1, 3, cfg.img_size, cfg.img_size, device="meta")
    with FlopCounterMode(display=False) as counter:
        module(x)
    return int(counter.get_total_flops())


def inspect_extractor(loaded: Loaded) -> dict[str, Any]:
    state = loaded.module.state_dict()
    tensors, per_stage = [], defaultdict(int)
    for name, t in state.items():
        t = t.float()
        per_stage[loaded.family.group(name)] += t.numel()
        finite = torch.isfinite(t)
        if not bool(finite.all()):
            nan = int(torch.isnan(t).sum())
            flag = f"{nan} NaN, {int((~finite).sum()) - nan} inf"
            t = torch.where(finite, t, torch.zeros_like(t))  # statistics of the finite values
        elif not bool(t.any()):
            flag = "all zero"
        else:
            flag = "constant" if t.numel() > 1 and bool((t == t.flatten()[0]).all()) else ""
        tensors.append(
            TensorStats(
                name, list(t.shape), t.numel(), float(t.mean()), float(t.std()) if t.numel() > 1 else 0.0, float(t.abs().max()), flag
            )
        )
    flops = count_flops(loaded.config)
    return {
        "model_id": loaded.spec.name,
        "checkpoint": Path(loaded.checkpoint_path).name if loaded.checkpoint_path else None,  # the file, not where it lay
        "checkpoint_sha256": loaded.checkpoint_sha256,
        "random_init": loaded.random_init,
        "family": loaded.family.name,
        "config": asdict(loaded.config),
        "num_params": sum(per_stage.values()),
        "params_per_stage": dict(per_stage),
        "flops_256": flops,
        "gflops_256": round(flops / 1e9, 3),
        "zero_conv_linear_weights": zero_weights(state),
        "nonfinite_tensors": nonfinite_tensors(state),
        "flagged": [asdict(s) for s in tensors if s.flag],
        "tensors": [asdict(s) for s in tensors],
    }


def render_markdown(r: dict[str, Any]) -> str:
    weights = "**RANDOM weights (not a trained model)**" if r["random_init"] else f"`{r['checkpoint']}` (sha256 `{r['checkpoint_sha256']}`)"
    lines = [
        f"# Checkpoint report: {r['model_id']}",
        "",
        f"Weights: {weights}",
        "",
        f"{r['num_params']:,} parameters; {r['gflops_256']:.2f} GFLOPs per {r['config']['img_size']}x{r['config']['img_size']} image "
        "(2 FLOPs per multiply-add, convolutions and matmuls).",
        "",
        "| stage | parameters |",
        "|---|---|",
        *[f"| {k} | {v:,} |" for k, v in r["params_per_stage"].items()],
        "",
        f"## Flagged tensors ({len(r['flagged'])})",
        "",
    ]
    if r["zero_conv_linear_weights"]:
        lines += [
            f"**{len(r['zero_conv_linear_weights'])} convolution/linear weights are entirely zero: `convert` refuses this checkpoint.**",
            "",
        ]
    if r["nonfinite_tensors"]:
        lines += [
            f"**{len(r['nonfinite_tensors'])} tensors hold NaN or infinity: `convert` refuses this checkpoint "
            "(statistics below are of their finite values).**",
            "",
        ]
    if r["flagged"]:
        lines += [
            "| tensor | shape | flag |",
            "|---|---|---|",
            *[f"| {t['name']} | {t['shape']} | {t['flag']} |" for t in r["flagged"]],
            "",
        ]
    else:
        lines += ["None: no tensor is all zero, constant or non-finite.", ""]
    lines += [
        "## Per tensor",
        "",
        "| tensor | shape | mean | std | abs max |",
        "|---|---|---|---|---|",
        *[f"| {t['name']} | {t['shape']} | {t['mean']:.4g} | {t['std']:.4g} | {t['abs_max']:.4g} |" for t in r["tensors"]],
    ]
    return "\n".join(lines) + "\n"
