"""The one rule that makes a file "verified": the decisions a user sees agree with PyTorch's, at margins taken
from PyTorch alone.

Every comparison of a file's outputs in the project goes through this module: x86 verification of every
variant, the accuracy control and the fallback, arm-check, the native C runner and the bundle's self-test,
web-check (both browser backends) and video (per frame and aggregated). Nothing else compares outputs
with a tolerance of its own.

Decisions are judged in **groups**, each on its own (:func:`judge_extractor`, :func:`judge_embedder`):

- ``detection``: the mask logit's sign, on every input (clean, watermarked and attacked views alike);
- ``bits``: the bit logits' signs, on watermarked inputs only (a clean photo's bits carry no message and
  enter no statistic at all);
- for an embedder, ``pixels``: the watermark PyTorch writes (``watermarked - cover``) against the file's
  error, and ``decoded bits`` / ``decoded detection``: PyTorch's extractor on the file's output against
  PyTorch's extractor on PyTorch's output;
- attacked views (JPEG, brightness, blur, resize of the watermarked views) are groups of their own,
  ``bits / jpeg_50`` and so on, each against PyTorch on the same attacked input.

For a decision group, ``S`` is the RMS of **PyTorch's** values over the group, never anything of the file.
A decision is *clear* when ``|PyTorch| > clear_fraction x S`` (0.5 unless a card lowers it). Any flipped
clear decision fails the file, named; near decisions may flip at most ``floor(0.005 x N)`` times in a group
of ``N`` (42 detections: none; 1008 bits: 5). The group's SNR (``S`` against the RMS of the file's error on
the group) must reach the variant's floor (``models/variants.py``), except the embedder's decoded groups,
judged by their flips alone (the pixels carry the embedder's noise). A runtime that re-runs a few of the
verification inputs (arm-check) is allowed the near flips of the group it drew them from (``Rule.drawn_from``),
so its verdict does not hang on its sample size. Where a card says the mask head was not
trained, detection groups are reported, not gated; detection is then judged through the message bits.

**Monotone**: S, the clear set and the allowance come from PyTorch alone, so moving any output further from
PyTorch's value (its error scaled by any factor >= 1) can only add flips and lower the SNR: it never turns a
FAIL into a PASS (``tests/test_gate.py`` checks it over seeded random cases).

A runtime that re-runs a verified file (an emulated ARM64 CPU, a browser backend, the C library) is judged
by the same rule against PyTorch, and its difference from the x86 outputs is bounded by
:func:`judge_runtime_difference`: at most 2 output steps of an integer output, 1% of S of a float one.

numpy and the standard library only (plus ``core/metrics.py``): the deployment bundle ships this file
beside its runners, so a phone's self-test applies the very same rule.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

try:  # inside the videoseal_litert package
    from videoseal_litert.core.metrics import rms, snr_db
except ImportError:  # a deployment bundle: metrics.py ships beside this file
    from metrics import rms, snr_db  # type: ignore[no-redef]

CLEAR_FRACTION = 0.5  # a decision is clear when |PyTorch| > this x S; a card may lower it, never raise it
NEAR_FLIP_FRACTION = 0.005  # at most floor(this x N) near decisions of a group may flip
RUNTIME_MAX_STEPS = 2  # another runtime's difference from x86 on an integer output, in its quantization steps
RUNTIME_MAX_FRACTION = 0.01  # ... on a float output, as a fraction of the group's S
MOST_LISTED = 50  # flips listed per group in a report (all are counted)

DETECTION, BITS, PIXELS = "detection", "bits", "pixels"
DECODED_BITS, DECODED_DETECTION = "decoded bits", "decoded detection"
ATTACK_SEPARATOR = " / "  # "bits / jpeg_50": a group on one attack's views


@dataclass(frozen=True)
class Floor:
    """The least SNR (dB) a group of one variant keeps against PyTorch, and the sentence that says why."""

    snr_db: float
    why: str = ""


@dataclass(frozen=True)
class Rule:
    """What one file is judged by: its variant's floor, the clear fraction, and whether detection gates."""

    floor: Floor
    clear_fraction: float = CLEAR_FRACTION
    detection_gated: bool = True  # False: the card says the mask head was not trained (reported, not gated)
    # A runtime that re-runs a verified file on a few of its verification inputs (arm-check's emulated CPUs)
    # is allowed the near flips of the whole set it drew them from: {group: decisions on x86}. Without it a
    # subset of 96 decisions (allowance 0) would fail on the very flips x86 showed and passed within its
    # allowance, and the verdict would depend on the runtime's sample size, not on the runtime.
    drawn_from: tuple[tuple[str, int], ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "floor_db": self.floor.snr_db,
            "floor_why": self.floor.why,
            "clear_fraction": self.clear_fraction,
            "near_flip_fraction": NEAR_FLIP_FRACTION,
            "detection_gated": self.detection_gated,
            **({"drawn_from": dict(self.drawn_from)} if self.drawn_from else {}),
        }

    def allowance(self, group: str, n: int) -> int:
        """Near flips a group of ``n`` decisions may have: floor(0.005 n), with n the size of the set the inputs
        were drawn from where the rule says (never fewer than the group's own)."""
        return allowed_near_flips(max(n, dict(self.drawn_from).get(group, 0)))

    def drawn(self, sizes: dict[str, int]) -> Rule:
        """This rule for a subset of a verification set whose groups held ``sizes`` decisions."""
        return replace(self, drawn_from=tuple(sorted((str(g), int(n)) for g, n in sizes.items())))

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Rule:
        return Rule(
            Floor(float(d["floor_db"]), d.get("floor_why", "")),
            float(d["clear_fraction"]),
            bool(d["detection_gated"]),
            tuple(sorted((str(g), int(n)) for g, n in (d.get("drawn_from") or {}).items())),
        )


