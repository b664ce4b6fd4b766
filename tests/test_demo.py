"""The demo on the shipped tiny pair: real watermarks decoded by PyTorch, FP32 and INT8 TFLite."""

from __future__ import annotations

import json
import shutil

import pytest
from PIL import Image

from tests.conftest import locked
from videoseal_litert.calibration_data.photos import heldout_paths
from videoseal_litert.demo.watermark import binomial_pvalue, run_demo, run_robustness
from videoseal_litert.models.errors import VerificationError


def test_binomial_pvalue():
    assert binomial_pvalue(4, 4) == 1 / 16
    assert binomial_pvalue(3, 4) == 5 / 16
    assert binomial_pvalue(0, 4) == 1.0


@pytest.fixture(scope="module")
def demo(demo_run, tmp_path_factory):
    """The run's demo (a fresh process, as `make demo`): a private copy of its OUT (these tests run
    stages on it, which the other test worker must not meet) and its report."""
    out, rc, lines = demo_run
    assert rc == 0, "\n".join(lines[-40:])
    copy = tmp_path_factory.mktemp("demo-copy") / "artifacts"
    with locked(out.parent / ".lock"):
        shutil.copytree(out, copy)
    return copy, json.loads((copy / "demo" / "demo.json").read_text())


@pytest.mark.slow
def test_demo_decodes_real_watermarks_as_pytorch_does(demo):
    out, saved = demo
    assert saved["random_init"] is False and saved["passed"] is True and saved["rejected"] == []
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


@pytest.mark.slow
def test_robustness_table_has_every_decoder(demo):
    out, _ = demo
    r = run_robustness(out)
    rows = r["bit_accuracy"]
    assert set(rows) == {"identity", "jpeg_80", "jpeg_50", "resize_0.5", "crop_0.5", "brightness_1.5", "blur_sigma1"}
    # The robustness targets, for the deployed INT8 file as well as PyTorch.
    for attack in ("jpeg_80", "resize_0.5"):
        assert rows[attack]["pytorch"] >= 0.9 and rows[attack]["int8"] >= 0.9
    assert rows["identity"]["fp32"] == rows["identity"]["pytorch"]
    assert (out / "demo" / "robustness.png").read_bytes()[:4] == b"\x89PNG"


def test_demo_on_your_own_photos_at_any_size(demo, tmp_path, capsys):
    out, _ = demo
    photos = tmp_path / "photos"
    photos.mkdir()
    src = heldout_paths()
    shutil.copy(src[0], photos / "a.png")  # 512x512
    Image.open(src[1]).convert("RGB").resize((411, 287)).save(photos / "b.jpg", quality=95)  # odd, not square
    (photos / "notes.txt").write_text("not an image")
    from tests.test_bad_inputs import png_declaring

    (photos / "bomb.png").write_bytes(png_declaring(30000, 30000))  # refused, named, counted; the rest goes on
    capsys.readouterr()
    r = run_demo(out, images=photos)
    assert r["num_images"] == 4 and r["image_names"][0] == "a.png#0"
    assert sorted(x["file"] for x in r["rejected"]) == ["bomb.png", "notes.txt"]
    assert "skipped bomb.png: refused as a possible decompression bomb" in capsys.readouterr().out
    assert r["pytorch_bit_accuracy"] >= 0.99 and r["int8_bit_agreement_with_pytorch"] >= 0.999
    assert r["psnr_db_min"] >= 32.0


def test_demo_gate_failure_is_a_named_error(demo, tmp_path, monkeypatch):
    out, _ = demo
    import videoseal_litert.demo.watermark as dw

    monkeypatch.setitem(dw.GATES, "min_psnr_db", 99.0)
    with pytest.raises(VerificationError, match="PSNR"):
        run_demo(out)


def test_demo_all_tflite_row(demo):
    """The whole job on TFLite: INT8 embedder, INT8 extractor, within 0.1 pp of all-PyTorch."""
    out, report = demo
    a = report["all_tflite"]
    assert abs(a["bit_accuracy"] - a["all_pytorch_bit_accuracy"]) <= 0.001 and a["bit_accuracy"] >= 0.99
    assert a["psnr_db_min"] >= 32.0
    assert report["gates"]["INT8 embedder + INT8 extractor vs all-PyTorch"]["passed"]
    assert "INT8 TFLite embedder -> INT8 TFLite extractor" in (out / "demo" / "demo.md").read_text()


def test_bundle_ships_both_halves(demo, tmp_path):
    import subprocess
    import sys

    import numpy as np

    from videoseal_litert.convert.options import RunOptions
    from videoseal_litert.models.registry import resolve
    from videoseal_litert.package.bundle import PackagingError, build_bundle

    out, _ = demo
    opts = RunOptions(spec=resolve("tiny"), out=out)
    build_bundle(opts, ("int8", "fp32"), tmp_path / "dist")
    b = tmp_path / "dist" / "tiny"
    manifest = json.loads((b / "manifest.json").read_text())
    for f in (
        "embedder-int8.tflite",
        "embedder-fp32.tflite",
        "run_embedder.py",
        "route.py",
        "litert_runner.py",
        "android/EmbedWatermark.kt",
        "golden/embedder/golden.json",
    ):
        assert f in manifest["files"], f
    model = json.loads((b / "model.json").read_text())
    assert model["embedder"]["contract"]["inputs"][1] == {
        "name": "message",
        "shape": [1, 48],
        "dtype": "float32",
        "meaning": "the message bits as float32 0.0 / 1.0",
        "range": [0.0, 1.0],
    }
    golden = json.loads((b / "golden" / "embedder" / "golden.json").read_text())["variants"]["int8"]["vectors"]
    assert any("320x240" in v["image"] for v in golden)  # the route for other sizes is in the self-test
    assert np.load(b / golden[-1]["watermarked"]).shape == (240, 320, 3)
    # The runner's self-test, without torch in the process.
    code = "import runpy, sys; sys.argv = ['run_embedder.py', '--selftest']\ntry:\n    runpy.run_path('run_embedder.py', run_name='__main__')\nexcept SystemExit as e:\n    assert 'torch' not in sys.modules; raise"
    r = subprocess.run([sys.executable, "-c", code], cwd=b, capture_output=True, text=True)
    assert r.returncode == 0 and "all embedder golden vectors match" in r.stdout and r.stdout.count("ok  ") == 6, r.stdout + r.stderr
    # A changed golden output fails the self-test.
    np.save(b / golden[0]["watermarked"], np.load(b / golden[0]["watermarked"]) + 0.1)
    r = subprocess.run([sys.executable, "run_embedder.py", "--selftest"], cwd=b, capture_output=True, text=True)
    assert r.returncode == 1 and "FAIL int8" in r.stdout
    # An embedder file whose verification failed is refused when asked for.
    rep = out / "tiny" / "verify-embedder-int8.json"
    original = rep.read_text()
    try:
        rep.write_text(json.dumps({**json.loads(original), "passed": False, "failures": ["forced"]}))
        with pytest.raises(PackagingError, match="embedder-int8.tflite failed verification"):
            build_bundle(opts, ("fp32",), tmp_path / "dist2", embedder_variants=("int8",))
        assert not (tmp_path / "dist2" / "tiny").exists()
    finally:
        rep.write_text(original)
