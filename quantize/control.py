"""Accuracy-controlled quantization: the fewest op groups in float until a task target holds.

The task metric is what a watermark user sees: the fraction of decoded bits (bit-logit signs) that a
quantized extractor shares with the PyTorch reference, on the photo pool's **validation** split
(watermarked views when the model has an embedder; its clean images otherwise). A candidate reaches the
target when that metric does **and** it passes the project's rule (``models/gate.py``) on the whole
validation split, attacked views included: every group of decisions, on every attack a shared photo meets.
The evaluation split is never looked at here. As in NNCF's accuracy-aware post-training quantization:

1. the all-INT8 file is measured; if it reaches the target, nothing changes;
2. the graph's ops are grouped by scope (its blocks: a ConvNeXt stage, a ViT block, the head), at the
   deepest scope level that gives at most ``MAX_GROUPS`` groups holding a quantized op;
3. each group is ranked by the file quantized with that group alone kept float: first by how many of the
   rule's groups it fails, then by the metric, then by the worst group's SNR against PyTorch (a continuous
   measure where a small set shows no flip);
4. groups are added in rank order, one at a time, each file measured, until the target holds. Every
   step is one point of the agreement curve (``control-<variant>.png``).

Float is the added precision here: on XNNPACK, 16-bit activations have no fast kernels (4.9x FP32 at
full size, ``docs/toolchain.md``), while a float group costs little. The calibration statistics are
computed once and reused by every candidate. ai-edge-quantizer has no accuracy-driven search of its
own (its ``validate`` compares tensors, not a task metric), hence this module.
"""

from __future__ import annotations

import logging
import math
import shutil
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from videoseal_litert.calibration_data.build import attack_of, is_watermarked
from videoseal_litert.core.artifacts import atomic_path, write_json, write_text
from videoseal_litert.core.console import progress
from videoseal_litert.core.metrics import rms, snr_db, sqnr_db
from videoseal_litert.runtime.runners import open_runner

log = logging.getLogger(__name__)

MAX_GROUPS = 16
RECHECK = MAX_GROUPS  # groups measured again when the next in the ranking does not help (every one)


def improves(m: Measure, current: Measure) -> bool:
    """A step worth keeping without measuring the rest: fewer of the rule's groups failing, or as many and a higher
    metric (fewer flips alone is noise: on the tiny pair two such steps kept 60 ops float for nothing)."""
    return len(m.failures) < len(current.failures) or (len(m.failures) == len(current.failures) and m.value > current.value)


def score(m: Measure) -> tuple[float, ...]:
    """How good a candidate is, best first: fewer of the rule's groups failing, fewer decisions flipped, a higher
    metric, a higher worst-group SNR."""
    return (len(m.failures), m.flips, -m.value, -(m.tiebreak if m.tiebreak is not None else math.inf))


def op_groups(float_path: Path, quantized_ops: tuple[str, ...], max_groups: int = MAX_GROUPS) -> dict[str, list[str]]:
    """Scope prefix -> the output tensor names of every op under it, for the deepest scope level with at
    most ``max_groups`` groups that hold an op of ``quantized_ops`` (groups without one are dropped:
    keeping them float changes nothing)."""
    op_of = open_runner(float_path).op_of_tensor()
    scoped = {t: t.split(";", 1)[0].split("/") for t in op_of if ";" in t or "/" in t}
    best: dict[str, list[str]] = {}
    for depth in range(1, max((len(s) for s in scoped.values()), default=1) + 1):
        groups: dict[str, list[str]] = defaultdict(list)
        for t, s in scoped.items():
            groups["/".join(s[:depth])].append(t)
        useful = {g: ts for g, ts in groups.items() if any(op_of[t] in quantized_ops for t in ts)}
        if len(useful) > max_groups:
            break
        best = dict(useful)
    return best


