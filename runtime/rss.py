"""``python -m videoseal_litert.runtime.rss FILE THREADS RUNS [CACHE]``: open a file, run it, print this process's peak RSS (MB).

With ``CACHE`` (a file path), the file runs through LiteRT's CompiledModel with XNNPACK's weight
cache there (``runners.CompiledLiteRT``'s way): the cost an app pays when it enables the cache,
which a second run with the same path reuses.

Run in a fresh process by the benchmark, so the figure is the file's own: VmHWM (not getrusage:
ru_maxrss survives fork+exec, so a child of a big process would report the parent's peak).
"""

from __future__ import annotations

import sys

import numpy as np

from videoseal_litert.runtime.litert_runner import LiteRTRunner


def sample(shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs for timing: uniform images, 0/1 messages (any input whose name says so)."""
    rng = np.random.default_rng(seed)
    return {n: ((rng.random(s) > 0.5) if n == "message" else rng.random(s)).astype(np.float32) for n, s in shapes.items()}


def peak_rss_mb() -> float:
    with open("/proc/self/status") as f:
        return int(next(ln for ln in f if ln.startswith("VmHWM:")).split()[1]) / 1024.0


def main(argv: list[str]) -> int:
    path, threads, runs = argv[0], int(argv[1]), int(argv[2])
    if len(argv) > 3:
        from videoseal_litert.runtime.runners import CompiledLiteRT

        runner = CompiledLiteRT(path, threads, cache=argv[3])
    else:
        runner = LiteRTRunner(path, threads)
    x = sample(runner.input_shapes)
    for _ in range(runs):
        runner(x)
    print(peak_rss_mb())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
