"""Which file do I ship: every file of a part with its size, latency, accuracy and memory, and the file
this project recommends for each class of phone, with the figures that decided it.

The rows come from the part's benchmark (size, latency ratios to FP32 at 1 and 2 threads, peak RSS
to load and run in a fresh process) and its verification reports (bit agreement with PyTorch; for
an embedder, how the extractor decodes its images against PyTorch's). The choice is a rule over
those measured figures, not a per-model list:

- only files that passed verification (the rule of docs/verification.md), and whose peak RSS fits the target's budget, are candidates;
- a file must reach :data:`AGREEMENT_TARGET` (every bit as PyTorch, to one in a thousand);
- flagship phone: the most faithful file on integer kernels (phones run int8 dot products;
  float files are the fallback when no integer file is faithful enough);
- mid-range phone: the smallest such file;
- low-RAM phone: the file with the smallest peak RSS, whatever its kernels.

Latency ratios are this machine's (x86; the report says which ISA); phones' ARM64 kernels differ, so
they inform the table and do not decide it.

Where each file runs (:data:`RUNTIMES`, measured by ``make web-check`` and the native runner, docs/web.md):
the native LiteRT C library (Android through JNI, Linux) runs every variant; a browser (LiteRT.js, WASM)
loads every variant but ``int8-full`` (the JS API has no int8 tensors), and fp16 runs 2-5x slower than
fp32 there; WebGPU was not measured on a real adapter here. The web page's pick is the flagship rule over
the files a browser loads.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from videoseal_litert.core.artifacts import read_json

AGREEMENT_TARGET = 0.999
INTEGER_KERNELS = ("int8", "int8-full", "int8-dynamic", "int4", "int4-mixed")


# runtime -> variants that do not load there, with the reason (measured: docs/web.md, make web-check)
RUNTIMES: dict[str, dict[str, str]] = {
    "native C library": {},
    "browser (WASM)": {"int8-full": "LiteRT.js has no int8 tensors: the file's int8 input cannot be fed"},
}
SLOW_IN_BROWSERS = {"fp16": "fp16 runs 2-5x slower than fp32 on WASM (extractor, measured by make web-check)"}


def runs_on(variant: str) -> list[str]:
    """The runtimes a file of ``variant`` loads on (with a note where it is slow)."""
    out = []
    for rt, refused in RUNTIMES.items():
        if variant not in refused:
            out.append(rt + (" (slow)" if rt.startswith("browser") and variant in SLOW_IN_BROWSERS else ""))
    return out


@dataclass(frozen=True)
class Target:
    name: str
    ram_mb: float  # peak RSS the model may take on such a phone (its app's share, not the phone's RAM)
    rule: str


TARGETS = (
    Target("flagship phone", 2048, "most faithful file on integer kernels within 2 GB"),
    Target("mid-range phone", 1024, "smallest faithful file on integer kernels within 1 GB"),
    Target("low-RAM phone", 512, "smallest peak RSS among faithful files within 512 MB"),
)


def _accuracy(part: str, rep: dict[str, Any] | None) -> tuple[float | None, float | None, str]:
    """(agreement with PyTorch, a secondary figure to break ties, what the agreement is)."""
    if rep is None:
        return None, None, "not verified"
    if part == "extractor":
        return rep.get("bit_agreement"), rep.get("sqnr_db"), "bits as PyTorch's (held-out photos)"
    dec = rep.get("decoding") or {}
    psnr = rep.get("psnr_vs_pytorch_db")
    if "bit_agreement_tflite_vs_pytorch_embedded" in dec:
        return dec["bit_agreement_tflite_vs_pytorch_embedded"], psnr, "bits the extractor reads, as from PyTorch's embedding"
    return None, psnr, "PIXELS ONLY: no extractor (or extractor weights) to decode its output, so never picked"


def rows(model_dir: Path, part: Any, bench: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per benchmarked file of ``part``."""
    out = []
    lat = bench["latency"]
    for v, size in bench["size"].items():
        path = model_dir / f"{part.report(v)}.json"
        rep = read_json(path) if path.exists() else None
        agreement, tie, what = _accuracy(part.name, rep)
        out.append(
            {
                "variant": v,
                "file": part.file(v),
                "size_mb": round(size["bytes"] / 1e6, 1),
                "size_ratio_to_fp32": size["ratio_to_fp32"],
                "latency_ratio_to_fp32": {t: lat[t][v]["ratio_to_fp32"] for t in lat if v in lat[t]},
                "peak_rss_interpreter_mb": bench["peak_rss_mb"].get(v),
                "peak_rss_weight_cache_mb": bench.get("peak_rss_weight_cache_mb", {}).get(v),
                "kernels": bench.get("kernels", {}).get(v),
                "verified": bool(rep and rep["passed"]),
                "agreement": agreement,
                "agreement_is": what,
                "secondary_db": None if tie is None else round(tie, 1),
            }
        )
        # What loading costs the cheaper way of running the file (an app can enable XNNPACK's weight cache): the rule weighs that.
        r = out[-1]
        ic, wc = r["peak_rss_interpreter_mb"], r["peak_rss_weight_cache_mb"]
        if wc is not None and (ic is None or wc < ic):
            r["peak_rss_mb"], r["load_with"] = wc, "weight cache"
        else:
            r["peak_rss_mb"], r["load_with"] = ic, None if ic is None else "interpreter"
    return out


