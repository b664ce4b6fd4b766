"""Files made worse on purpose fail the rule by name, never look shipped, and commands that use files refuse them.

On the trained tiny pair (the demo's verified files, copied): its INT8 extractor edited in its last layer (the
mask bias moved so every clean photo is flagged; one bit's weights negated), calibrated on one flat grey image,
or with its stem's weights sign-flipped (``tests/degrade.py``). Each fails ``verify --file`` (``make verify
FILE=``) naming the group it breaks, where the untouched file passes; a file that fails in the pipeline is kept as
``int8.failed.tflite``; evaluate, package, bench and arm-check refuse it by name (``--allow-unverified`` lets
package ship it, labelled), and with it they judge it by the same rule and fail it (arm-check here; web-check in
tests/test_web.py). The same on the released-size fixture runs behind the ``fullsize`` marker. Also: the demo's
exit code, and the accuracy control's named refusal on a part quantized in pieces."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import cli, locked, mini_opts
from tests.degrade import grey_calibrated, negate_bit, negate_first_conv, shift_mask_bias
from videoseal_litert.convert.options import RunOptions
from videoseal_litert.convert.parts import ExtractorPart
from videoseal_litert.convert.verify import verify_file
from videoseal_litert.core.errors import UsageError, VerificationError
from videoseal_litert.models.registry import resolve
from videoseal_litert.models.variants import VARIANTS


def degrade_and_verify(out: Path, model: str) -> tuple[Path, dict]:
    """The model's verified int8.tflite under ``out`` with its stem perturbed, verified again: (its folder, report)."""
    opts = RunOptions(spec=resolve(model), out=out)
    part = ExtractorPart(opts)
    d = opts.model_dir.path
    negate_first_conv(d / "int8.tflite", d / "int8.tflite")
    inputs = part.verification_set()
    with pytest.raises(VerificationError, match=r"int8 failed verification: detection: .* it detects missed \(clear"):
        verify_file(part, VARIANTS["int8"], d / "int8.tflite", inputs, part.reference(inputs))
    return d, json.loads((d / "verify-int8.json").read_text())


def assert_refused_everywhere(out: Path, model: str, d: Path, tmp_path: Path, capsys) -> None:
    photo = tmp_path / "photos"
    photo.mkdir(exist_ok=True)
    shutil.copy(_one_photo(), photo / "p.png")
    calls = {
        "evaluate": ("evaluate", "--model", model, "--out", out, "--variants", "int8", "--images", photo, "--attacks", "identity"),
        "package": ("package", "--model", model, "--out", out, "--dist", tmp_path / "dist", "--variants", "int8"),
        "bench": ("bench", "--model", model, "--out", out, "--part", "extractor", "--runs", "1", "--warmup", "0"),
        "arm-check": ("arm-check", "--model", model, "--out", out, "--files", "int8"),
    }
    for name, args in calls.items():
        capsys.readouterr()
        assert cli(*args) == 2, name
        err = capsys.readouterr().err
        assert "UnverifiedFileError" in err and "int8.failed.tflite failed verification" in err and "--allow-unverified" in err, (name, err)
    assert not (tmp_path / "dist" / model).exists() and not (d / "evaluate").exists()


def _one_photo() -> Path:
    from videoseal_litert.calibration_data.photos import heldout_paths

    return heldout_paths()[0]


@pytest.fixture
def tiny_copy(demo_run, tmp_path) -> Path:
    """A private copy of the demo's OUT (the tiny pair's verified files)."""
    out, rc, lines = demo_run
    assert rc == 0, "\n".join(lines[-40:])
    with locked(out.parent / ".lock"):
        shutil.copytree(out / "tiny", tmp_path / "out" / "tiny", ignore=shutil.ignore_patterns("evaluate", "robustness"))
    return tmp_path / "out"