@dataclass
class Measure:
    """One file's task metric (``value``, compared with the target), a continuous tie-break (higher is
    better), how many outputs miss (bits that differ; 0 where the metric has no such count), and what the
    rule finds wrong with it on the validation split (empty: it passes)."""

    value: float
    tiebreak: float | None
    misses: int = 0
    failures: list[str] = field(default_factory=list)
    flips: int = 0  # decisions of the rule's gated groups that differ from PyTorch's
    focus: list[int] | None = None  # the inputs of the groups that fail (None: every input)

    def reaches(self, target: float) -> bool:
        return self.value >= target and not self.failures


def bit_metric(part_bits: np.ndarray, ref_bits: np.ndarray) -> Measure:
    """Bit agreement with the reference's signs; tie-break: the bit logits' SQNR."""
    agree = (part_bits > 0) == (ref_bits > 0)
    return Measure(float(np.mean(agree)), sqnr_db(ref_bits, part_bits), int(np.sum(~agree)))


def watermark_snr_metric(covers: np.ndarray, ref_marked: np.ndarray, got_marked: np.ndarray) -> Measure:
    """The embedder's: the watermark (reference watermarked minus cover) against the file's error on
    the watermarked image, in dB; "10 dB below the watermark" is a value of 10."""
    v = snr_db(rms(ref_marked.astype(np.float64) - covers), max(rms(got_marked.astype(np.float64) - ref_marked), 1e-30))
    return Measure(v, v)


def task_metric(part_name: str, valset: Any, ref_outputs: dict[str, np.ndarray]) -> tuple[str, list[int], Callable[..., Measure]]:
    """A part's task metric on its validation set: (description, the inputs it counts, ``(outputs on those inputs,
    which of them (default all)) -> Measure``).

    Extractor: bit agreement with PyTorch on the watermarked inputs (all inputs for a model without an
    embedder). Embedder: the watermark's SNR against the file's error on ``watermarked``, in dB."""
    if part_name == "extractor":
        marked = [i for i, n in enumerate(valset.names) if is_watermarked(n) and attack_of(n) is None]
        rows = marked or list(range(len(valset.names)))
        ref = ref_outputs["bit_logits"][rows]
        what = "bit agreement with PyTorch on the validation split's " + ("watermarked views" if marked else "inputs")
        return what, rows, lambda got, which=None: bit_metric(got["bit_logits"], ref if which is None else ref[which])
    covers = np.concatenate([x["image"] for x in valset.inputs])
    want = ref_outputs["watermarked"]
    rows = list(range(len(valset.names)))
    return (
        "watermark SNR against the file's error (dB)",
        rows,
        lambda got, which=None: watermark_snr_metric(
            covers if which is None else covers[which], want if which is None else want[which], got["watermarked"]
        ),
    )


@dataclass
class ControlResult:
    target: float
    metric: str
    images: int
    start: Measure
    groups_considered: int
    ranking: list[dict[str, Any]] = field(default_factory=list)
    curve: list[dict[str, Any]] = field(default_factory=list)
    kept_float: list[str] = field(default_factory=list)  # scope groups, in the order they were added
    reranked: list[int] = field(default_factory=list)  # after how many kept groups the rest were measured again
    kept_tensors: list[str] = field(default_factory=list)
    reached: bool = False
    cost: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "metric": self.metric,
            "validation_inputs": self.images,
            "start": vars(self.start),
            "reached_means": "the metric at the target and the rule passed on the validation split (attacked views included)",
            "groups_considered": self.groups_considered,
            "ranking": self.ranking,
            "curve": self.curve,
            "kept_float_groups": self.kept_float,
            "reranked_after": self.reranked,
            "kept_float_ops": self.kept_tensors,
            "reached": self.reached,
            "cost": self.cost,
        }


def _rank(
    res: ControlResult, groups: dict[str, list[str]], trial: Callable[[list[str]], tuple[Measure, int]]
) -> dict[str, tuple[Measure, int]]:
    """Each group alone kept float, measured; ``res.ranking`` best first. Returns each group's (measure, size)."""
    alone: dict[str, tuple[Measure, int]] = {}
    for g in progress(list(groups), desc="ranking op groups on the validation split", unit="op groups"):
        alone[g] = trial(groups[g])
        m = alone[g][0]
        res.ranking.append(
            {
                "group": g,
                "ops": len(groups[g]),
                "value": m.value,
                "tiebreak": m.tiebreak,
                "misses": m.misses,
                "rule_failures": len(m.failures),
                "flips": m.flips,
            }
        )
    res.ranking.sort(key=lambda r: score(alone[r["group"]][0]))
    return alone


