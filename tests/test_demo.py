"""The watermark demo and robustness stages on a briefly trained tiny pair (machinery, not accuracy)."""

from __future__ import annotations

import json

import pytest

from demo.watermark import binomial_pvalue, run_demo, run_robustness
from models.train_tiny import main as train_main


def test_binomial_pvalue():
    assert binomial_pvalue(4, 4) == 1 / 16
    assert binomial_pvalue(3, 4) == 5 / 16
    assert binomial_pvalue(0, 4) == 1.0


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("demo")
    args = ["--steps", "2", "--batch", "2", "--size", "64", "--aug-from", "0", "--image-loss-from", "0", "--ramp", "1"]
    assert train_main([*args, "--export", str(d / "pair")]) == 0
    report = run_demo(d / "pair", d / "out", calibration_images=16)
    return d, report


def test_demo_writes_the_promised_figures(demo_run):
    d, report = demo_run
    saved = json.loads((d / "out" / "demo" / "demo.json").read_text())
    assert saved == json.loads(json.dumps(report))
    for k in ("pytorch_bit_accuracy", "fp32_bit_accuracy", "int8_bit_accuracy", "int8_bit_agreement_with_pytorch", "num_images"):
        assert k in saved
    assert saved["num_images"] == 7 and saved["nbits"] == 48
    # FP32 decodes exactly as PyTorch; INT8 passed its gate on the same extractor.
    assert saved["fp32_bit_agreement_with_pytorch"] == 1.0 and saved["fp32_bit_accuracy"] == saved["pytorch_bit_accuracy"]
    assert saved["int8_bit_agreement_with_pytorch"] >= 0.9
    fp = saved["false_positive_check_unwatermarked"]["int8"]
    assert 0.0 < fp["min_pvalue"] <= 1.0 and fp["detections_at_1e-3"] == 0  # an untrained pair detects nothing
    assert saved["training"]["steps"] == 2


def test_robustness_table(demo_run):
    d, _ = demo_run
    r = run_robustness(d / "pair", d / "out")
    assert set(r["bit_accuracy"]) == {"identity", "jpeg_80", "jpeg_50", "resize_0.5", "crop_0.5", "brightness_1.5", "blur_sigma1"}
    assert all(set(v) >= {"pytorch", "fp32", "int8"} for v in r["bit_accuracy"].values())
    assert (d / "out" / "demo" / "robustness.png").read_bytes()[:4] == b"\x89PNG"
