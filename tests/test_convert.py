"""End to end on the minis: load -> export -> tflite -> verify, through the command line."""

from __future__ import annotations

import json
import re

import numpy as np
import onnxruntime as ort
import pytest

from tests.conftest import MINIS, cli
from videoseal_litert.runtime.runners import open_runner


@pytest.mark.slow
@pytest.mark.parametrize("mini", MINIS)
def test_tflite_and_onnx_reproduce_official_logits(mini, pipeline, reference):
    d = pipeline.converted(mini)
    data = np.load(reference / f"{mini}.npz")
    runner = open_runner(d / "fp32.tflite")
    assert set(runner.outputs) == {"mask_logit", "bit_logits"} and runner.input_shapes == {"image": (1, 256, 256, 3)}
    for img, ref in zip(data["images"], data["logits"], strict=True):
        out = runner({"image": img.transpose(1, 2, 0)[None].copy()})
        assert out["mask_logit"].shape == (1, 1) and out["bit_logits"].shape == (1, ref.shape[0] - 1)
        assert np.abs(np.concatenate([out["mask_logit"][0], out["bit_logits"][0]]) - ref).max() <= 1e-4
    sess = ort.InferenceSession(str(d / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in sess.get_outputs()] == ["mask_logit", "bit_logits"]
    mask, bits = sess.run(None, {"image": data["images"][:1].transpose(0, 2, 3, 1).copy()})
    assert np.abs(np.concatenate([mask, bits], axis=1) - data["logits"][:1]).max() <= 1e-4
    assert json.loads((d / "export.json").read_text())["onnx_opset"] >= 17


def test_model_json_and_verify_report(pipeline):
    d = pipeline.converted("videoseal_1.0-mini")
    desc = json.loads((d / "model.json").read_text())
    nbits = desc["nbits"]
    # The mini's official checkpoint holds random weights, declared so (--untrained): labelled as such.
    assert desc["model_id"] == "videoseal_1.0-mini" and desc["part"] == "extractor" and desc["random_init"] is True
    assert len(desc["checkpoint_sha256"]) == 64 and desc["checkpoint"] == "videoseal_1.0-mini.pth"  # the file, not a path
    assert desc["card"] == {"file": "videoseal_1.0-mini.yaml", "sha256": desc["card"]["sha256"]} and len(desc["card"]["sha256"]) == 64
    assert desc["input"]["shape"] == [1, 256, 256, 3] and desc["input"]["layout"] == "NHWC" and desc["input"]["range"] == [0.0, 1.0]
    assert [o["name"] for o in desc["outputs"]] == ["mask_logit", "bit_logits"]
    assert desc["outputs"][1]["shape"] == [1, nbits]
    assert "litert-torch" in desc["tool_versions"] and "torch" in desc["tool_versions"]
    rep = json.loads((d / "verify-fp32.json").read_text())
    assert rep["part"] == "extractor" and rep["variant"] == "fp32" and rep["file"] == "fp32.tflite" and rep["runner"] == "open_file"
    assert rep["passed"] and rep["num_images"] == 21 and rep["max_abs_logit_diff"] <= 1e-4 and rep["bit_agreement"] == 1.0
    assert rep["sqnr_db"] >= rep["rule"]["floor_db"] == 80 and rep["rejected"] == []  # float32 arithmetic: 80 dB and more
    assert [g["group"] for g in rep["gate"]["groups"].values()] == ["detection", "bits"]  # no embedder: no attacked views
    assert "coffee:full" in rep["images"] and "coffee:full-flip" in rep["images"]


def test_stages_rerun_only_when_inputs_change(pipeline, tmp_path, capsys):
    out, d = pipeline.copy(pipeline.converted("videoseal_1.0-mini"), tmp_path)
    card = pipeline.card("videoseal_1.0-mini")
    before = (d / "fp32.tflite").stat().st_mtime_ns
    capsys.readouterr()
    assert cli("tflite", "--model", card, "--out", out, "--untrained") == 0
    assert "up to date, skipped" in capsys.readouterr().out
    assert (d / "fp32.tflite").stat().st_mtime_ns == before
    (d / "model.json").write_text("damaged")  # a damaged output makes its stage run again (load: seconds, not a conversion)
    assert cli("load", "--model", card, "--out", out, "--untrained") == 0
    assert "load extractor videoseal_1.0-mini: done" in capsys.readouterr().out
    assert json.loads((d / "model.json").read_text())["model_id"] == "videoseal_1.0-mini"


def test_a_change_in_core_reruns_the_stage(pipeline, tmp_path, capsys, monkeypatch):
    """The code the stages ran is part of what they record: the same folder, with one byte of core/metrics.py (the
    verdict's arithmetic, which the fingerprint used to leave out) changed, makes an up-to-date stage run again."""
    from tests.conftest import copy_code
    from videoseal_litert.convert import options

    out, d = pipeline.copy(pipeline.converted("videoseal_1.0-mini"), tmp_path)
    card = pipeline.card("videoseal_1.0-mini")
    capsys.readouterr()
    assert cli("load", "--model", card, "--out", out, "--untrained") == 0
    assert "up to date, skipped" in capsys.readouterr().out
    code = tmp_path / "code"
    copy_code(options.ROOT, code)
    metrics = code / "core" / "metrics.py"
    metrics.write_text(metrics.read_text() + "\n# one more line\n")
    fingerprint = options.code_fingerprint
    monkeypatch.setattr(options, "code_fingerprint", lambda: fingerprint(code))
    assert cli("load", "--model", card, "--out", out, "--untrained") == 0
    assert "load extractor videoseal_1.0-mini: done" in capsys.readouterr().out


@pytest.fixture(scope="module")
def random_mini(reference, tmp_path_factory):
    """The VideoSeal 1.0 mini converted with RANDOM weights: another model with the same shapes."""
    out = tmp_path_factory.mktemp("random")
    assert cli("convert", "--model", reference / "videoseal_1.0-mini.yaml", "--out", out, "--random-init") == 0
    return out / "videoseal_1.0-mini"


@pytest.mark.slow
def test_random_init_is_recorded_everywhere(random_mini):
    d = random_mini
    for f in ("model.json", "verify-fp32.json", "export.json"):
        assert json.loads((d / f).read_text())["random_init"] is True, f
    assert "RANDOM weights" in (d / "verify-fp32.md").read_text()


def test_verify_exits_nonzero_on_a_different_model(pipeline, random_mini, tmp_path, capsys):
    """A .tflite that does not match the PyTorch weights fails loudly, and the report says so."""
    out, d = pipeline.copy(pipeline.converted("videoseal_1.0-mini"), tmp_path)
    card = pipeline.card("videoseal_1.0-mini")
    (d / "fp32.tflite").write_bytes((random_mini / "fp32.tflite").read_bytes())
    capsys.readouterr()
    # The swap is caught before verification: the file is not the one the tflite stage recorded.
    assert cli("verify", "--model", card, "--out", out, "--untrained") == 2
    assert "ArtifactCorruptError" in capsys.readouterr().err
    # Without the record (a file put there by hand), verification itself catches the mismatch.
    for rec in (d / "records").glob("*.json"):
        rec.unlink()
    assert cli("verify", "--model", card, "--out", out, "--untrained") == 2
    err = capsys.readouterr().err
    assert "VerificationError" in err and "decisions flipped (clear" in err and "kept as fp32.failed.tflite" in err
    rep = json.loads((d / "verify-fp32.json").read_text())
    assert rep["passed"] is False and [f for f in rep["failures"] if f.startswith("bits: ") and "SNR" in f]
    assert rep["file"] == "fp32.failed.tflite" and (d / "fp32.failed.tflite").is_file() and not (d / "fp32.tflite").exists()


def test_user_images_directory_names_every_rejected_file(pipeline, reference, tmp_path, capsys):
    """IMAGES=dir: the photos it holds are verified on; every file that is not used is named on the
    terminal, counted in the stage's summary and listed in the report (a truncated JPEG among them)."""
    out, d = pipeline.copy(pipeline.converted("videoseal_1.0-mini"), tmp_path)
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for p in sorted((reference / "videoseal_1.0-mini-images").glob("*.png")):
        (imgs / p.name).write_bytes(p.read_bytes())
    (imgs / "notes.txt").write_text("not an image")
    from PIL import Image

    Image.new("RGB", (300, 200), (10, 200, 30)).save(imgs / "cut.jpg", quality=90)
    (imgs / "cut.jpg").write_bytes((imgs / "cut.jpg").read_bytes()[:400])  # a truncated JPEG
    capsys.readouterr()
    assert cli("verify", "--model", pipeline.card("videoseal_1.0-mini"), "--out", out, "--images", imgs, "--untrained") == 0
    terminal = capsys.readouterr().out
    assert "skipped cut.jpg:" in terminal and "skipped notes.txt: not an image file (.txt)" in terminal
    line = re.search(r"rejected files +2: (.*)", terminal)
    assert line and sorted(line.group(1).split(", ")) == ["cut.jpg", "notes.txt"]
    rep = json.loads((d / "verify-fp32.json").read_text())
    assert rep["images"] == ["00:full", "01:full", "02:full"]
    assert sorted(r["file"] for r in rep["rejected"]) == ["cut.jpg", "notes.txt"]
    assert "Rejected: " in (d / "verify-fp32.md").read_text()


@pytest.mark.parametrize("model, fragment", [("videosael", "Did you mean 'videoseal'"), ("videoseal0.0", "rgb_96b.pth")])
def test_cli_named_errors_without_traceback(model, fragment, tmp_path, capsys):
    assert cli("convert", "--model", model, "--out", tmp_path) == 2
    err = capsys.readouterr().err
    assert fragment in err and "Traceback" not in err


def test_inspect_groups_the_vit_by_block(reference, tmp_path):
    assert cli("inspect", "--model", reference / "videoseal_0.0-mini.yaml", "--out", tmp_path, "--untrained") == 0
    rep = json.loads((tmp_path / "videoseal_0.0-mini" / "inspect.json").read_text())
    assert rep["family"] == "sam" and rep["num_params"] == 736737  # videoseal_0.0-mini.json
    assert set(rep["params_per_stage"]) == {"patch_embed + pos_embed", "block 0", "block 1", "block 2", "block 3", "neck", "pixel_decoder"}


def test_inspect_report(reference, tmp_path):
    assert cli("inspect", "--model", reference / "videoseal_1.0-mini.yaml", "--out", tmp_path, "--untrained") == 0
    rep = json.loads((tmp_path / "videoseal_1.0-mini" / "inspect.json").read_text())
    assert rep["num_params"] == json.loads((reference / "videoseal_1.0-mini.json").read_text())["num_params"]
    assert set(rep["params_per_stage"]) == {"stem + stage 0", "stage 1", "stage 2", "stage 3", "pixel_decoder"}
    assert rep["zero_conv_linear_weights"] == [] and rep["gflops_256"] > 0 and rep["checkpoint"] == "videoseal_1.0-mini.pth"
    t = next(t for t in rep["tensors"] if t["name"] == "pixel_decoder.linear.weight")
    assert t["shape"] == [257, 192] and t["std"] > 0
