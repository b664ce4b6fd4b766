"""How many calibration images are enough: INT8 agreement against the number of calibration images.

``python -m quantize.calib_sweep --model videoseal --random-init [--counts 4,8,16,32,96]`` calibrates
``int8`` on the first N items of the calibration set for each N, verifies each result against
PyTorch on the held-out set (reference computed once), and writes ``calib-sweep.json`` / ``.md``
beside the model's artifacts. Needs ``fp32.tflite`` below 2 GB (the single-file path).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

from videoseal_litert.convert.artifacts import machine_description, write_json, write_text


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    p = argparse.ArgumentParser(prog="python -m quantize.calib_sweep")
    p.add_argument("--model", required=True)
    p.add_argument("--random-init", action="store_true")
    p.add_argument("--ckpt", type=Path)
    p.add_argument("--out", type=Path, default=Path("artifacts"))
    p.add_argument("--counts", default="4,8,16,32,96")
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args(argv)

    from videoseal_litert.convert.stages import RunOptions, require_artifact
    from videoseal_litert.convert.verify import compare, reference_logits, sqnr_db
    from videoseal_litert.models.registry import resolve
    from videoseal_litert.quantize.calibrate import calibrate
    from videoseal_litert.quantize.recipes import build_quantizer
    from videoseal_litert.quantize.stage import quantize_to

    opts = RunOptions(spec=resolve(a.model), out=a.out, ckpt=a.ckpt, random_init=a.random_init, threads=a.threads)
    md = opts.model_dir
    fp32 = require_artifact(md, "fp32.tflite", "convert")
    loaded = opts.load()
    ref = reference_logits(loaded.module, opts.verify_items())
    random_init = loaded.random_init
    del loaded
    rows = []
    with tempfile.TemporaryDirectory(dir=md.path) as d:
        out = Path(d) / "int8.tflite"
        for n in (int(c) for c in a.counts.split(",")):
            t0 = time.time()
            counts: dict[str, int] = {}
            qsvs, counts = calibrate(build_quantizer(str(fp32), "int8-full"), fp32, opts.calibration_stream(None, counts, limit=n), counts)
            cal_s = time.time() - t0
            quantize_to(fp32, out, "int8", qsvs, [], False, opts.family.int8)
            got = compare(ref, out, opts.spec.card.config.img_size, a.threads)
            r = ref.logits
            rows.append(
                {
                    "calibration_images": counts["used"],
                    "calibration_seconds": round(cal_s, 1),
                    "bit_agreement": float(((r[:, 1:] > 0) == (got[:, 1:] > 0)).mean()),
                    "mask_agreement": float(((r[:, 0] > 0) == (got[:, 0] > 0)).mean()),
                    "sqnr_db": sqnr_db(r, got),
                }
            )
            print(rows[-1], flush=True)
    report = {
        "model_id": opts.spec.name,
        "random_init": random_init,
        "held_out_images": len(ref.names),
        "machine": machine_description(),
        "rows": rows,
    }
    write_json(md / "calib-sweep.json", report)
    lines = [
        f"# INT8 agreement vs number of calibration images: {opts.spec.name}" + (" (RANDOM weights)" if random_init else ""),
        "",
        f"{len(ref.names)} held-out images; profiler-based calibration on {machine_description()}.",
        "",
        "| calibration images | calibration s | bit agreement | mask agreement | SQNR dB |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['calibration_images']} | {r['calibration_seconds']} | {r['bit_agreement']:.4%} | {r['mask_agreement']:.2%} | {r['sqnr_db']:.2f} |"
        for r in rows
    ]
    write_text(md / "calib-sweep.md", "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