def _kept(res: ControlResult, added: str, keep: list[str], m: Measure, size: int) -> None:
    """A point of the curve: ``added`` kept float with those before it."""
    res.curve.append(
        {
            "groups": len(res.kept_float),
            "ops": len(keep),
            "added": added,
            "value": m.value,
            "tiebreak": m.tiebreak,
            "rule_failures": len(m.failures),
            "flips": m.flips,
            "size_bytes": size,
        }
    )
    log.info("accuracy control: + %s (%d ops float): %.4f, %d rule failure(s)", added, len(keep), m.value, len(m.failures))


def _started(res: ControlResult, size: int) -> None:
    """The curve's first point: the all-INT8 file."""
    start = res.start
    res.curve.append(
        {"groups": 0, "ops": 0, "value": start.value, "tiebreak": start.tiebreak, "rule_failures": len(start.failures), "size_bytes": size}
    )
    log.info(
        "accuracy control: all-INT8 %s %.4f on %d validation inputs (target %.4f), %d rule failure(s)",
        res.metric,
        start.value,
        res.images,
        res.target,
        len(start.failures),
    )


def control(
    float_path: Path,
    out: Path,
    quantize: Callable[[Path, list[str]], None],
    measure: Callable[[Path, list[int] | None], Measure],
    metric: str,
    images: int,
    target: float,
    quantized_ops: tuple[str, ...],
    cost: Callable[[Path, Path], dict[str, Any]] | None = None,
) -> ControlResult:
    """Write ``out`` (already the all-INT8 file) with the fewest op groups float that bring ``measure``
    (the task metric of a file on the validation inputs, and the rule there) to ``target``.
    ``measure(path, inputs)`` measures on those validation inputs only (None: all); ``quantize(path,
    keep_tensors)`` writes one candidate with those op outputs float; ``cost(all_int8, controlled)``
    measures what the kept groups cost, while ``out`` still holds the all-INT8 file."""
    start = measure(out, None)
    res = ControlResult(target, metric, images, start, 0)
    _started(res, out.stat().st_size)
    if start.reaches(target):
        res.reached = True
        return res
    groups = op_groups(float_path, quantized_ops)
    res.groups_considered = len(groups)
    cand = out.with_name(f".{out.name}.candidate.tmp")

    def trial(keep: list[str], inputs: list[int] | None = None) -> tuple[Measure, int]:
        quantize(cand, keep)
        return measure(cand, inputs), cand.stat().st_size

    try:
        # Ranked on the inputs of the groups the all-INT8 file fails (the rest cannot tell the groups apart); the
        # group chosen is then measured on the whole validation split.
        focus = start.focus if start.failures else None
        alone = _rank(res, groups, lambda keep: trial(keep, focus))
        remaining = [r["group"] for r in res.ranking]
        keep: list[str] = []
        current = start
        best = remaining[0]
        m, size = trial(groups[best]) if focus is not None else alone[best]
        while True:
            remaining.remove(best)
            res.kept_float.append(best)
            keep += groups[best]
            current = m
            _kept(res, best, keep, m, size)
            if m.reaches(target) or not remaining:
                res.reached = m.reaches(target)
                break
            # Lazy greedy: the next group in the ranking is kept when it makes the file better (``improves``); when not, a
            # group's worth has changed with those already float (on the tiny pair the head mattered only after the
            # stem and a middle block were float), so every remaining group is tried on top of those kept, each on the
            # inputs of the groups still failing (their rule needs nothing else), and the best is kept.
            best = remaining[0]
            m, size = trial(keep + groups[best])
            if improves(m, current):
                continue
            focus = current.focus if current.failures else None
            tried = {g: trial(keep + groups[g], focus) for g in remaining[:RECHECK]}
            res.reranked.append(len(res.kept_float))
            best = min(tried, key=lambda g: score(tried[g][0]))
            remaining.sort(key=lambda g: score(tried[g][0]) if g in tried else (math.inf,))
            m, size = trial(keep + groups[best]) if focus is not None else tried[best]
        quantize(cand, keep)
        res.kept_tensors = keep
        if cost is not None:
            res.cost = cost(out, cand)
        with atomic_path(out) as tmp:
            shutil.copyfile(cand, tmp)
    finally:
        cand.unlink(missing_ok=True)
    return res


