#!/usr/bin/env python3
"""Reference runner for a VideoSeal-family watermark extractor bundle. Needs ai-edge-litert, numpy, pillow and litert_runner.py.

    python run_extractor.py MODEL.tflite IMAGE.png     # mask logit and the decoded bits (hex)
    python run_extractor.py MODEL.tflite --info        # the description embedded in the file
    python run_extractor.py --selftest                 # every golden vector of this bundle, judged by the rule
    python run_extractor.py --selftest --native ./litert_run   # the same through the LiteRT C library

Input contract (also in model.json and in each .tflite's metadata): RGB, NHWC (1, 256, 256, 3),
float32 in [0, 1] (bytes / 255), or int8 with the input's scale and zero point for integer-IO
files. Other sizes are resized to 256x256 with bilinear filtering, aspect ratio not kept (PIL's
bilinear downscale is antialiased like the official ``detect()``, but not bit-identical to it).
Outputs: ``mask_logit`` (1, 1) then ``bit_logits`` (1, nbits); bit i = bit_logits[i] > 0, and
the hex string packs bit 0 as the most significant bit of the first byte (message.py: the one format).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

try:  # inside the videoseal_litert package
    from videoseal_litert.core.message import message_hex
    from videoseal_litert.models.gate import Rule, judge_extractor, judge_runtime_difference

    from .litert_runner import open_file, read_metadata, unverified_files
except ImportError:  # a bundle: the runner, the rule (gate.py, metrics.py) and message.py ship beside this script
    from gate import Rule, judge_extractor, judge_runtime_difference
    from litert_runner import open_file, read_metadata, unverified_files
    from message import message_hex

HERE = Path(__file__).resolve().parent


def load_image(path: str | Path, size: int = 256) -> np.ndarray:
    """RGB float32 (1, size, size, 3) in [0, 1], EXIF orientation applied (as the page and the pipeline read photos)."""
    with Image.open(path) as opened:
        im = ImageOps.exif_transpose(opened).convert("RGB")
        if im.size != (size, size):
            im = im.resize((size, size), Image.BILINEAR)
        return (np.asarray(im, dtype=np.float32) / 255.0)[None]


class Extractor:
    """``extractor(image (1, S, S, 3))`` -> (mask logit, bit logits (nbits,))."""

    def __init__(self, model_path: str | Path, num_threads: int = 2, native: list[str] | None = None) -> None:
        self.runner = open_file(model_path, num_threads, native)

    @property
    def size(self) -> int:
        return self.runner.input_shapes["image"][1]

    def __call__(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        out = self.runner({"image": x})
        return float(out["mask_logit"].reshape(-1)[0]), out["bit_logits"].reshape(-1)


def bits_hex(bit_logits: np.ndarray) -> str:
    """The decoded message (bit i = bit_logits[i] > 0) in the one message format's hex (``message.py``)."""
    return message_hex(np.asarray(bit_logits) > 0)


