"""What bounds INT8 speed on this CPU: one ConvNeXt pointwise layer, float vs INT8, in TFLite.

``python -m quantize.kernel_bench [--out DIR]`` converts a single Linear (VideoSeal 1.0 stage 3
shape: 16x16 tokens, 384 -> 1536) to fp32, static INT8 (float in/out, as in ``int8.tflite``) and
dynamic-range INT8, times them interleaved on 1 and 2 threads and writes ``kernel_bench.json``.
If INT8 is barely faster than float on the layer that dominates the FLOPs, the whole model
cannot be much faster either.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from videoseal_litert.convert.artifacts import machine_description, write_json


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m quantize.kernel_bench")
    p.add_argument("--out", type=Path, default=Path("artifacts"))
    p.add_argument("--tokens", type=int, default=16)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--runs", type=int, default=200)
    a = p.parse_args(argv)

    import litert_torch

    from videoseal_litert.convert.bench import interleaved_medians
    from videoseal_litert.models.convnext import FAMILY as CONVNEXT
    from videoseal_litert.quantize.recipes import build_quantizer

    torch.manual_seed(0)
    layer = torch.nn.Linear(a.dim, 4 * a.dim).eval()
    x = torch.rand(1, a.tokens, a.tokens, a.dim)
    with tempfile.TemporaryDirectory() as d:
        fp32 = Path(d) / "fp32.tflite"
        litert_torch.convert(layer, (x,)).export(str(fp32))
        paths = {"fp32": fp32}
        for variant in ("int8", "int8-dynamic"):
            q = build_quantizer(str(fp32), variant, CONVNEXT.int8)
            qsvs = None
            if q.need_calibration:
                feed = [{k: np.random.default_rng(i).random(x.shape, dtype=np.float32)} for i in range(4) for k in _input_names(fp32)]
                qsvs = q.calibrate({"serving_default": feed})
            out = Path(d) / f"{variant}.tflite"
            out.write_bytes(q.quantize(qsvs, enable_progress_report=False).quantized_model)
            paths[variant] = out
        res = {str(t): interleaved_medians(paths, t, runs=a.runs, warmup=10) for t in (1, 2)}
    for med in res.values():
        med.update({f"{k}_ratio_to_fp32": round(v / med["fp32"], 3) for k, v in list(med.items()) if k != "fp32"})
    report = {
        "layer": f"Linear {a.dim} -> {4 * a.dim} on {a.tokens}x{a.tokens} tokens",
        "machine": machine_description(),
        "median_ms_by_threads": res,
        "runs": a.runs,
    }
    a.out.mkdir(parents=True, exist_ok=True)
    write_json(a.out / "kernel_bench.json", report)
    print(report)
    return 0


def _input_names(path: Path) -> list[str]:
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter(model_path=str(path)).get_signature_list()["serving_default"]["inputs"]


if __name__ == "__main__":
    raise SystemExit(main())
