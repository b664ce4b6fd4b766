"""What bounds INT8 speed on this CPU: one ConvNeXt pointwise layer, float vs INT8, in TFLite.

``videoseal-litert kernel-bench [--out DIR]`` converts a single Linear (VideoSeal 1.0 stage 3 shape:
16x16 tokens, 384 -> 1536) to fp32, static INT8 (float in/out, as in ``int8.tflite``) and
dynamic-range INT8, times them interleaved on 1 and 2 threads and writes ``kernel_bench.json``.
If INT8 is barely faster than float on the layer that dominates the FLOPs, the whole model
cannot be much faster either.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from videoseal_litert.core.artifacts import machine_description, write_json
from videoseal_litert.models.variants import VARIANTS


def kernel_bench(out: Path, tokens: int = 16, dim: int = 384, runs: int = 200) -> dict[str, Any]:
    import litert_torch

    from videoseal_litert.convert.bench import time_interleaved
    from videoseal_litert.models.convnext import FAMILY as CONVNEXT
    from videoseal_litert.quantize.calibrate import calibrate
    from videoseal_litert.quantize.recipes import build_quantizer
    from videoseal_litert.runtime.rss import sample
    from videoseal_litert.runtime.runners import open_runner

    torch.manual_seed(0)
    layer = torch.nn.Linear(dim, 4 * dim).eval()
    x = torch.rand(1, tokens, tokens, dim)
    with tempfile.TemporaryDirectory() as d:
        fp32 = Path(d) / "layer-fp32.tflite"  # one layer in a scratch folder, not a part's file
        litert_torch.convert(layer, (x,)).export(str(fp32))
        paths = {"fp32": fp32}
        (name,) = open_runner(fp32).inputs
        for variant in ("int8", "int8-dynamic"):
            q = build_quantizer(str(fp32), VARIANTS[variant], CONVNEXT.quant)
            qsvs = (
                calibrate(q, ({name: np.random.default_rng(i).random(x.shape, dtype=np.float32)} for i in range(4)))[0]
                if q.need_calibration
                else None
            )
            path = Path(d) / f"layer-{variant}.tflite"
            path.write_bytes(q.quantize(qsvs, enable_progress_report=False).quantized_model)
            paths[variant] = path
        res = {}
        for t in (1, 2):
            runners = {k: open_runner(p, t) for k, p in paths.items()}
            ms = time_interleaved(runners, sample(runners["fp32"].input_shapes), runs, warmup=10)
            res[str(t)] = {k: round(float(np.median(v)), 3) for k, v in ms.items()}
    for med in res.values():
        med.update({f"{k}_ratio_to_fp32": round(v / med["fp32"], 3) for k, v in list(med.items()) if k != "fp32"})
    report = {
        "layer": f"Linear {dim} -> {4 * dim} on {tokens}x{tokens} tokens",
        "machine": machine_description(),
        "median_ms_by_threads": res,
        "runs": runs,
    }
    write_json(out / "kernel_bench.json", report)
    return report
