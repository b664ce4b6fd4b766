"""Full-size models with RANDOM weights through convert, quantize and verify (`make test-full`).

Marked ``fullsize``: minutes and GBs each, so not in `make test`. The same code runs on the minis in
`make test`; these catch what only shows at full size (memory, the 2 GB limits, per-op policies on
the real layer shapes). ChunkySeal's extractor (an hour on 2 cores) is measured by `make bench-scale`;
its embedder (about 40 minutes) is here.
"""

from __future__ import annotations

import json

import pytest

from videoseal_litert.cli import main
from videoseal_litert.models.registry import resolve

pytestmark = pytest.mark.fullsize

# model -> (variants, largest int8 size as a fraction of fp32: int8 weights are 1/4 of float32;
# what stays float (norms, biases, the ViT's relative-position tables) adds the rest)
MODELS = {
    "videoseal": (("int8", "int8-full", "int8-dynamic", "fp16"), 0.27),
    "videoseal_0.0": (("int8", "int8-full", "int8-dynamic", "fp16"), 0.29),
}


@pytest.mark.parametrize("model", list(MODELS))
def test_full_size_converts_quantizes_and_verifies(model, tmp_path):
    variants, max_int8_ratio = MODELS[model]
    out = str(tmp_path)
    assert main(["convert", "--model", model, "--out", out, "--random-init"]) == 0
    # Random weights put many decisions near zero: a variant whose noise flips more of them than the rule allows fails,
    # the honest verdict (exit 2); every verdict must follow from its figures, and fp16 and int8 (under the fallback) pass.
    assert main(["quantize", "--model", model, "--out", out, "--random-init", "--variants", ",".join(variants)]) in (0, 2)
    d = tmp_path / resolve(model).name
    desc = json.loads((d / "model.json").read_text())
    assert desc["random_init"] is True and desc["num_params"] > 20_000_000
    fp32 = json.loads((d / "verify-fp32.json").read_text())
    assert fp32["passed"] and fp32["max_abs_logit_diff"] <= 1e-3 and fp32["num_images"] == 21
    q = json.loads((d / "quantize.json").read_text())
    from tests.test_quantize import _verdict_from_figures

    for v in variants:
        rep = json.loads((d / f"verify-{v}.json").read_text())
        assert rep["passed"] == q["variants"][v]["passed"] == _verdict_from_figures(rep), v
    assert q["variants"]["fp16"]["passed"] and q["variants"]["int8"]["passed"]
    assert q["variants"]["int8-full"]["size_ratio_to_fp32"] <= max_int8_ratio
    assert q["variants"]["int8"]["xnnpack"]["num_not_delegated"] == 0
    assert q["variants"]["fp16"]["size_ratio_to_fp32"] <= 0.52


@pytest.mark.parametrize("model", ["videoseal", "pixelseal", "videoseal_0.0"])
def test_full_size_embedder_converts_and_verifies(model, tmp_path):
    """Full-size U-Net embedders, random weights: fp32 within 1e-4 of PyTorch, fp16 and int8 past
    the rule (random band), decoded by the (random) extractor as PyTorch's, the odd-size route checked."""
    out = str(tmp_path)
    assert main(["embedder", "--model", model, "--out", out, "--random-init"]) in (0, 2)  # random decoders: verdicts below
    d = tmp_path / resolve(model).name
    s = json.loads((d / "embedder.json").read_text())
    assert s["random_init"] is True and s["num_params"] > 15_000_000
    reports = {v: json.loads((d / f"verify-embedder-{v}.json").read_text()) for v in ("fp32", "fp16", "int8")}
    from tests.test_quantize import _verdict_from_figures

    for v, r in reports.items():
        assert r["decoding"] is not None and r["passed"] == _verdict_from_figures(r), (v, r["failures"])
    assert reports["fp32"]["passed"] and reports["fp16"]["passed"]
    assert reports["fp32"]["max_abs_pixel_diff"] <= 1e-4 and reports["fp32"]["checks"]["route"]["passed"]
    assert json.loads((d / "embedder-quantize.json").read_text())["variants"]["int8"]["size_ratio_to_fp32"] <= 0.27


def test_chunkyseal_embedder_in_pieces_within_8_gb(tmp_path):
    """`make embedder MODEL=chunkyseal RANDOM_INIT=1`, each stage in its own process: the 1.02 B-parameter
    U-Net converted in pieces and joined (FP32, 4.1 GB, weights after the flatbuffer), FP16 and INT8
    quantized piece by piece, each verified (pixels, decoding by the ChunkySeal extractor), every
    stage's peak RSS (the kernel's, os.wait4) within 8 GB."""
    from videoseal_litert.convert.bench_scale import run_measured

    common = ["--model", "chunkyseal", "--part", "embedder", "--out", str(tmp_path), "--random-init"]
    peaks = {}
    for stage in ("load", "tflite", "verify", "quantize"):
        r = run_measured(["-m", "videoseal_litert", stage, *common], tmp_path / "stages.log")
        assert r["exit_code"] == 0, (stage, (tmp_path / "stages.log").read_text()[-3000:])
        peaks[stage] = r["peak_rss_mb"]
    assert max(peaks.values()) <= 8 * 1024, peaks
    d = tmp_path / "chunkyseal"
    assert (d / "embedder-fp32.tflite").stat().st_size > 4_000_000_000
    fp32 = json.loads((d / "verify-embedder-fp32.json").read_text())
    assert fp32["passed"] and fp32["max_abs_pixel_diff"] <= 1e-4 and fp32["decoding"]["bit_agreement_tflite_vs_pytorch_embedded"] == 1.0
    q = json.loads((d / "embedder-quantize.json").read_text())
    assert q["partitioned"]["num_parts"] >= 8
    for v in ("fp16", "int8"):
        assert q["variants"][v]["passed"], (v, q["variants"][v])
    assert q["variants"]["int8"]["size_ratio_to_fp32"] <= 0.27 and q["variants"]["fp16"]["size_ratio_to_fp32"] <= 0.52


def test_videoseal_int8_on_arm64(tmp_path):
    """`make arm-check MODEL=videoseal RANDOM_INIT=1` for the INT8 files: on every emulated CPU model each
    file passes the rule against PyTorch (random band) as on x86, within the ARM-x86 bound; the trace names
    the ops where ARM and x86 part ways."""
    out = str(tmp_path)
    assert main(["convert", "--model", "videoseal", "--out", out, "--random-init"]) == 0
    assert main(["quantize", "--model", "videoseal", "--out", out, "--random-init", "--variants", "int8"]) == 0  # under the fallback
    args = ["arm-check", "--model", "videoseal", "--out", out, "--random-init", "--files", "int8", "--inputs", "2", "--trace"]
    assert main(args) == 0
    r = json.loads((tmp_path / resolve("videoseal").name / "arm64.json").read_text())
    assert r["passed"] and r["random_init"] is True
    files = r["parts"]["extractor"]["files"]
    assert set(files) == {"int8.tflite"}
    for per in files.values():
        assert set(per) == {"cortex-a53", "neoverse-n1", "neoverse-v1", "max"}
        assert all(f["failures"] == [] and all(g["clear_flips"] == 0 for g in f["gate"]["groups"].values()) for f in per.values())
