"""Benchmark a part: latency of PyTorch eager and every file of the part, interleaved in one run.

Runners are opened once and warmed up; then each round times one call of every runner in turn, so
drift on shared cores hits all alike. Median and p90 over the rounds, at each thread count; ratios
to FP32 come from the same run. Above the memory budget (ChunkySeal) the files run one after
another instead, and the report says so. Peak RSS of each file is measured in a fresh process
(``runtime/rss.py``), from the OS.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from videoseal_litert.convert.options import RunOptions
from videoseal_litert.convert.parts import Part
from videoseal_litert.convert.ship import render as render_ship
from videoseal_litert.convert.ship import ship_section
from videoseal_litert.convert.verify import failed_path, require_verified
from videoseal_litert.core.artifacts import collect_if_large, machine_description, read_json, tool_versions, write_json, write_text
from videoseal_litert.core.console import progress
from videoseal_litert.models.variants import names
from videoseal_litert.runtime.rss import sample
from videoseal_litert.runtime.runners import Runner, kernels

log = logging.getLogger(__name__)

INTERLEAVE_BUDGET_BYTES = 6 * 2**30


def _stats(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms)
    return {"median_ms": round(float(np.median(a)), 3), "p90_ms": round(float(np.percentile(a, 90)), 3), "runs": len(ms)}


def time_interleaved(runners: dict[str, Runner], x: dict[str, np.ndarray], runs: int, warmup: int) -> dict[str, list[float]]:
    """Milliseconds per call of each runner, one call of each per round."""
    for r in runners.values():
        for _ in range(warmup):
            r(x)
    ms: dict[str, list[float]] = {k: [] for k in runners}
    for _ in range(runs):
        for k, r in runners.items():
            t0 = time.perf_counter()
            r(x)
            ms[k].append((time.perf_counter() - t0) * 1e3)
    return ms


def interleaved_medians(opts: RunOptions, paths: dict[str, Path], threads: int, runs: int = 10, warmup: int = 2) -> dict[str, float]:
    """Median latency (ms) of each file, timed in alternating rounds."""
    runners = {k: opts.opener(p, threads) for k, p in paths.items()}
    x = sample(next(iter(runners.values())).input_shapes)
    return {k: round(float(np.median(v)), 3) for k, v in time_interleaved(runners, x, runs, warmup).items()}


def peak_rss_subprocess(path: Path, threads: int, runs: int = 3, cache: Path | None = None) -> float:
    out = subprocess.run(
        [sys.executable, "-m", "videoseal_litert.runtime.rss", str(path), str(threads), str(runs), *([str(cache)] if cache else [])],
        capture_output=True,
        text=True,
        check=True,
    )
    return round(float(out.stdout.strip().splitlines()[-1]), 1)


def peak_rss_weight_cache(path: Path, threads: int) -> float | None:
    """Peak RSS with XNNPACK's weight cache (LiteRT CompiledModel): the larger of the first run, which
    builds the cache, and a second one, which reuses it (an app pays both, on first and later launches);
    None for a file the CompiledModel runner does not take (integer inputs or outputs)."""
    with tempfile.TemporaryDirectory(prefix=".xnnpack-cache-", dir=path.parent) as d:
        try:
            return max(peak_rss_subprocess(path, threads, 1, Path(d) / "weights.bin") for _ in range(2))
        except subprocess.CalledProcessError:
            return None


def chosen_files(part: Part, allow_unverified: bool) -> dict[str, dict[str, Any]]:
    """Every file of the part there (a failed one under its ``.failed.tflite`` name) and its verification
    status; UnverifiedFileError for a failed, unverified or changed one unless ``allow_unverified``."""
    md = part.opts.model_dir
    out = {}
    for v in names(part.name):
        path = md / part.file(v)
        if path.exists() or failed_path(path).exists():
            status = require_verified(path, allow_unverified, "bench")
            if status["status"] == "verified":
                md.require(part.file(v), part.make_target(v))  # and the very file its stage wrote
            out[v] = status
    return out


def bench(opts: RunOptions, part: Part, threads: tuple[int, ...] = (1, 2), runs: int = 20, warmup: int = 3) -> dict[str, Any]:
    md = opts.model_dir
    md.require(part.file("fp32"), part.make_target("fp32"))
    chosen = chosen_files(part, opts.allow_unverified)
    files = {v: Path(c["file"]) for v, c in chosen.items()}
    desc = read_json(md.require(part.description_file, part.make_target("fp32")))
    x = {k: v.numpy() for k, v in part.sample_inputs().items()}
    loaded = part.load()
    torch_runner = part.torch_runner(loaded)
    # Interleaving holds every runner at once (file + XNNPACK's packed weights, ~2x each file).
    need = sum(2 * p.stat().st_size for p in files.values()) + sum(t.numel() * 4 for t in loaded.module.parameters())
    sequential = need > INTERLEAVE_BUDGET_BYTES
    eager: dict[int, list[float]] = {}
    if sequential:  # PyTorch first, then free it before any file is opened
        for t in threads:
            torch.set_num_threads(t)
            eager[t] = time_interleaved({"pytorch": torch_runner}, x, runs, warmup)["pytorch"]
        del torch_runner
    nbytes = sum(t.numel() * 4 for t in loaded.module.parameters())
    del loaded
    collect_if_large(nbytes)
    results: dict[str, Any] = {}
    for t in progress(threads, desc=f"benchmarking the {part.name}", unit="thread counts"):
        torch.set_num_threads(t)
        if sequential:
            timings: dict[str, list[float]] = {}
            for v, p in files.items():
                timings.update({v: time_interleaved({v: opts.opener(p, t)}, x, runs, warmup)[v]})
                collect_if_large(p.stat().st_size)
            timings["pytorch"] = eager[t]
        else:
            runners: dict[str, Runner] = {v: opts.opener(p, t) for v, p in files.items()}
            timings = time_interleaved({**runners, "pytorch": torch_runner}, x, runs, warmup)
        stats = {v: _stats(ms) for v, ms in timings.items()}
        base = stats["fp32"]["median_ms"]
        for s in stats.values():
            s["ratio_to_fp32"] = round(s["median_ms"] / base, 3)
        results[str(t)] = stats
    fp32_size = files["fp32"].stat().st_size
    sizes = {v: {"bytes": p.stat().st_size, "ratio_to_fp32": round(p.stat().st_size / fp32_size, 4)} for v, p in files.items()}
    rss = {v: peak_rss_subprocess(p, max(threads), runs=1 if sequential else min(3, runs)) for v, p in files.items()}
    rss_cache = {v: peak_rss_weight_cache(p, max(threads)) for v, p in files.items()}
    ran_on = {}
    for v, p in files.items():  # one at a time: a large file's runner is not held beside another
        ran_on[v] = kernels(opts.opener(p, 1))
        collect_if_large(p.stat().st_size)
    stages = {k: {"wall_s": r.get("wall_s"), "peak_rss_mb": r.get("peak_rss_mb")} for k, r in md.stages().items()}
    report = {
        "model_id": desc["model_id"],
        "part": part.name,
        "random_init": desc["random_init"],
        "machine": machine_description(),
        "tool_versions": tool_versions(),
        "inputs": {k: list(v.shape) for k, v in x.items()},
        "runs": runs,
        "warmup": warmup,
        "mode": "sequential: files one after another (all runners at once would exceed the memory budget)"
        if sequential
        else "interleaved: one call of every file and of PyTorch per round",
        "latency": results,
        "size": sizes,
        "peak_rss_mb": rss,
        "peak_rss_weight_cache_mb": rss_cache,
        "kernels": ran_on,
        "verification": {v: c["status"] for v, c in chosen.items()},
        "stages": stages,
        "note": "CPU latencies are from this machine (see machine); phones with int8 dot-product instructions differ. "
        "Compare ratios within one run, not absolute times across runs.",
    }
    report["ship"] = ship_section(md.path, part, report)
    return report


def render_markdown(r: dict[str, Any]) -> str:
    lines = [
        f"# Benchmark: {r['model_id']} {r['part']}" + (" (RANDOM weights)" if r["random_init"] else ""),
        "",
        f"Machine: {r['machine']}. {r['runs']} runs after {r['warmup']} warm-ups ({r['mode']}); inputs {r['inputs']}.",
        "",
        r["note"],
        "",
    ]
    unverified = {v: st for v, st in r.get("verification", {}).items() if st != "verified"}
    if unverified:
        lines += ["**Benchmarked with --allow-unverified**: " + ", ".join(f"{v} ({st})" for v, st in unverified.items()) + ".", ""]
    for t, stats in r["latency"].items():
        lines += [
            f"## {t} thread(s)",
            "",
            "| variant | median ms | p90 ms | x FP32 latency | size MB | x FP32 size | peak RSS MB |",
            "|---|---|---|---|---|---|---|",
        ]
        for v, s in stats.items():
            size = r["size"].get(v)
            lines.append(
                f"| {v} | {s['median_ms']:.1f} | {s['p90_ms']:.1f} | {s['ratio_to_fp32']:.2f} | "
                + (f"{size['bytes'] / 1e6:.1f} | {size['ratio_to_fp32']:.3f} | {r['peak_rss_mb'][v]:.0f} |" if size else "- | - | - |")
            )
        lines.append("")
    if r.get("ship"):
        lines += render_ship(r["ship"], f"{r['model_id']} {r['part']}" + (" (RANDOM weights)" if r["random_init"] else ""))
    if r.get("kernels"):
        lines += ["Kernels: " + "; ".join(f"{v}: {k}" for v, k in r["kernels"].items()), ""]
    if r.get("stages"):
        lines += [
            "## Pipeline stages (wall time and peak RSS of each stage's own run)",
            "",
            "| stage | wall s | peak RSS MB |",
            "|---|---|---|",
        ]
        lines += [f"| {k} | {v['wall_s']} | {v['peak_rss_mb']} |" for k, v in r["stages"].items()]
        lines.append("")
    return "\n".join(lines)


def write_bench(model_dir: Path, part: Part, report: dict[str, Any]) -> None:
    write_json(model_dir / f"{part.prefix}bench.json", report)
    write_text(model_dir / f"{part.prefix}bench.md", render_markdown(report))
