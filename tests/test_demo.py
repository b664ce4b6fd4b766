"""The demo on the shipped tiny pair: real watermarks decoded by PyTorch, FP32 and INT8 TFLite."""

from __future__ import annotations

import json
import shutil

import pytest
from PIL import Image

from videoseal_litert.calibration_data.photos import heldout_paths
from videoseal_litert.demo.watermark import binomial_pvalue, run_demo, run_robustness
from videoseal_litert.models.errors import VerificationError


def test_binomial_pvalue():
    assert binomial_pvalue(4, 4) == 1 / 16
    assert binomial_pvalue(3, 4) == 5 / 16
    assert binomial_pvalue(0, 4) == 1.0


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    return out, run_demo(out)


def test_demo_decodes_real_watermarks_as_pytorch_does(demo_run):
    out, report = demo_run
    saved = json.loads((out / "demo" / "demo.json").read_text())
    assert saved == json.loads(json.dumps(report))
    assert saved["random_init"] is False and saved["passed"] is True
    assert saved["num_images"] == 42 and saved["nbits"] == 48  # 7 held-out photos x 3 views x 2 messages
    # The targets, on photos the pair never saw.
    assert saved["pytorch_bit_accuracy"] >= 0.99 and saved["int8_bit_accuracy"] >= 0.99
    assert saved["psnr_db_min"] >= 32.0
    assert saved["fp32_bit_agreement_with_pytorch"] == 1.0 and saved["fp32_bit_accuracy"] == saved["pytorch_bit_accuracy"]
    assert saved["int8_bit_agreement_with_pytorch"] >= 0.999
    # Unwatermarked photos match a random message no better than chance would.
    assert len(saved["false_positive_pvalues"]) == 42 and min(saved["false_positive_pvalues"]) >= 1e-3
    assert max(saved["watermarked_pvalue_max"].values()) < 1e-9
    assert (out / "tiny" / "int8.tflite").is_file() and (out / "tiny" / "int8-dynamic.tflite").is_file()


def test_robustness_table_has_every_decoder(demo_run):
    out, _ = demo_run
    r = run_robustness(out)
    rows = r["bit_accuracy"]
    assert set(rows) == {"identity", "jpeg_80", "jpeg_50", "resize_0.5", "crop_0.5", "brightness_1.5", "blur_sigma1"}
    # The robustness targets, for the deployed INT8 file as well as PyTorch.
    for attack in ("jpeg_80", "resize_0.5"):
        assert rows[attack]["pytorch"] >= 0.9 and rows[attack]["int8"] >= 0.9
    assert rows["identity"]["fp32"] == rows["identity"]["pytorch"]
    assert (out / "demo" / "robustness.png").read_bytes()[:4] == b"\x89PNG"


def test_demo_on_your_own_photos_at_any_size(demo_run, tmp_path):
    out, _ = demo_run
    photos = tmp_path / "photos"
    photos.mkdir()
    src = heldout_paths()
    shutil.copy(src[0], photos / "a.png")  # 512x512
    Image.open(src[1]).convert("RGB").resize((411, 287)).save(photos / "b.jpg", quality=95)  # odd, not square
    (photos / "notes.txt").write_text("not an image")
    r = run_demo(out, images=photos)
    assert r["num_images"] == 4 and r["image_names"][0] == "a.png#0"
    assert r["pytorch_bit_accuracy"] >= 0.99 and r["int8_bit_agreement_with_pytorch"] >= 0.999
    assert r["psnr_db_min"] >= 32.0


def test_demo_gate_failure_is_a_named_error(demo_run, tmp_path, monkeypatch):
    out, _ = demo_run
    import videoseal_litert.demo.watermark as dw

    monkeypatch.setitem(dw.GATES, "min_psnr_db", 99.0)
    with pytest.raises(VerificationError, match="PSNR"):
        run_demo(out)
