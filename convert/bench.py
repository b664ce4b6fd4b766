"""Benchmark: latency of PyTorch eager and every ``.tflite`` variant, interleaved in one run.

Interpreters are created once and warmed up; then each round times one invocation of every
variant in turn, so drift on shared cores hits all variants alike. Median and p90 over the
rounds, at each thread count; ratios to FP32 come from the same run. Peak RSS of each variant
is measured in a fresh subprocess (load + a few runs), from the OS (``VmHWM``).
"""

from __future__ import annotations

import gc
import logging
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from videoseal_litert.convert.artifacts import ModelDir, machine_description, read_json, tool_versions, write_json, write_text
from videoseal_litert.convert.console import progress
from videoseal_litert.convert.runtime import TFLiteExtractor

log = logging.getLogger(__name__)

VARIANT_ORDER = ("fp32", "fp16", "int8-dynamic", "int8", "int8-full")

# VmHWM (not getrusage): ru_maxrss survives fork+exec, so a child started from this big process
# would report the parent's peak; VmHWM belongs to the child's own address space.
_RSS_SCRIPT = """
import sys, numpy as np
from videoseal_litert.convert.runtime import TFLiteExtractor
r = TFLiteExtractor(sys.argv[1], num_threads=int(sys.argv[2]))
x = np.random.default_rng(0).random(r.input_shape, dtype=np.float32)
for _ in range(int(sys.argv[3])):
    r(x)
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0]
print(int(hwm.split()[1]) / 1024.0)
"""


def _stats(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms)
    return {"median_ms": round(float(np.median(a)), 3), "p90_ms": round(float(np.percentile(a, 90)), 3), "runs": len(ms)}


def interleaved_medians(paths: dict[str, Path], threads: int, runs: int = 10, warmup: int = 2) -> dict[str, float]:
    """Median latency (ms) of each model, timed in alternating rounds so shared-core drift hits all alike."""
    from ai_edge_litert.interpreter import Interpreter

    runners = {}
    for k, p in paths.items():
        it = Interpreter(model_path=str(p), num_threads=threads)
        it.allocate_tensors()
        d = it.get_input_details()[0]
        x = np.random.default_rng(0).random(d["shape"]).astype(np.float32)
        if d["dtype"] != np.float32:
            x = (x * 255 - 128).astype(d["dtype"])
        it.set_tensor(d["index"], x)
        runners[k] = it
    ms: dict[str, list[float]] = {k: [] for k in runners}
    for it in runners.values():
        for _ in range(warmup):
            it.invoke()
    for _ in range(runs):
        for k, it in runners.items():
            t0 = time.perf_counter()
            it.invoke()
            ms[k].append((time.perf_counter() - t0) * 1e3)
    return {k: round(float(np.median(v)), 3) for k, v in ms.items()}


def peak_rss_subprocess(path: Path, threads: int, runs: int = 3) -> float:
    out = subprocess.run(
        [sys.executable, "-c", _RSS_SCRIPT, str(path), str(threads), str(runs)], capture_output=True, text=True, check=True
    )
    return round(float(out.stdout.strip().splitlines()[-1]), 1)


