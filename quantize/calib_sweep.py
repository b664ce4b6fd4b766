"""How many calibration images are enough: INT8 agreement against the number of calibration images.

``videoseal-litert calib-sweep --model videoseal --random-init [--counts 4,8,16,32,96]`` calibrates
``int8`` on the first N inputs of the part's calibration set for each N, verifies each result
against PyTorch on the held-out set (reference computed once), and writes ``calib-sweep.json`` /
``.md`` beside the model's artifacts. Needs the float file below 2 GB (the single-file path).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from videoseal_litert.convert.parts import Part
from videoseal_litert.convert.verify import run_file
from videoseal_litert.core.artifacts import machine_description, write_json, write_text
from videoseal_litert.models.variants import rule_for, variant
from videoseal_litert.quantize.calibrate import calibrate_part
from videoseal_litert.quantize.quantize_stage import quantize_to


def calib_sweep(part: Part, counts: list[int]) -> dict[str, Any]:
    opts = part.opts
    md = opts.model_dir
    fp32 = md.require(part.file("fp32"), part.make_target("fp32"))
    inputs = part.verification_set()
    ref = part.reference(inputs)
    row = variant("int8", part.name)
    rule = rule_for(opts.spec, part.name, row)
    rows = []
    with tempfile.TemporaryDirectory(dir=md.path) as d:
        out = Path(d) / part.file("int8")
        for n in counts:
            t0 = time.time()
            qsvs, used = calibrate_part(part, fp32, limit=n)
            cal_s = time.time() - t0
            quantize_to(fp32, out, row, qsvs, [], False, part.family.quant)
            figures = part.figures(inputs, ref, run_file(part, out, inputs, opts.threads, opts.opener), rule)
            rows.append(
                {
                    "calibration_inputs": used,
                    "calibration_seconds": round(cal_s, 1),
                    **{k: figures[k] for k in part.summary_keys if k in figures},
                    "passed": not figures["failures"],
                }
            )
    report = {
        "model_id": opts.spec.name,
        "part": part.name,
        "random_init": ref.random_init,
        "held_out_images": len(inputs.names),
        "machine": machine_description(),
        "rows": rows,
    }
    write_json(md / f"{part.prefix}calib-sweep.json", report)
    lines = [
        f"# INT8 against the number of calibration inputs: {opts.spec.name} {part.name}" + (" (RANDOM weights)" if ref.random_init else ""),
        "",
        f"{len(inputs.names)} held-out images; profiler-based calibration on {machine_description()}.",
        "",
        "| calibration inputs | calibration s | verification |",
        "|---|---|---|",
    ]
    lines += [f"| {r['calibration_inputs']} | {r['calibration_seconds']} | {part.one_line(r)} |" for r in rows]
    write_text(md / f"{part.prefix}calib-sweep.md", "\n".join(lines) + "\n")
    return report
