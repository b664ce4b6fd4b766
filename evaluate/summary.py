"""The per-attack table the official evaluation reports, from the rows: JSON, Markdown and a PNG.

Per embedder x attack x variant: bit accuracy against the true message, agreement with the PyTorch
extractor's bits on the same attacked image, detection by the mask logit (> 0), detection by the
bits (binomial p-value < 1e-3, as the official evaluation computes it) and the median log10 p-value;
rates with 95% Wilson intervals (over bits for the bit rates, over images for the detection rates;
bits of one image are not independent, so the bit intervals are narrower than a per-image bootstrap's).
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from videoseal_litert.core.artifacts import atomic_path
from videoseal_litert.core.metrics import DETECTION_PVALUE, rate, rate_of

PVALUE_DETECTION = DETECTION_PVALUE  # one threshold: core.metrics


def summarize(table: Any, variants: list[str] | None = None) -> dict[str, Any]:
    """The summary of a rows table (``engines.read_rows``); ``variants`` in the order to show (default: by name)."""
    d = table.to_pydict()
    n = len(d["image"])
    errors = sorted({(d["image"][i], d["error"][i]) for i in range(n) if d["error"][i]})
    groups: dict[tuple[str, str, str], list[int]] = defaultdict(list)
    order: dict[str, tuple[int, str, float]] = {}
    for i in range(n):
        if d["error"][i]:
            continue
        groups[(d["embedder"][i], d["attack"][i], d["variant"][i])].append(i)
        order[d["attack"][i]] = (d["attack_order"][i], d["family"][i], d["strength"][i])
    out = []
    rank = {v: i for i, v in enumerate(variants or sorted({k[2] for k in groups}))}
    for (emb, attack, variant), idx in sorted(groups.items(), key=lambda kv: (kv[0][0], order[kv[0][1]][0], rank.get(kv[0][2], len(rank)))):
        nbits = np.array([d["nbits"][i] for i in idx])
        errs = np.array([d["bit_errors"][i] for i in idx])
        agree = np.array([d["agreement_with_pytorch"][i] for i in idx], dtype=float)
        k_bits, n_bits = int(nbits.sum() - errs.sum()), int(nbits.sum())
        entry = {
            "embedder": emb,
            "attack": attack,
            "family": order[attack][1],
            "strength": None if math.isnan(order[attack][2]) else order[attack][2],
            "variant": variant,
            "images": len(idx),
            "bit_accuracy": rate_of(k_bits, n_bits),
            "agreement_with_pytorch": None if np.isnan(agree).any() else rate_of(int(round(float(np.sum(agree * nbits)))), n_bits),
            "detected_mask": rate(np.array([d["detected"][i] for i in idx])),
            f"detected_p<{PVALUE_DETECTION:g}": rate(np.array([d["pvalue"][i] < PVALUE_DETECTION for i in idx])),
            "median_log10_pvalue": float(np.median([d["log10_pvalue"][i] for i in idx])),
        }
        out.append(entry)
    return {"rows": n, "images": len(set(d["image_index"])), "errors": [{"image": a, "error": b} for a, b in errors], "table": out}


def _pct(r: dict[str, Any] | None) -> str:
    return "-" if r is None else f"{r['rate']:.2%}"


def _pct_ci(r: dict[str, Any] | None) -> str:
    return "-" if r is None else f"{r['rate']:.2%} [{r['wilson95'][0]:.2%}, {r['wilson95'][1]:.2%}]"


def variants_of(s: dict[str, Any]) -> list[tuple[str, str]]:
    return list(dict.fromkeys((e["embedder"], e["variant"]) for e in s["table"]))


PYTORCH = "pytorch"


def family_table(s: dict[str, Any]) -> str:
    """Per attack family (all strengths together), one column per embedder/variant: bit accuracy, and beside each
    file its difference from the PyTorch decoder with the same embedder in percentage points; then the mask's
    detections (watermark detected by the mask logit) as counts, PyTorch's beside each file's. The terminal's table."""
    cols = variants_of(s)
    acc: dict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0, 0])
    det: dict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0, 0])
    fams: list[str] = []
    for e in s["table"]:
        fams.append(e["family"])
        key = (e["family"], e["embedder"], e["variant"])
        acc[key][0] += e["bit_accuracy"]["k"]
        acc[key][1] += e["bit_accuracy"]["n"]
        det[key][0] += e["detected_mask"]["k"]
        det[key][1] += e["detected_mask"]["n"]
    multi = len({c[0] for c in cols}) > 1
    names = [f"{v} ({emb})" if multi else v for emb, v in cols]

    def cell(f: str, emb: str, v: str) -> str:
        k, n = acc[(f, emb, v)]
        if not n:
            return "-"
        ref = acc[(f, emb, PYTORCH)]
        pp = "" if v == PYTORCH or not ref[1] else f" ({100 * (k / n - ref[0] / ref[1]):+.2f} pp)"
        return f"{k / n:.2%}{pp}"

    def mask(f: str, emb: str, v: str) -> str:
        k, n = det[(f, emb, v)]
        return f"{k}/{n}" if n else "-"

    lines = ["| attack family | " + " | ".join(names) + " |", "|---" * (1 + len(cols)) + "|"]
    for f in dict.fromkeys(fams):
        lines.append(f"| {f} | " + " | ".join(cell(f, emb, v) for emb, v in cols) + " |")
    lines += ["", "| mask detected | " + " | ".join(names) + " |", "|---" * (1 + len(cols)) + "|"]
    for f in dict.fromkeys(fams):
        lines.append(f"| {f} | " + " | ".join(mask(f, emb, v) for emb, v in cols) + " |")
    return "\n".join(lines)