def _faithful(r: dict[str, Any]) -> bool:
    """Verified, and its decisions as PyTorch's at the target; a pixels-only embedder (no extractor decoded what it
    writes) is never picked: the message it embeds was never checked."""
    return r["verified"] and r["agreement"] is not None and r["agreement"] >= AGREEMENT_TARGET


def recommend(table: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The file for each target and why, from the rows' figures (see the module docstring)."""
    picks = []
    for t in TARGETS:
        fits = [r for r in table if _faithful(r) and r["peak_rss_mb"] is not None and r["peak_rss_mb"] <= t.ram_mb]
        integer = [r for r in fits if r["variant"] in INTEGER_KERNELS]
        if t.name.startswith("flagship"):
            pool = integer or fits
            best = max(pool, key=lambda r: (r["agreement"] or 0.0, r["secondary_db"] or 0.0, -r["size_mb"]), default=None)
        elif t.name.startswith("mid"):
            best = min(integer or fits, key=lambda r: (r["size_mb"], r["peak_rss_mb"]), default=None)
        else:
            best = min(fits, key=lambda r: (r["peak_rss_mb"], r["size_mb"]), default=None)
        if best is None:
            smallest = min((r for r in table if r["verified"] and r["peak_rss_mb"]), key=lambda r: r["peak_rss_mb"], default=None)
            why = f"no verified file with decoded bits reaches {AGREEMENT_TARGET:.1%} agreement within {t.ram_mb:.0f} MB" + (
                f"; the smallest verified is {smallest['variant']} at {smallest['peak_rss_mb']:.0f} MB" if smallest else ""
            )
            picks.append({"target": t.name, "ram_mb": t.ram_mb, "rule": t.rule, "variant": None, "why": why})
            continue
        agree = "n/a" if best["agreement"] is None else f"{best['agreement']:.2%}"
        why = (
            f"{best['size_mb']:.1f} MB ({best['size_ratio_to_fp32']:.3f}x FP32), {best['peak_rss_mb']:.0f} MB peak RSS"
            + (" with XNNPACK's weight cache" if best.get("load_with") == "weight cache" else "")
            + f", agreement {agree}"
            + ("" if best["variant"] in INTEGER_KERNELS else "; float kernels: no integer file was faithful enough within the budget")
        )
        picks.append({"target": t.name, "ram_mb": t.ram_mb, "rule": t.rule, "variant": best["variant"], "file": best["file"], "why": why})
    web = [
        r for r in table if _faithful(r) and "browser (WASM)" in " ".join(runs_on(r["variant"])) and r["variant"] not in SLOW_IN_BROWSERS
    ]
    best = max(
        [r for r in web if r["variant"] in INTEGER_KERNELS] or web,
        key=lambda r: (r["agreement"] or 0.0, r["secondary_db"] or 0.0, -r["size_mb"]),
        default=None,
    )
    rule = "most faithful file a browser loads (not int8-full), integer kernels first, not fp16 (slow on WASM)"
    picks.append(
        {
            "target": "web page (LiteRT.js)",
            "ram_mb": None,
            "rule": rule,
            "variant": best and best["variant"],
            "file": best and best["file"],
            "why": "no verified file a browser loads reaches the target"
            if best is None
            else f"{best['size_mb']:.1f} MB, runs on " + ", ".join(runs_on(best["variant"])),
        }
    )
    return picks


def ship_section(model_dir: Path, part: Any, bench: dict[str, Any]) -> dict[str, Any]:
    table = rows(model_dir, part, bench)
    return {"agreement_target": AGREEMENT_TARGET, "rows": table, "recommended": recommend(table)}


def render(ship: dict[str, Any], title: str) -> list[str]:
    """Markdown lines: the table, then the recommendation per target."""
    lines = [
        f"## Which file do I ship: {title}",
        "",
        "| file | size MB | x FP32 size | x FP32 latency, 1 / 2 threads | agreement with PyTorch | peak RSS MB (Interpreter / weight cache) | runs on | verified |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in ship["rows"]:
        lat = " / ".join(f"{r['latency_ratio_to_fp32'][t]:.2f}" for t in sorted(r["latency_ratio_to_fp32"], key=int))
        agree = "-" if r["agreement"] is None else f"{r['agreement']:.2%}"
        rss = " / ".join("-" if r.get(k) is None else f"{r[k]:.0f}" for k in ("peak_rss_interpreter_mb", "peak_rss_weight_cache_mb"))
        lines.append(
            f"| `{r['file']}` | {r['size_mb']:.1f} | {r['size_ratio_to_fp32']:.3f} | {lat} | {agree} | {rss} | {', '.join(runs_on(r['variant']))} | {'yes' if r['verified'] else 'no'} |"
        )
    lines += ["", f"Agreement: {ship['rows'][0]['agreement_is'] if ship['rows'] else '-'}; target {ship['agreement_target']:.1%}.", ""]
    lines += ["| target | recommended | rule | why |", "|---|---|---|---|"]
    for p in ship["recommended"]:
        lines.append(f"| {p['target']} | {('`' + p['file'] + '`') if p['variant'] else 'none'} | {p['rule']} | {p['why']} |")
    lines.append("")
    return lines
