"""``videoseal-litert <command> [options]``: one command line over every stage.

Each command is the stage's own parser (``videoseal-litert <command> --help``); the Makefile's
targets call these commands. Every command ends in the one error model of
``models.errors.run_main``: ``error: <Name>: <message>`` on stderr and exit code 2 for a named
error, 3 for an unexpected one (a bug), 130 after SIGINT and 143 after SIGTERM, with no traceback
unless ``--debug`` (or ``VIDEOSEAL_DEBUG=1``) is given.
"""

from __future__ import annotations

import importlib
import os
import sys

from videoseal_litert.models.errors import DEBUG_ENV, UsageError, run_main

_CONVERT = "videoseal_litert.convert.cli"
# command -> (module with main(argv), argv prefix, one-line help)
COMMANDS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "convert": (_CONVERT, ("convert",), "load + export + tflite + verify fp32 (make convert)"),
    "load": (_CONVERT, ("load",), "checkpoint + card -> strictly loaded model, model.json"),
    "inspect": (_CONVERT, ("inspect",), "checkpoint report: parameters, statistics, flagged tensors"),
    "export": (_CONVERT, ("export",), "torch.export program and ONNX"),
    "tflite": (_CONVERT, ("tflite",), "FP32 .tflite"),
    "verify": (_CONVERT, ("verify",), "compare a .tflite variant with PyTorch on held-out photos"),
    "bench": (_CONVERT, ("bench",), "latency, size and peak RSS of every variant"),
    "summary": (_CONVERT, ("summary",), "one table of a model's artifacts and their verification (--variant fp32,int8)"),
    "embedder": (_CONVERT, ("embedder",), "the card's embedder: fp32, fp16, int8 .tflite, verified by pixels and decoding (make embedder)"),
    "quantize": ("videoseal_litert.quantize.__main__", (), "int8, int8-full, int8-dynamic, fp16, each verified (make quantize)"),
    "package": ("videoseal_litert.package.__main__", (), "deployment bundle with golden vectors (make package)"),
    "demo": ("videoseal_litert.demo.__main__", ("watermark",), "watermark, convert, quantize and decode with the tiny pair (make demo)"),
    "robustness": ("videoseal_litert.demo.__main__", ("robustness",), "the demo's images after common edits, every decoder"),
    "train-tiny": ("videoseal_litert.demo.train_tiny", (), "train the default tiny pair on this CPU"),
    "bench-scale": ("videoseal_litert.convert.bench_scale", (), "every stage at full size, wall time and peak RSS"),
    "kernel-bench": ("videoseal_litert.quantize.kernel_bench", (), "one pointwise layer, float vs INT8"),
    "calib-sweep": ("videoseal_litert.quantize.calib_sweep", (), "INT8 agreement against the number of calibration images"),
    "calibration-manifest": ("videoseal_litert.calibration_data.build", (), "rewrite calibration_data/manifest.json"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: videoseal-litert [--debug] <command> [options]   (videoseal-litert <command> --help)", "", "commands:"]
    lines += [f"  {name.ljust(width)}  {text}" for name, (_, _, text) in COMMANDS.items()]
    lines += [
        "",
        f"--debug (or {DEBUG_ENV}=1) shows the traceback of an error. Exit codes: 0 ok, 2 named error, 3 bug, 130 SIGINT, 143 SIGTERM.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--debug" in argv:
        argv.remove("--debug")
        os.environ[DEBUG_ENV] = "1"
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        return run_main(lambda: _unknown(name))
    module, prefix, _ = COMMANDS[name]
    return run_main(lambda: importlib.import_module(module).main([*prefix, *rest]))


def _unknown(name: str) -> int:
    print(usage(), file=sys.stderr)
    raise UsageError(f"unknown command {name!r}")


if __name__ == "__main__":
    raise SystemExit(main())