def allowed_near_flips(n: int) -> int:
    """Near flips a group of ``n`` decisions may have: floor(0.005 n)."""
    return int(math.floor(NEAR_FLIP_FRACTION * n + 1e-9))


@dataclass(kw_only=True)
class GroupVerdict:
    """One group's figures, its flips and its failures (empty: it passed). ``gated`` False: reported only."""

    group: str
    decisions: int
    signal_rms: float
    noise_rms: float
    floor_db: float | None  # None: the SNR is reported, not judged
    gated: bool = True
    clear_threshold: float | None = None  # None: a group without decisions (pixels)
    clear: int = 0
    near_flips_allowed: int = 0
    clear_flips: list[dict[str, Any]] = field(default_factory=list)
    near_flips: list[dict[str, Any]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # what fails it (for a reported group: what would)

    @property
    def snr_db(self) -> float:
        return snr_db(self.signal_rms, self.noise_rms)

    @property
    def flips(self) -> int:
        return len(self.clear_flips) + len(self.near_flips)

    @property
    def passed(self) -> bool:
        return not self.failures

    def as_dict(self) -> dict[str, Any]:
        snr = self.snr_db
        return {
            "group": self.group,
            "gated": self.gated,
            "decisions": self.decisions,
            "signal_rms": self.signal_rms,
            "noise_rms": self.noise_rms,
            "snr_db": None if math.isinf(snr) and snr > 0 else round(snr, 3),
            "floor_db": self.floor_db,
            "clear_threshold": self.clear_threshold,
            "clear_decisions": self.clear,
            "clear_flips": len(self.clear_flips),
            "near_flips": len(self.near_flips),
            "near_flips_allowed": self.near_flips_allowed,
            "clear_flip_list": self.clear_flips[:MOST_LISTED],
            "near_flip_list": self.near_flips[:MOST_LISTED],
            "passed": self.passed,
            "failures": self.failures,
        }


@dataclass
class Verdict:
    """Every group of one file on one input set. ``failures``: the gated groups' (empty: PASSED); ``notes``: what
    the reported groups found."""

    rule: Rule
    groups: list[GroupVerdict] = field(default_factory=list)

    @property
    def failures(self) -> list[str]:
        return [f for g in self.groups if g.gated for f in g.failures]

    @property
    def notes(self) -> list[str]:
        return [f"{f} (reported, not gated)" for g in self.groups if not g.gated for f in g.failures]

    @property
    def passed(self) -> bool:
        return not self.failures

    def group(self, name: str) -> GroupVerdict | None:
        return next((g for g in self.groups if g.group == name), None)

    def as_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule.as_dict(),
            "groups": {g.group: g.as_dict() for g in self.groups},
            "passed": self.passed,
            "failures": self.failures,
            "notes": self.notes,
        }


def _flip_entry(rows: Sequence[str], column: Callable[[int], str], ref: np.ndarray, got: np.ndarray, i: int, j: int) -> dict[str, Any]:
    return {"input": rows[i], "output": column(j), "pytorch": float(ref[i, j]), "file": float(got[i, j])}


def _named(flips: list[dict[str, Any]], most: int = 5) -> str:
    shown = ", ".join(f"{f['input']} {f['output']} {f['pytorch']:+.3g} -> {f['file']:+.3g}" for f in flips[:most])
    return shown + (f" and {len(flips) - most} more" if len(flips) > most else "")


