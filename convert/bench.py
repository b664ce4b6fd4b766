"""Benchmark: latency of PyTorch eager and every ``.tflite`` variant, interleaved in one run.

Interpreters are created once and warmed up; then each round times one invocation of every
variant in turn, so drift on shared cores hits all variants alike. Median and p90 over the
rounds, at each thread count; ratios to FP32 come from the same run. Peak RSS of each variant
is measured in a fresh subprocess (load + a few runs), from the OS (``getrusage``).
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from convert.artifacts import machine_description, tool_versions, write_json, write_text
from convert.runtime import TFLiteExtractor

log = logging.getLogger(__name__)

VARIANT_ORDER = ("fp32", "fp16", "int8-dynamic", "int8", "int8-full")

_RSS_SCRIPT = """
import resource, sys, numpy as np
from convert.runtime import TFLiteExtractor
r = TFLiteExtractor(sys.argv[1], num_threads=int(sys.argv[2]))
x = np.random.default_rng(0).random(r.input_shape, dtype=np.float32)
for _ in range(3):
    r(x)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0)
"""


def _stats(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms)
    return {"median_ms": round(float(np.median(a)), 3), "p90_ms": round(float(np.percentile(a, 90)), 3), "runs": len(ms)}


def peak_rss_subprocess(path: Path, threads: int) -> float:
    out = subprocess.run([sys.executable, "-c", _RSS_SCRIPT, str(path), str(threads)], capture_output=True, text=True, check=True)
    return round(float(out.stdout.strip().splitlines()[-1]), 1)


def bench(
    model_dir: Path, module: torch.nn.Module | None, threads: tuple[int, ...] = (1, 2), runs: int = 20, warmup: int = 3
) -> dict[str, Any]:
    files = {v: model_dir / f"{v}.tflite" for v in VARIANT_ORDER if (model_dir / f"{v}.tflite").exists()}
    if "fp32" not in files:
        raise FileNotFoundError(f"{model_dir / 'fp32.tflite'} not found: run make convert first")
    desc = json.loads((model_dir / "model.json").read_text())
    shape = tuple(desc["input"]["shape"])
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    xt = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
    results: dict[str, Any] = {}
    for t in threads:
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
        stats = {v: _stats(ms) for v, ms in timings.items()}
        base = stats["fp32"]["median_ms"]
        for s in stats.values():
            s["ratio_to_fp32"] = round(s["median_ms"] / base, 3)
        results[str(t)] = stats
        del runners
    fp32_size = files["fp32"].stat().st_size
    sizes = {v: {"bytes": p.stat().st_size, "ratio_to_fp32": round(p.stat().st_size / fp32_size, 4)} for v, p in files.items()}
    rss = {v: peak_rss_subprocess(p, max(threads)) for v, p in files.items()}
    return {
        "model_id": desc["model_id"],
        "random_init": desc["random_init"],
        "machine": machine_description(),
        "tool_versions": tool_versions(),
        "input_shape": list(shape),
        "runs": runs,
        "warmup": warmup,
        "latency": results,
        "size": sizes,
        "peak_rss_mb": rss,
        "note": "CPU latencies are from this machine (x86-64, AVX2, no VNNI); phones with int8 dot-product "
        "instructions differ. Compare ratios within one run, not absolute times across runs.",
    }


def render_markdown(r: dict[str, Any]) -> str:
    lines = [
        f"# Benchmark: {r['model_id']}" + (" (RANDOM weights)" if r["random_init"] else ""),
        "",
        f"Machine: {r['machine']}. {r['runs']} interleaved runs after {r['warmup']} warm-ups; input {r['input_shape']}.",
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
    return "\n".join(lines)


def write_bench(model_dir: Path, report: dict[str, Any]) -> None:
    write_json(model_dir / "bench.json", report)
    write_text(model_dir / "bench.md", render_markdown(report))