@pytest.mark.slow
def test_a_degraded_int8_file_fails_and_is_refused_everywhere(tiny_copy, tmp_path, capsys):
    out = tiny_copy
    d, rep = degrade_and_verify(out, "tiny")
    groups = rep["gate"]["groups"]
    assert rep["passed"] is False and rep["file"] == "int8.failed.tflite" and rep["random_init"] is False
    assert groups["bits"]["snr_db"] < groups["bits"]["floor_db"] and groups["bits"]["clear_flips"] > 0
    named = groups["bits"]["clear_flip_list"][0]
    assert named["output"].startswith("bit ") and abs(named["pytorch"]) > groups["bits"]["clear_threshold"]  # a clear decision, flipped
    assert (named["pytorch"] > 0) != (named["file"] > 0)
    assert not (d / "int8.tflite").exists() and (d / "int8.failed.tflite").is_file()  # never under its shipping name
    assert "FAILED" in (d / "verify-int8.md").read_text() and "clear flips (each fails the file)" in (d / "verify-int8.md").read_text()
    assert_refused_everywhere(out, "tiny", d, tmp_path, capsys)
    # Told so, package ships it under its failed name and says it is unverified; the untouched files pass.
    assert (
        cli("package", "--model", "tiny", "--out", out, "--dist", tmp_path / "dist", "--variants", "fp32,int8", "--allow-unverified") == 0
    )
    b = tmp_path / "dist" / "tiny"
    model = json.loads((b / "model.json").read_text())
    assert model["unverified_files"] == ["int8.failed.tflite"] and "UNVERIFIED FILES" in (b / "README.md").read_text()
    assert model["variants"]["fp32"]["verification"]["passed"] is True and (b / "fp32.tflite").is_file()
    assert "PASSED, WITH UNVERIFIED FILES" in capsys.readouterr().out


EDITS = {
    # name: (how the copy is made, the group its failure names first, what the failure says)
    "mask-bias+8": (lambda src, dst, part: shift_mask_bias(src, dst, 8.0), "detection", "inputs PyTorch finds unwatermarked flagged"),
    "bit3-negated": (lambda src, dst, part: negate_bit(src, dst, 3), "bits", "decisions flipped (clear"),
    "grey-calibrated": (lambda src, dst, part: grey_calibrated(part, src.with_name("fp32.tflite"), dst), "detection", "SNR"),
}


@pytest.fixture
def edited(tiny_copy, tmp_path) -> tuple[Path, dict[str, Path]]:
    """The tiny pair's verified int8.tflite and its edited copies, outside the model folder: (OUT, {name: file})."""
    out = tiny_copy
    src = out / "tiny" / "int8.tflite"
    part = ExtractorPart(RunOptions(spec=resolve("tiny"), out=out))
    files = {}
    for name, (make, _, _) in EDITS.items():
        files[name] = tmp_path / "edited" / f"{name}.tflite"
        files[name].parent.mkdir(exist_ok=True)
        make(src, files[name], part)
    return out, files


@pytest.mark.slow
def test_edited_files_fail_verify_file_by_the_group_they_break(edited, tmp_path, capsys):
    """``make verify FILE=``: any .tflite judged against the model's PyTorch wherever it lies, the report beside it;
    the untouched file passes, each edited copy exits 2 naming the group it breaks (and is left where it lies)."""
    out, files = edited
    untouched = tmp_path / "mine" / "int8.tflite"
    untouched.parent.mkdir()
    shutil.copy(out / "tiny" / "int8.tflite", untouched)
    assert cli("verify", "--model", "tiny", "--out", out, "--file", untouched) == 0
    rep = json.loads((untouched.parent / "verify-int8.json").read_text())
    assert rep["passed"] and rep["precision"] == "quantized" and rep["rule"]["floor_db"] == 12.0 and rep["path"] == str(untouched)
    assert {"detection / jpeg_50", "bits / jpeg_50", "bits / resize_0.5"} <= set(rep["gate"]["groups"])
    for name, f in files.items():
        _, group, says = EDITS[name]
        capsys.readouterr()
        assert cli("verify", "--model", "tiny", "--out", out, "--file", f) == 2, name
        err = capsys.readouterr().err
        assert f"FAILED verification: {group}: " in err and says in err, (name, err[-600:])
        rep = json.loads((f.parent / f"verify-{name}.json").read_text())
        assert rep["passed"] is False and rep["file"] == f.name and f.is_file()  # judged where it lies, never moved
    # An edited file put under the pipeline's name is refused downstream: its sha256 is not the verified one.
    shutil.copy(files["bit3-negated"], out / "tiny" / "int8.tflite")
    capsys.readouterr()
    assert cli("bench", "--model", "tiny", "--out", out, "--part", "extractor", "--runs", "1", "--warmup", "0") == 2
    assert "changed since it was verified" in capsys.readouterr().err