def bench(
    model_dir: Path, load_module: Callable[[], torch.nn.Module] | None, threads: tuple[int, ...] = (1, 2), runs: int = 20, warmup: int = 3
) -> dict[str, Any]:
    md = ModelDir(model_dir.parent, model_dir.name)
    files = {v: md.require(f"{v}.tflite", "convert" if v == "fp32" else "quantize") for v in VARIANT_ORDER if (md / f"{v}.tflite").exists()}
    if "fp32" not in files:
        md.require("fp32.tflite", "convert")
    desc = read_json(md.require("model.json", "load"))
    stages = md.stages()
    shape = tuple(desc["input"]["shape"])
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    xt = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
    # Interleaving holds every interpreter at once (file + XNNPACK's packed weights, ~2x each file).
    # Above the budget (ChunkySeal) the variants run one after another instead, and the report says so.
    module = load_module() if load_module is not None else None
    need = sum(2 * p.stat().st_size for p in files.values()) + (
        sum(t.numel() * 4 for t in module.parameters()) if module is not None else 0
    )
    sequential = need > INTERLEAVE_BUDGET_BYTES
    eager: dict[int, list[float]] = {}
    if sequential and module is not None:  # PyTorch first, then free it before any interpreter loads
        eager = {t: _time_eager(module, xt, t, runs, warmup) for t in threads}
        module = None
        gc.collect()
    results: dict[str, Any] = {}
    for t in progress(threads, desc="benchmarking (thread counts)"):
        if sequential:
            timings = _run_sequential(files, x, t, runs, warmup)
            if eager:
                timings["pytorch"] = eager[t]
        else:
            timings = _run_interleaved(files, module, x, xt, t, runs, warmup)
        stats = {v: _stats(ms) for v, ms in timings.items()}
        base = stats["fp32"]["median_ms"]
        for s in stats.values():
            s["ratio_to_fp32"] = round(s["median_ms"] / base, 3)
        results[str(t)] = stats
    fp32_size = files["fp32"].stat().st_size
    sizes = {v: {"bytes": p.stat().st_size, "ratio_to_fp32": round(p.stat().st_size / fp32_size, 4)} for v, p in files.items()}
    rss = {v: peak_rss_subprocess(p, max(threads), runs=1 if sequential else min(3, runs)) for v, p in files.items()}
    stage_cost = {k: {"wall_s": r.get("wall_s"), "peak_rss_mb": r.get("peak_rss_mb")} for k, r in stages.items()}
    return {
        "model_id": desc["model_id"],
        "random_init": desc["random_init"],
        "machine": machine_description(),
        "tool_versions": tool_versions(),
        "input_shape": list(shape),
        "runs": runs,
        "warmup": warmup,
        "mode": "sequential: variants one after another (all interpreters at once would exceed the memory budget)"
        if sequential
        else "interleaved: one run of every variant per round",
        "latency": results,
        "size": sizes,
        "peak_rss_mb": rss,
        "stages": stage_cost,
        "note": "CPU latencies are from this machine (x86-64, AVX2, no VNNI); phones with int8 dot-product "
        "instructions differ. Compare ratios within one run, not absolute times across runs.",
    }


INTERLEAVE_BUDGET_BYTES = 6 * 2**30


def _run_interleaved(files, module, x, xt, t, runs, warmup) -> dict[str, list[float]]:
    runners = {v: TFLiteExtractor(p, num_threads=t) for v, p in files.items()}
    timings: dict[str, list[float]] = {v: [] for v in runners}
    if module is not None:
        timings["pytorch"] = []
    torch.set_num_threads(t)
    for r in runners.values():
        for _ in range(warmup):
            r(x)
    if module is not None:
        with torch.no_grad():
            for _ in range(warmup):
                module(xt)
    for i in range(runs):
        for v, r in runners.items():
            t0 = time.perf_counter()
            r(x)
            timings[v].append((time.perf_counter() - t0) * 1e3)
        if module is not None:
            with torch.no_grad():
                t0 = time.perf_counter()
                module(xt)
                timings["pytorch"].append((time.perf_counter() - t0) * 1e3)
        log.info("  threads %d: round %d/%d", t, i + 1, runs)
    return timings


def _run_sequential(files, x, t, runs, warmup) -> dict[str, list[float]]:
    timings: dict[str, list[float]] = {}
    for v, p in files.items():
        r = TFLiteExtractor(p, num_threads=t)
        for _ in range(warmup):
            r(x)
        timings[v] = []
        for _ in range(runs):
            t0 = time.perf_counter()
            r(x)
            timings[v].append((time.perf_counter() - t0) * 1e3)
        del r
        gc.collect()
        log.info("  threads %d: %s done", t, v)
    return timings


def _time_eager(module, xt, t, runs, warmup) -> list[float]:
    torch.set_num_threads(t)
    out = []
    with torch.no_grad():
        for i in range(warmup + runs):
            t0 = time.perf_counter()
            module(xt)
            if i >= warmup:
                out.append((time.perf_counter() - t0) * 1e3)
    log.info("  threads %d: pytorch done", t)
    return out


def render_markdown(r: dict[str, Any]) -> str:
    lines = [
        f"# Benchmark: {r['model_id']}" + (" (RANDOM weights)" if r["random_init"] else ""),
        "",
        f"Machine: {r['machine']}. {r['runs']} runs after {r['warmup']} warm-ups ({r.get('mode', 'interleaved')}); input {r['input_shape']}.",
        "",
        r["note"],
        "",
    ]
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


def write_bench(model_dir: Path, report: dict[str, Any]) -> None:
    write_json(model_dir / "bench.json", report)
    text = render_markdown(report) if report.get("latency") else f"# Benchmark: {report['model_id']}\n\nMachine: {report['machine']}.\n"
    if report.get("embedder"):
        from videoseal_litert.convert.embedder import render_bench

        text += "\n" + render_bench(report["embedder"])
    write_text(model_dir / "bench.md", text)