def judge_decisions(
    group: str,
    ref: np.ndarray,
    got: np.ndarray,
    rows: Sequence[str],
    column: Callable[[int], str],
    rule: Rule,
    floor_db: float | None,
    gated: bool = True,
) -> GroupVerdict:
    """One decision group: ``ref`` and ``got`` (N inputs, M outputs) are PyTorch's and the file's values of the
    group's decisions only (a decision is ``value > 0``). ``floor_db`` None: the SNR is reported, not judged."""
    ref = np.asarray(ref, dtype=np.float64)
    got = np.asarray(got, dtype=np.float64)
    if ref.shape != got.shape or ref.ndim != 2:
        raise ValueError(f"judge_decisions({group}): shapes {ref.shape} and {got.shape}; expected equal (inputs, outputs)")
    s = rms(ref)
    threshold = rule.clear_fraction * s
    flipped = (got > 0) != (ref > 0)
    clear = np.abs(ref) > threshold
    v = GroupVerdict(
        group=group,
        decisions=int(ref.size),
        signal_rms=s,
        noise_rms=rms(got - ref),
        floor_db=floor_db,
        gated=gated,
        clear_threshold=threshold,
        clear=int(clear.sum()),
        near_flips_allowed=rule.allowance(group, int(ref.size)),
    )

    def listed(mask: np.ndarray) -> list[dict[str, Any]]:
        out = [_flip_entry(rows, column, ref, got, int(i), int(j)) for i, j in zip(*np.nonzero(mask), strict=True)]
        return sorted(out, key=lambda f: -abs(f["pytorch"]))

    v.clear_flips = listed(flipped & clear)
    v.near_flips = listed(flipped & ~clear)
    why = []
    if v.clear_flips or len(v.near_flips) > v.near_flips_allowed:
        why.append(_flip_summary(group, ref, got, flipped, v))
    if floor_db is not None and ref.size and not v.snr_db >= floor_db:
        why.append(f"SNR {v.snr_db:.2f} dB < {floor_db:g} dB (error RMS {v.noise_rms:.4g} on PyTorch's RMS {s:.4g})")
    if why:
        v.failures.append(f"{group}: " + "; ".join(why))
    return v


def _flip_summary(group: str, ref: np.ndarray, got: np.ndarray, flipped: np.ndarray, v: GroupVerdict) -> str:
    """How a user would read the flips: for detection, photos flagged and photos missed; otherwise decisions flipped."""
    if group.split(ATTACK_SEPARATOR)[0] in (DETECTION, DECODED_DETECTION):
        neg, pos = ref[:, 0] <= 0, ref[:, 0] > 0
        parts = []
        if neg.any():
            parts.append(f"{int((flipped[:, 0] & neg).sum())} of {int(neg.sum())} inputs PyTorch finds unwatermarked flagged")
        if pos.any():
            parts.append(f"{int((flipped[:, 0] & pos).sum())} of {int(pos.sum())} it detects missed")
        head = ", ".join(parts)
    else:
        head = f"{v.flips} of {v.decisions} decisions flipped"
    detail = []
    if v.clear_flips:
        detail.append(f"clear (|PyTorch| > {v.clear_threshold:.3g}): {_named(v.clear_flips)}")
    if len(v.near_flips) > v.near_flips_allowed:
        detail.append(f"{len(v.near_flips)} near, at most {v.near_flips_allowed} allowed: {_named(v.near_flips, 3)}")
    return f"{head} ({'; '.join(detail)})"


def judge_signal(group: str, signal: np.ndarray, error: np.ndarray, floor_db: float, gated: bool = True) -> GroupVerdict:
    """A group without decisions: ``signal`` (what PyTorch writes, e.g. ``watermarked - cover``) against the
    file's ``error`` on it; its SNR must reach ``floor_db``."""
    return signal_verdict(group, rms(np.asarray(signal)), rms(np.asarray(error)), floor_db, gated)


def signal_verdict(group: str, signal_rms: float, noise_rms: float, floor_db: float, gated: bool = True) -> GroupVerdict:
    """:func:`judge_signal` from the two RMS values (a runtime that returns sums, not pixels: the browser)."""
    v = GroupVerdict(group=group, decisions=0, signal_rms=signal_rms, noise_rms=noise_rms, floor_db=floor_db, gated=gated)
    if not v.snr_db >= floor_db:
        v.failures.append(
            f"{group}: SNR {v.snr_db:.2f} dB < {floor_db:g} dB (the file's error RMS {noise_rms:.4g} against the watermark's {signal_rms:.4g})"
        )
    return v


def view_groups(attacks: Sequence[str | None]) -> dict[str | None, np.ndarray]:
    """Input indices per view kind: None for the clean and watermarked views, else the attack's name."""
    out: dict[str | None, list[int]] = {}
    for i, a in enumerate(attacks):
        out.setdefault(a, []).append(i)
    return {k: np.asarray(v, dtype=int) for k, v in out.items()}


