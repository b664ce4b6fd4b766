"""``make bench-scale``: every stage at full size with random weights, timed and measured by the OS.

``videoseal-litert bench-scale [--models videoseal,chunkyseal] [--out artifacts] [--runs 3]``
runs, per model, each stage as its own process (load, inspect, export, tflite, verify, quantize,
bench), takes each one's wall time and peak RSS from ``os.wait4`` (the kernel's rusage of that
child alone) and writes them to ``scaling.json`` / ``scaling.md`` in OUT (the model's
``bench.json`` stays the bench stage's alone): peak RSS divided by weight bytes and seconds per GFLOP
for each stage and model, so the cost of a bigger variant can be predicted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from videoseal_litert.core.artifacts import machine_description, write_json, write_text

STAGES: tuple[tuple[str, list[str]], ...] = (
    ("load", ["-m", "videoseal_litert", "load"]),
    ("inspect", ["-m", "videoseal_litert", "inspect"]),
    ("export", ["-m", "videoseal_litert", "export"]),
    ("tflite", ["-m", "videoseal_litert", "tflite"]),
    ("verify-fp32", ["-m", "videoseal_litert", "verify", "--variant", "fp32"]),
    ("quantize", ["-m", "videoseal_litert", "quantize"]),
)


def run_measured(argv: list[str], log_path: Path) -> dict[str, Any]:
    """Run one stage process; its wall time and peak RSS (ru_maxrss of that child, from the kernel)."""
    t0 = time.time()
    with log_path.open("ab") as logf:
        proc = subprocess.Popen([sys.executable, *argv], stdout=logf, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    rc = os.waitstatus_to_exitcode(status)
    return {"wall_s": round(time.time() - t0, 1), "peak_rss_mb": round(usage.ru_maxrss / 1024.0, 1), "exit_code": rc}


def bench_model(model: str, out: Path, threads: int, runs: int, force: bool, resume: bool = False) -> dict[str, Any]:
    common = ["--model", model, "--out", str(out), "--threads", str(threads), "--random-init"] + (["--force"] if force else [])
    log_path = out / f"bench-scale-{model}.log"
    progress = out / f"bench-scale-{model}.json"  # each stage's figures as soon as it ends
    out.mkdir(parents=True, exist_ok=True)
    stages: dict[str, Any] = json.loads(progress.read_text()) if resume and progress.exists() else {}
    for name, argv in (
        *STAGES,
        ("bench", ["-m", "videoseal_litert", "bench", "--runs", str(runs), "--warmup", "1", "--bench-threads", str(threads)]),
    ):
        if stages.get(name, {}).get("exit_code") == 0:
            print(f"[{model}] {name}: measured earlier ({stages[name]['wall_s']} s), kept (--resume)", flush=True)
            continue
        print(f"[{model}] {name} ...", flush=True)
        stages[name] = r = run_measured(argv + common, log_path)
        write_json(progress, stages)
        print(f"[{model}] {name}: {r['wall_s']} s, peak RSS {r['peak_rss_mb']:.0f} MB, exit {r['exit_code']}", flush=True)
        if r["exit_code"] != 0:
            raise SystemExit(f"{model}: stage {name} failed (exit {r['exit_code']}); see {log_path}")
    md = out / model
    inspect = json.loads((md / "inspect.json").read_text())
    weight_bytes = inspect["num_params"] * 4
    gflops = inspect["gflops_256"]
    for r in stages.values():
        r["peak_rss_over_weight_bytes"] = round(r["peak_rss_mb"] * 2**20 / weight_bytes, 2)
        r["seconds_per_gflop"] = round(r["wall_s"] / gflops, 4)
    bench = json.loads((md / "bench.json").read_text())  # read only: the bench stage is its one writer
    quant = json.loads((md / "quantize.json").read_text())
    return {
        "model": model,
        "random_init": True,
        "num_params": inspect["num_params"],
        "weight_bytes": weight_bytes,
        "gflops_256": gflops,
        "fp32_size_bytes": quant["fp32_size_bytes"],
        "variants": {
            v: {
                "size_ratio_to_fp32": r["size_ratio_to_fp32"],
                "passed": r["passed"],
                **{k: (r["verification"] or {}).get(k) for k in ("bit_agreement", "sqnr_db")},
            }
            for v, r in quant["variants"].items()
        },
        "fp32_latency_ms": bench["latency"][str(threads)]["fp32"]["median_ms"],
        "stages": stages,
    }


def render(report: dict[str, Any]) -> str:
    lines = [
        "# Scaling: cost of each stage against model size (RANDOM weights)",
        "",
        f"Machine: {report['machine']}; {report['threads']} threads. Wall time and peak RSS of each stage's own process, "
        "from the kernel (`os.wait4`). RSS/W = peak RSS / float32 weight bytes; s/GFLOP = stage wall time / GFLOPs of one 256x256 image.",
        "",
        "| model | params | weights GB | GFLOPs | stage | wall s | peak RSS GB | RSS/W | s/GFLOP |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for m in report["models"]:
        for name, r in m["stages"].items():
            lines.append(
                f"| {m['model']} | {m['num_params'] / 1e6:.1f} M | {m['weight_bytes'] / 1e9:.2f} | {m['gflops_256']:.0f} | {name} | "
                f"{r['wall_s']} | {r['peak_rss_mb'] / 1024:.2f} | {r['peak_rss_over_weight_bytes']} | {r['seconds_per_gflop']} |"
            )
    lines += ["", "| model | variant | size vs fp32 | verified | bit agreement | SQNR dB |", "|---|---|---|---|---|---|"]
    for m in report["models"]:
        for v, r in m["variants"].items():
            lines.append(
                f"| {m['model']} | {v} | {r['size_ratio_to_fp32']:.3f} | {r['passed']} | {r['bit_agreement']:.4f} | {r['sqnr_db']:.1f} |"
            )
    return "\n".join(lines) + "\n"


def bench_scale(models: list[str], out: Path, threads: int, runs: int, force: bool, resume: bool) -> dict[str, Any]:
    report = {
        "machine": machine_description(),
        "threads": threads,
        "models": [bench_model(m, out, threads, runs, force, resume) for m in models],
    }
    write_json(out / "scaling.json", report)
    write_text(out / "scaling.md", render(report))
    print(render(report))
    return report
