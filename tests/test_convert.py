"""End to end on the minis: load -> export -> tflite -> verify, through the command line."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnxruntime as ort
import pytest

from tests.conftest import MINIS
from videoseal_litert.convert.cli import main
from videoseal_litert.convert.runtime import TFLiteExtractor


def run(*args: str) -> int:
    return main(list(args))


@pytest.fixture(scope="module", params=MINIS)
def converted(request, reference, tmp_path_factory):
    out = tmp_path_factory.mktemp("art")
    card = str(reference / f"{request.param}.yaml")
    assert run("convert", "--model", card, "--out", str(out)) == 0
    return request.param, card, out, out / request.param


def test_tflite_reproduces_official_logits(converted, reference):
    mini, _, _, d = converted
    data = np.load(reference / f"{mini}.npz")
    runner = TFLiteExtractor(d / "fp32.tflite")
    for img, ref in zip(data["images"], data["logits"], strict=True):
        mask, bits = runner(img.transpose(1, 2, 0)[None].copy())
        assert mask.shape == (1, 1) and bits.shape == (1, ref.shape[0] - 1)
        assert np.abs(np.concatenate([mask[0], bits[0]]) - ref).max() <= 1e-4


def test_onnx_reproduces_official_logits(converted, reference):
    mini, _, _, d = converted
    data = np.load(reference / f"{mini}.npz")
    sess = ort.InferenceSession(str(d / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in sess.get_outputs()] == ["mask_logit", "bit_logits"]
    mask, bits = sess.run(None, {"image": data["images"][:1].transpose(0, 2, 3, 1).copy()})
    assert np.abs(np.concatenate([mask, bits], axis=1) - data["logits"][:1]).max() <= 1e-4
    assert json.loads((d / "export.json").read_text())["onnx_opset"] >= 17


def test_model_json_and_verify_report(converted):
    mini, _, _, d = converted
    desc = json.loads((d / "model.json").read_text())
    nbits = desc["nbits"]
    assert desc["model_id"] == mini and desc["random_init"] is False and len(desc["checkpoint_sha256"]) == 64
    assert desc["input"]["shape"] == [1, 256, 256, 3] and desc["input"]["layout"] == "NHWC" and desc["input"]["range"] == [0.0, 1.0]
    assert [o["name"] for o in desc["outputs"]] == ["mask_logit", "bit_logits"]
    assert desc["outputs"][1]["shape"] == [1, nbits]
    assert "litert-torch" in desc["tool_versions"] and "torch" in desc["tool_versions"]
    rep = json.loads((d / "verify-fp32.json").read_text())
    for key in (
        "variant",
        "num_images",
        "max_abs_logit_diff",
        "mask_agreement",
        "bit_agreement",
        "sqnr_db",
        "random_init",
        "thresholds",
        "passed",
    ):
        assert key in rep
    assert rep["passed"] and rep["num_images"] >= 5 and rep["max_abs_logit_diff"] <= 1e-4 and rep["bit_agreement"] == 1.0
    assert "coffee:full" in rep["images"] and "coffee:full-flip" in rep["images"]


def test_stages_rerun_only_when_inputs_change(converted, capsys):
    _, card, out, d = converted
    before = (d / "fp32.tflite").stat().st_mtime_ns
    capsys.readouterr()
    assert run("tflite", "--model", card, "--out", str(out)) == 0
    assert "up to date, skipped" in capsys.readouterr().out
    assert (d / "fp32.tflite").stat().st_mtime_ns == before
    (d / "fp32.tflite").write_bytes(b"damaged")  # a damaged output makes the stage run again
    assert run("tflite", "--model", card, "--out", str(out)) == 0
    assert "tflite" in capsys.readouterr().out and (d / "fp32.tflite").stat().st_size > 1000


def test_verify_exits_nonzero_on_a_different_model(converted, tmp_path, capsys):
    """A .tflite that does not match the PyTorch weights fails loudly, and the report says so."""
    _, card, _, d = converted
    other = tmp_path / "other"
    assert run("load", "--model", card, "--out", str(other), "--random-init") == 0
    assert run("tflite", "--model", card, "--out", str(other), "--random-init") == 0
    mid = d.name
    shutil.copy(other / mid / "fp32.tflite", tmp_path / "fp32.tflite")
    work = tmp_path / "work"
    shutil.copytree(d, work / mid)
    shutil.copy(tmp_path / "fp32.tflite", work / mid / "fp32.tflite")
    capsys.readouterr()
    # The swap is caught before verification: the file is not the one the tflite stage recorded.
    assert run("verify", "--model", card, "--out", str(work)) == 2
    assert "ArtifactCorruptError" in capsys.readouterr().err
    # Without the record (a file put there by hand), verification itself catches the mismatch.
    shutil.rmtree(work / mid / "records")
    assert run("verify", "--model", card, "--out", str(work)) == 2
    assert "VerificationError" in capsys.readouterr().err
    rep = json.loads((work / mid / "verify-fp32.json").read_text())
    assert rep["passed"] is False and rep["failures"]


def test_random_init_is_recorded_everywhere(reference, tmp_path):
    card = str(reference / "videoseal_1.0-mini.yaml")
    assert run("convert", "--model", card, "--out", str(tmp_path), "--random-init") == 0
    d = tmp_path / "videoseal_1.0-mini"
    assert json.loads((d / "model.json").read_text())["random_init"] is True
    assert json.loads((d / "verify-fp32.json").read_text())["random_init"] is True
    assert json.loads((d / "export.json").read_text())["random_init"] is True
    assert "RANDOM weights" in (d / "verify-fp32.md").read_text()


def test_user_images_directory(reference, tmp_path):
    card = str(reference / "videoseal_1.0-mini.yaml")
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for p in sorted((reference / "videoseal_1.0-mini-images").glob("*.png")):
        shutil.copy(p, imgs / p.name)
    (imgs / "notes.txt").write_text("not an image")
    assert run("convert", "--model", card, "--out", str(tmp_path / "o"), "--images", str(imgs)) == 0
    rep = json.loads((tmp_path / "o" / "videoseal_1.0-mini" / "verify-fp32.json").read_text())
    assert rep["images"] == ["00:full", "01:full", "02:full"]


@pytest.mark.parametrize(
    "model, fragment",
    [("videosael", "Did you mean 'videoseal'"), ("videoseal0.0", "rgb_96b.pth")],
)
def test_cli_named_errors_without_traceback(model, fragment, reference, tmp_path, capsys):
    model = model.replace("REF", str(reference))
    assert run("convert", "--model", model, "--out", str(tmp_path)) == 2
    err = capsys.readouterr().err
    assert fragment in err and "Traceback" not in err


def test_inspect_groups_the_vit_by_block(reference, tmp_path):
    card = str(reference / "videoseal_0.0-mini.yaml")
    assert run("inspect", "--model", card, "--out", str(tmp_path)) == 0
    rep = json.loads((tmp_path / "videoseal_0.0-mini" / "inspect.json").read_text())
    assert rep["family"] == "sam" and rep["num_params"] == 736737  # videoseal_0.0-mini.json
    assert set(rep["params_per_stage"]) == {"patch_embed + pos_embed", "block 0", "block 1", "block 2", "block 3", "neck", "pixel_decoder"}


def test_inspect_report(reference, tmp_path):
    card = str(reference / "videoseal_1.0-mini.yaml")
    assert run("inspect", "--model", card, "--out", str(tmp_path)) == 0
    rep = json.loads((tmp_path / "videoseal_1.0-mini" / "inspect.json").read_text())
    assert rep["num_params"] == json.loads((reference / "videoseal_1.0-mini.json").read_text())["num_params"]
    assert set(rep["params_per_stage"]) == {"stem + stage 0", "stage 1", "stage 2", "stage 3", "pixel_decoder"}
    assert rep["zero_conv_linear_weights"] == [] and rep["gflops_256"] > 0
    t = next(t for t in rep["tensors"] if t["name"] == "pixel_decoder.linear.weight")
    assert t["shape"] == [257, 192] and t["std"] > 0