def write_control_report(
    res: ControlResult, out_dir: Path, stem: str, title: str, random_init: bool = False, base: str = "INT8", more: str = "float"
) -> None:
    """``<stem>.json`` / ``.md`` / ``.png``: the target, the ranking, the curve, what was kept and its cost.
    ``base``: what the file starts as ("INT8", "INT4"); ``more``: the precision the control adds ("float", "8-bit")."""
    d = {"title": title, "random_init": random_init, "starts_as": base, "added_precision": more, **res.as_dict()}
    cost = res.cost
    write_json(out_dir / f"{stem}.json", d)
    lines = [
        f"# Accuracy control: {title}",
        "",
        f"Target: {res.metric} >= {res.target:g}, and the rule passed on the whole validation split, attacked views included "
        f"({res.images} validation inputs; the evaluation split is never used here). "
        f"All-{base}: {res.start.value:.4f}"
        + (f" ({res.start.misses} bits differ)" if res.start.misses else "")
        + (f", failing the rule in {len(res.start.failures)} group(s). " if res.start.failures else ", passing the rule. ")
        + (
            f"Target met by the all-{base} file: nothing kept {more}."
            if not res.kept_float and res.reached
            else f"{'Reached' if res.reached else 'NOT reached'} with {len(res.kept_float)} group(s), {len(res.kept_tensors)} ops {more}."
        ),
        "",
    ]
    if res.curve[1:]:
        lines += [
            f"| step | group kept {more} | ops {more} | metric | groups failing the rule | worst group SNR (dB) | size (MB) |",
            "|---|---|---|---|---|---|---|",
        ]
        for c in res.curve:
            s = "-" if c["tiebreak"] is None else f"{c['tiebreak']:.1f}"
            lines.append(
                f"| {c['groups']} | {c.get('added', f'(all {base})')} | {c['ops']} | {c['value']:.4f} | {c.get('rule_failures', '-')} | {s} | "
                f"{c['size_bytes'] / 1e6:.3f} |"
            )
        lines += [
            "",
            f"Ranking (each group alone {more}):",
            "",
            "| group | ops | metric | groups failing the rule | worst group SNR (dB) |",
            "|---|---|---|---|---|",
        ]
        for r in res.ranking:
            s = "-" if r["tiebreak"] is None else f"{r['tiebreak']:.1f}"
            lines.append(f"| {r['group']} | {r['ops']} | {r['value']:.4f} | {r.get('rule_failures', '-')} | {s} |")
    if cost:
        lines += [
            "",
            f"Cost: size {cost['size_ratio']:.3f}x the all-{base} file; latency {cost['latency_ratio']:.3f}x ({cost['latency_note']}).",
        ]
    write_text(out_dir / f"{stem}.md", "\n".join(lines) + "\n")
    _plot(res, out_dir / f"{stem}.png", title, more)


def _plot(res: ControlResult, path: Path, title: str, more: str = "float") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [c["ops"] for c in res.curve]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot(xs, [c["value"] for c in res.curve], "o-", label=f"validation: {res.metric}")
    ax.axhline(res.target, color="tab:red", ls="--", lw=1, label=f"target {res.target:g}")
    for c in res.curve[1:]:
        ax.annotate(c["added"].rsplit("/", 1)[-1], (c["ops"], c["value"]), fontsize=7, rotation=30)
    ax.set_xlabel(f"ops kept {more}")
    ax.set_ylabel(res.metric.split(" (")[0], fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