@pytest.mark.slow
def test_edited_files_fail_arm_check_by_the_rule(edited, capsys):
    """On an emulated ARM64 CPU the same rule judges the same edited files (put in the model folder as int8 and
    int8-dynamic, run there with --allow-unverified, as their sha256 is not the verified one): each fails by the
    group it breaks."""
    out, files = edited
    shutil.copy(files["mask-bias+8"], out / "tiny" / "int8.tflite")
    shutil.copy(files["bit3-negated"], out / "tiny" / "int8-dynamic.tflite")
    args = ("arm-check", "--model", "tiny", "--out", out, "--files", "int8,int8-dynamic", "--cpus", "neoverse-n1", "--inputs", "3")
    capsys.readouterr()
    assert cli(*args) == 2  # refused: not the verified bytes
    assert "UnverifiedFileError" in capsys.readouterr().err
    assert cli(*args, "--allow-unverified") == 2
    err = capsys.readouterr().err
    failures = json.loads((out / "tiny" / "arm64.json").read_text())["failures"]
    assert any(f.startswith("int8.tflite on neoverse-n1: detection: ") for f in failures), err
    assert any(f.startswith("int8-dynamic.tflite on neoverse-n1: bits: ") for f in failures), err


@pytest.mark.fullsize
def test_a_degraded_fixture_int8_file_fails_and_is_refused(tmp_path, capsys):
    """The same on the released-size fixture (`make train-fixture`, then `make quantize MODEL=fixture`; OUT=artifacts)."""
    src = Path("artifacts") / "fixture"
    shutil.copytree(src, tmp_path / "out" / "fixture", ignore=shutil.ignore_patterns("evaluate", "robustness"))
    out = tmp_path / "out"
    d, rep = degrade_and_verify(out, "fixture")
    assert rep["gate"]["groups"]["bits"]["clear_flips"] > 0 and not (d / "int8.tflite").exists()
    assert_refused_everywhere(out, "fixture", d, tmp_path, capsys)


def test_the_demo_exits_nonzero_whenever_it_prints_failed(demo_run, tmp_path, monkeypatch, capsys):
    """Every gate of the demo passes, but an artifact's verification did not: FAILED, and a non-zero exit."""
    from videoseal_litert.demo import watermark

    out, rc, _ = demo_run
    assert rc == 0
    with locked(out.parent / ".lock"):
        shutil.copytree(out, tmp_path / "artifacts", ignore=shutil.ignore_patterns("evaluate", "robustness"))
    monkeypatch.setattr(watermark, "prepared", lambda opts, target: opts.for_stages())
    real = watermark.artifact_summary
    monkeypatch.setattr(watermark, "artifact_summary", lambda *a, **k: (real(*a, **k)[0], False))
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(_one_photo(), photos / "p.png")
    with pytest.raises(VerificationError, match="demo failed: an artifact's verification"):
        watermark.run_demo(RunOptions(spec=resolve("tiny"), out=tmp_path / "artifacts", images=photos))
    assert capsys.readouterr().out.rstrip().splitlines()[-1].startswith("FAILED")


def test_the_accuracy_control_is_refused_by_name_on_a_part_in_pieces(pipeline, tmp_path):
    """Quantized in pieces (a mini cut as ChunkySeal is), int4-mixed and a user's target have no accuracy
    control to run: named refusals, before any work (the default target, reported as not run there:
    test_partition.py)."""
    from videoseal_litert.quantize.quantize_stage import stage_quantize

    out, d = pipeline.copy(pipeline.converted("chunkyseal-mini"), tmp_path)
    before = {p.name: p.stat().st_mtime_ns for p in d.iterdir() if p.name != ".lock"}  # the shared folder may hold quantized files
    opts = mini_opts(pipeline.card("chunkyseal-mini"), out, max_part_bytes=200_000)
    part = ExtractorPart(opts)
    with pytest.raises(UsageError, match="int4-mixed: the accuracy control that makes it does not run on a part quantized in pieces"):
        stage_quantize(opts, part, variants=("int4-mixed",))
    with pytest.raises(UsageError, match="an accuracy target was set, but the accuracy control does not run on a part quantized in pieces"):
        stage_quantize(opts, part, variants=("int8",), target=0.99)
    assert {p.name: p.stat().st_mtime_ns for p in d.iterdir() if p.name != ".lock"} == before  # nothing written (the lock aside)
