"""Run one ``.tflite`` on a batch of inputs and write the outputs: the far side of the ARM64 runner.

Started by :class:`videoseal_litert.runtime.arm.ArmRunner` under QEMU user-mode emulation with the
aarch64 Python and the aarch64 ``ai-edge-litert`` wheel, so the file runs on XNNPACK's ARM64
microkernels for the emulated CPU. Needs only numpy, ai-edge-litert and ``litert_runner.py`` (beside
this file): nothing of the pipeline, no torch.

    python arm_worker.py MODEL THREADS INPUTS.npz OUTPUTS.npz [--every-output]

``INPUTS.npz`` holds ``"<i>/<name>"`` arrays (input ``i``, signature name ``name``); ``OUTPUTS.npz``
gets ``"<i>/<name>"`` for every output, plus ``"delegation"`` (the placement of ops, as JSON bytes).
``--every-output``: also ``"<i>//<tensor name>"`` for every output of the subgraph as stored (raw,
not dequantized), for a file whose intermediate tensors were made outputs (the per-tensor ARM-x86
comparison of ``convert/arm_check.py``). The outputs are written to a temporary name and renamed
when complete.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from litert_runner import LiteRTRunner  # noqa: E402


def main(argv: list[str]) -> int:
    every = "--every-output" in argv
    model, threads, src, dst = [a for a in argv if a != "--every-output"]
    runner = LiteRTRunner(model, int(threads))
    raw = runner.interpreter.get_output_details() if every else []
    with np.load(src) as data:
        batch: dict[int, dict[str, np.ndarray]] = {}
        for key in data.files:
            i, _, name = key.partition("/")
            batch.setdefault(int(i), {})[name] = data[key]
    out: dict[str, np.ndarray] = {}
    for i in sorted(batch):
        for name, value in runner(batch[i]).items():
            out[f"{i}/{name}"] = value
        for d in raw:
            out[f"{i}//{d['name']}"] = runner.interpreter.get_tensor(d["index"])
    out["delegation"] = np.frombuffer(json.dumps(runner.delegation()).encode(), dtype=np.uint8)
    tmp = dst + ".tmp.npz"
    np.savez(tmp, **out)
    os.replace(tmp, dst)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