def group_name(kind: str, attack: str | None) -> str:
    return kind if attack is None else f"{kind}{ATTACK_SEPARATOR}{attack}"


def _column(j: int) -> str:
    return f"bit {j}"


def judge_extractor(
    ref: np.ndarray,
    got: np.ndarray,
    rows: Sequence[str],
    watermarked: Sequence[bool],
    rule: Rule,
    attacks: Sequence[str | None] | None = None,
    decoded: bool = False,
) -> Verdict:
    """An extractor's logits, (N, 1 + nbits) with the mask logit first, against PyTorch's on the same inputs.

    ``watermarked[i]``: input i carries a message (its bits are judged); with no watermarked input at all
    (a model without an embedder) every input's bits are judged. ``attacks[i]``: the attack that made input
    i (None: a clean or watermarked view); each attack's inputs are groups of their own. ``decoded``: the
    logits are PyTorch's extractor reading an embedder's output (groups ``decoded ...``; their SNR is
    reported: the pixels carry the embedder's noise)."""
    ref = np.asarray(ref, dtype=np.float64)
    got = np.asarray(got, dtype=np.float64)
    if ref.shape != got.shape or ref.ndim != 2 or ref.shape[1] < 2:
        raise ValueError(f"judge_extractor: shapes {ref.shape} and {got.shape}; expected equal (inputs, 1 + nbits)")
    marked = np.asarray(watermarked, dtype=bool)
    if not marked.any():
        marked = np.ones(len(ref), dtype=bool)
    verdict = Verdict(rule)
    floor = None if decoded else rule.floor.snr_db
    det, bits = (DECODED_DETECTION, DECODED_BITS) if decoded else (DETECTION, BITS)
    for attack, idx in view_groups(attacks if attacks is not None else [None] * len(ref)).items():
        names = [rows[i] for i in idx]
        verdict.groups.append(
            judge_decisions(group_name(det, attack), ref[idx, :1], got[idx, :1], names, lambda j: "mask", rule, floor, rule.detection_gated)
        )
        m = idx[marked[idx]]
        if len(m):
            verdict.groups.append(
                judge_decisions(group_name(bits, attack), ref[m, 1:], got[m, 1:], [rows[i] for i in m], _column, rule, floor)
            )
    return verdict


def judge_embedder(
    covers: np.ndarray,
    ref: np.ndarray,
    got: np.ndarray,
    rule: Rule,
    rows: Sequence[str] | None = None,
    decoded: tuple[np.ndarray, np.ndarray] | None = None,
) -> Verdict:
    """An embedder's watermarked images against PyTorch's on the same covers and messages: the ``pixels``
    group, and where PyTorch's extractor read both (``decoded``: its logits on PyTorch's output and on the
    file's, (N, 1 + nbits)) the decoded groups, judged by their flips."""
    covers = np.asarray(covers, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    got = np.asarray(got, dtype=np.float64)
    verdict = Verdict(rule, [judge_signal(PIXELS, ref - covers, got - ref, rule.floor.snr_db)])
    if decoded is not None:
        names = list(rows) if rows is not None else [f"input {i}" for i in range(len(ref))]
        verdict.groups += judge_extractor(decoded[0], decoded[1], names, [True] * len(names), rule, decoded=True).groups
    return verdict


def judge_runtime_difference(base: np.ndarray, other: np.ndarray, signal_rms: float, step: float | None) -> dict[str, Any]:
    """Another runtime's outputs (``other``) against the x86 outputs of the same file (``base``): the largest
    difference may be at most ``RUNTIME_MAX_STEPS`` quantization steps of an integer output (``step``), or
    ``RUNTIME_MAX_FRACTION`` of the group's S (``signal_rms``, PyTorch's) for a float output."""
    d = np.abs(np.asarray(other, dtype=np.float64) - np.asarray(base, dtype=np.float64))
    largest = float(d.max()) if d.size else 0.0
    if step is not None and step > 0:
        bound, unit = RUNTIME_MAX_STEPS * step * (1 + 1e-6), f"{RUNTIME_MAX_STEPS} output steps ({step:.3g} each)"
    else:
        bound, unit = RUNTIME_MAX_FRACTION * signal_rms, f"{RUNTIME_MAX_FRACTION:.0%} of PyTorch's RMS {signal_rms:.4g}"
    f: dict[str, Any] = {
        "exact": largest == 0.0,
        "max_abs_diff": largest,
        "output_step": step,
        "diff_in_output_steps": None if not step else round(largest / step, 2),
        "bound": bound,
        "bound_is": unit,
        "failures": [],
    }
    if largest > bound:
        f["failures"].append(f"differs from x86 by {largest:.4g}, over {unit}")
    return f