def check_manifest(bundle: Path = HERE) -> list[str]:
    """Files whose sha256 differs from manifest.json, or that are missing or unlisted."""
    import hashlib

    listed = json.loads((bundle / "manifest.json").read_text())["files"]
    bad = []
    for rel, digest in listed.items():
        p = bundle / rel
        if not p.is_file():
            bad.append(f"{rel}: missing")
        elif hashlib.sha256(p.read_bytes()).hexdigest() != digest:
            bad.append(f"{rel}: sha256 differs from manifest.json")
    present = {str(p.relative_to(bundle)) for p in bundle.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    bad += [f"{rel}: not in manifest.json" for rel in sorted(present - set(listed) - {"manifest.json"})]
    return bad


def selftest(bundle: Path = HERE, native: list[str] | None = None, allow_unverified: bool = False, verified_only: bool = False) -> int:
    """Check the manifest and that every file is the verified one, then every golden vector of each file (through
    the C library with ``native``, the command that starts ``litert_run``) by the project's rule (``gate.py``,
    docs/verification.md): its decisions against PyTorch's on the same images, and its difference from the x86
    outputs at most two output steps of an integer output (1% of PyTorch's RMS of a float one). Exit code 1 on
    any failure."""
    bad = check_manifest(bundle)
    for line in bad:
        print(f"FAIL manifest {line}")
    if bad:
        print(f"selftest: {len(bad)} file(s) do not match manifest.json; not running the golden vectors")
        return 1
    refused = unverified_files(bundle, "extractor")
    skip = {line.split(":", 1)[0] for line in refused} if verified_only else set()
    for line in refused if verified_only else []:
        print(f"skip {line}")
    if refused and not (allow_unverified or verified_only):
        for line in refused:
            print(f"FAIL {line}")
        print("selftest: the bundle holds files that were not verified (--allow-unverified runs them anyway)")
        return 1
    golden = json.loads((bundle / "golden" / "golden.json").read_text())
    failures = 0
    for variant, g in golden["variants"].items():
        if g["file"] in skip:
            continue
        ex = Extractor(bundle / g["file"], native=native)
        vecs = g["vectors"]
        got = np.array([[m, *b] for m, b in (ex(load_image(bundle / "golden" / v["image"], ex.size)) for v in vecs)], np.float64)
        torch_ = np.array([[v["pytorch"]["mask_logit"], *v["pytorch"]["bit_logits"]] for v in vecs], np.float64)
        x86 = np.array([[v["mask_logit"], *v["bit_logits"]] for v in vecs], np.float64)
        verdict = judge_extractor(torch_, got, [v["image"] for v in vecs], [v["watermarked"] for v in vecs], Rule.from_dict(g["rule"]))
        signal = min(gr.signal_rms for gr in verdict.groups if gr.signal_rms > 0)
        diff = judge_runtime_difference(x86, got, signal, g.get("output_step"))
        why = verdict.failures + diff["failures"]
        failures += bool(why)
        print(
            f"{'ok  ' if not why else 'FAIL'} {variant:13s} {len(vecs)} vectors: rule {'PASSED' if verdict.passed else 'FAILED'} against PyTorch "
            f"({', '.join(gr.group for gr in verdict.groups)}); max |diff| to x86 {diff['max_abs_diff']:.2e} (at most {diff['bound']:.2e})"
        )
        for w in why:
            print(f"     {w}")
    runner = f" through the native LiteRT C library ({' '.join(native)})" if native else " through the Python interpreter (ai-edge-litert)"
    print(f"selftest{runner}:", "passed" if not failures else f"{failures} file(s) FAILED")
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", nargs="?", help=".tflite file")
    p.add_argument("image", nargs="?", help="image file (any size; resized to the model's input)")
    p.add_argument("--info", action="store_true", help="print the description embedded in the model")
    p.add_argument("--selftest", action="store_true", help="check every golden vector of this bundle")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--native", metavar="CMD", help="run through the LiteRT C library: the command that starts litert_run")
    p.add_argument("--allow-unverified", action="store_true", help="with --selftest: run files the bundle marks unverified too")
    p.add_argument("--verified-only", action="store_true", help="with --selftest: skip (and name) files the bundle marks unverified")
    a = p.parse_args(argv)
    native = shlex.split(a.native) if a.native else None
    if a.selftest:
        return selftest(native=native, allow_unverified=a.allow_unverified, verified_only=a.verified_only)
    if not a.model:
        p.error("give a .tflite file (and an image), or --selftest")
    if a.info:
        print(json.dumps(read_metadata(a.model), indent=2))
        return 0
    if not a.image:
        p.error("give an image to decode")
    ex = Extractor(a.model, a.threads, native)
    mask, logits = ex(load_image(a.image, ex.size))
    print(f"mask_logit {mask:.6f}")
    print(f"bits ({logits.size}) {bits_hex(logits)}")
    print("ran on the native LiteRT C library" if native else "ran on the Python interpreter (ai-edge-litert)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
