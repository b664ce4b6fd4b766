"""A file that fails the rule never looks shipped, and commands that use files refuse it (issue 31).

On the trained tiny pair (the demo's verified files, copied): its INT8 extractor with one layer's weights
perturbed fails verification naming the clear-margin bits it flips, is kept as ``int8.failed.tflite``, and
evaluate, package, bench and arm-check refuse it by name (``--allow-unverified`` lets package ship it,
labelled). The same on the released-size fixture runs behind the ``fullsize`` marker. Also: the demo's
exit code, and the accuracy control's named refusal on a part quantized in pieces."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import cli, locked, mini_opts
from videoseal_litert.convert.options import RunOptions
from videoseal_litert.convert.parts import ExtractorPart
from videoseal_litert.convert.verify import verify_file
from videoseal_litert.core.errors import UsageError, VerificationError
from videoseal_litert.models.registry import resolve
from videoseal_litert.models.variants import VARIANTS


def negate_first_conv(path: Path) -> str:
    """A perturbed layer: the first CONV_2D's weights (the stem: int8, or float where the accuracy control
    kept it float) with their signs flipped, written in place. Returns the op's output tensor name."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    from videoseal_litert.convert.tflite import as_numpy_buffers

    model = flatbuffer_utils.read_model(str(path))
    as_numpy_buffers(model)
    sg = model.subgraphs[0]
    dtypes = {schema.TensorType.INT8: np.int8, schema.TensorType.FLOAT32: np.float32, schema.TensorType.FLOAT16: np.float16}
    for op in sg.operators:
        code = model.operatorCodes[op.opcodeIndex]
        if max(code.builtinCode, code.deprecatedBuiltinCode) != schema.BuiltinOperator.CONV_2D:
            continue
        w = sg.tensors[op.inputs[1]]
        buf = model.buffers[w.buffer]
        if buf.data is None or w.type not in dtypes:
            continue  # weights computed in the graph (a DEQUANTIZE output): not this layer
        x = np.frombuffer(buf.data.tobytes(), dtype=dtypes[w.type])
        flipped = np.clip(-x.astype(np.float64), -127, 127) if w.type == schema.TensorType.INT8 else -x
        buf.data = np.frombuffer(flipped.astype(dtypes[w.type]).tobytes(), dtype=np.uint8)
        flatbuffer_utils.write_model(model, str(path))
        name = sg.tensors[op.outputs[0]].name
        return name.decode() if isinstance(name, bytes) else name
    raise AssertionError(f"{path}: no CONV_2D with constant weights")


def degrade_and_verify(out: Path, model: str) -> tuple[Path, dict]:
    """The model's verified int8.tflite under ``out`` with its stem perturbed, verified again: (its folder, report)."""
    opts = RunOptions(spec=resolve(model), out=out)
    part = ExtractorPart(opts)
    d = opts.model_dir.path
    negate_first_conv(d / "int8.tflite")
    inputs = part.verification_set()
    with pytest.raises(VerificationError, match=r"int8 failed verification: logits: watermark SNR .* clear-margin flip\(s\)"):
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
    gate = rep["gate"]["logits"]
    assert rep["passed"] is False and rep["file"] == "int8.failed.tflite" and rep["random_init"] is False
    assert gate["snr_db"] < gate["min_snr_db"] and gate["clear_flips"] > 0
    named = gate["clear_flip_list"][0]
    assert named["output"].startswith(("bit ", "mask")) and abs(named["pytorch"]) > named["band"]  # outside its band, flipped
    assert (named["pytorch"] > 0) != (named["file"] > 0)
    assert not (d / "int8.tflite").exists() and (d / "int8.failed.tflite").is_file()  # never under its shipping name
    assert "FAILED" in (d / "verify-int8.md").read_text() and "clear-margin flips" in (d / "verify-int8.md").read_text()
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


@pytest.mark.fullsize
def test_a_degraded_fixture_int8_file_fails_and_is_refused(tmp_path, capsys):
    """The same on the released-size fixture (`make train-fixture`, then `make quantize MODEL=fixture`; OUT=artifacts)."""
    src = Path("artifacts") / "fixture"
    shutil.copytree(src, tmp_path / "out" / "fixture", ignore=shutil.ignore_patterns("evaluate", "robustness"))
    out = tmp_path / "out"
    d, rep = degrade_and_verify(out, "fixture")
    assert rep["gate"]["logits"]["clear_flips"] > 0 and not (d / "int8.tflite").exists()
    assert_refused_everywhere(out, "fixture", d, tmp_path, capsys)


def test_the_demo_exits_nonzero_whenever_it_prints_failed(demo_run, tmp_path, monkeypatch, capsys):
    """Every gate of the demo passes, but an artifact's verification did not: FAILED, and a non-zero exit."""
    from videoseal_litert.demo import watermark

    out, rc, _ = demo_run
    assert rc == 0
    with locked(out.parent / ".lock"):
        shutil.copytree(out, tmp_path / "artifacts", ignore=shutil.ignore_patterns("evaluate", "robustness"))
    monkeypatch.setattr(watermark, "prepared", lambda out_, ckpt, threads, model, target: RunOptions(spec=resolve(model), out=out_))
    real = watermark.artifact_summary
    monkeypatch.setattr(watermark, "artifact_summary", lambda *a, **k: (real(*a, **k)[0], False))
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(_one_photo(), photos / "p.png")
    with pytest.raises(VerificationError, match="demo failed: an artifact's verification"):
        watermark.run_demo(tmp_path / "artifacts", images=photos)
    assert capsys.readouterr().out.rstrip().splitlines()[-1].startswith("FAILED")


def test_the_accuracy_control_is_refused_by_name_on_a_part_in_pieces(pipeline, tmp_path):
    """Quantized in pieces (a mini cut as ChunkySeal is), int4-mixed and a user's target have no accuracy
    control to run: named refusals, before any work (the default target, reported as not run there:
    test_partition.py)."""
    from videoseal_litert.quantize.stage import stage_quantize

    out, d = pipeline.copy(pipeline.converted("chunkyseal-mini"), tmp_path)
    before = {p.name: p.stat().st_mtime_ns for p in d.iterdir() if p.name != ".lock"}  # the shared folder may hold quantized files
    opts = mini_opts(pipeline.card("chunkyseal-mini"), out, max_part_bytes=200_000)
    part = ExtractorPart(opts)
    with pytest.raises(UsageError, match="int4-mixed: the accuracy control that makes it does not run on a part quantized in pieces"):
        stage_quantize(opts, part, variants=("int4-mixed",))
    with pytest.raises(UsageError, match="an accuracy target was set, but the accuracy control does not run on a part quantized in pieces"):
        stage_quantize(opts, part, variants=("int8",), target=0.99)
    assert {p.name: p.stat().st_mtime_ns for p in d.iterdir() if p.name != ".lock"} == before  # nothing written (the lock aside)