def render(s: dict[str, Any], head: str) -> str:
    key = f"detected_p<{PVALUE_DETECTION:g}"
    lines = [head, "", "## By attack family (bit accuracy, every strength together)", "", family_table(s), "", "## By attack", ""]
    lines += [
        "| embedder | attack | variant | images | bit accuracy [95%] | agreement with PyTorch [95%] | mask detected | "
        f"p < {PVALUE_DETECTION:g} | median log10 p |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for e in s["table"]:
        lines.append(
            f"| {e['embedder']} | {e['attack']} | {e['variant']} | {e['images']} | {_pct_ci(e['bit_accuracy'])} | "
            f"{_pct_ci(e['agreement_with_pytorch'])} | {_pct(e['detected_mask'])} | {_pct(e[key])} | {e['median_log10_pvalue']:.1f} |"
        )
    if s["errors"]:
        lines += ["", f"## Images that could not be evaluated ({len(s['errors'])})", ""]
        lines += [f"- {e['image']}: {e['error']}" for e in s["errors"]]
    return "\n".join(lines) + "\n"


def plot(s: dict[str, Any], path: Path) -> None:
    """Bit accuracy per attack strength, one panel per family, one line per embedder/variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = variants_of(s)
    fams = list(dict.fromkeys(e["family"] for e in s["table"]))
    swept = [f for f in fams if len({e["attack"] for e in s["table"] if e["family"] == f}) > 1 or f == "jpeg_crop_brightness"]
    single = [f for f in fams if f not in swept]
    panels = swept + (["single"] if single else [])
    ncol = min(4, len(panels))
    nrow = math.ceil(len(panels) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.2 * ncol, 2.6 * nrow), squeeze=False)
    multi = len({c[0] for c in cols}) > 1
    for ax, panel in zip(axes.flat, panels, strict=False):
        for emb, v in cols:
            es = [
                e
                for e in s["table"]
                if e["embedder"] == emb and e["variant"] == v and (e["family"] in single if panel == "single" else e["family"] == panel)
            ]
            xs = [e["attack"] if panel == "single" else e["strength"] for e in es]
            ax.plot(xs, [e["bit_accuracy"]["rate"] for e in es], marker="o", ms=3, lw=1, label=f"{v} ({emb})" if multi else v)
        ax.set_title(panel, fontsize=9)
        ax.set_ylim(0.4, 1.02)
        ax.axhline(0.5, color="gray", lw=0.6, ls=":")
        ax.tick_params(labelsize=7)
        if panel == "single":
            ax.tick_params(axis="x", rotation=30)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    axes.flat[0].set_ylabel("bit accuracy")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)


def attack_table(s: dict[str, Any]) -> str:
    """Bit accuracy per attack, one column per embedder/variant (side by side): the video pass's terminal table."""
    cols = variants_of(s)
    by = {(e["attack"], e["embedder"], e["variant"]): e for e in s["table"]}
    multi = len({c[0] for c in cols}) > 1
    names = [f"{v} ({emb})" if multi else v for emb, v in cols]
    lines = ["| attack | " + " | ".join(names) + " |", "|---" * (1 + len(cols)) + "|"]
    for a in dict.fromkeys(e["attack"] for e in s["table"]):
        cells = [_pct(by[(a, emb, v)]["bit_accuracy"]) if (a, emb, v) in by else "-" for emb, v in cols]
        lines.append(f"| {a} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
