"""The runner seam: verification runs files through whatever runner the options carry.

The stages never build an interpreter; ``RunOptions.opener`` opens each file. Here two other runners
plug in without touching a stage: LiteRT's builtin kernels instead of XNNPACK, and ONNX Runtime.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from videoseal_litert.convert.options import RunOptions
from videoseal_litert.convert.parts import ExtractorPart
from videoseal_litert.convert.stages import stage_verify
from videoseal_litert.convert.verify import verify_file
from videoseal_litert.models.registry import resolve
from videoseal_litert.models.variants import VARIANTS
from videoseal_litert.runtime.runners import open_runner, run_all

MINI = "videoseal_1.0-mini"


def builtin_kernels(path: Path, threads: int):
    """LiteRT without its default delegate: the reference kernels, not XNNPACK's."""
    return open_runner(path, threads, use_xnnpack=False)


class OnnxRunner:
    """ONNX Runtime behind the runner protocol."""

    label = "onnxruntime"

    def __init__(self, path: Path, threads: int) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    @property
    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        return {i.name: tuple(i.shape) for i in self.session.get_inputs()}

    def __call__(self, inputs):
        names = [o.name for o in self.session.get_outputs()]
        return dict(zip(names, self.session.run(names, dict(inputs)), strict=True))

    def delegation(self):
        return None

    def io(self):
        return None


def test_a_plugged_in_runner_verifies_the_file_through_the_stage(pipeline, tmp_path):
    out, d = pipeline.copy(pipeline.converted(MINI), tmp_path)
    opts = RunOptions(spec=resolve(str(pipeline.card(MINI))), untrained=True, out=out, opener=builtin_kernels, force=True)
    stage_verify(opts, ExtractorPart(opts), "fp32")
    rep = json.loads((d / "verify-fp32.json").read_text())
    assert rep["runner"] == "builtin_kernels" and rep["passed"] and rep["max_abs_logit_diff"] <= 1e-4
    assert open_runner(d / "fp32.tflite", use_xnnpack=False).delegation()["num_partitions"] == 0  # really not XNNPACK
    assert open_runner(d / "fp32.tflite").delegation()["num_partitions"] >= 1


def test_onnx_runtime_through_the_same_verification(pipeline, tmp_path):
    d = pipeline.converted(MINI)
    opts = RunOptions(spec=resolve(str(pipeline.card(MINI))), untrained=True, out=tmp_path, opener=OnnxRunner)
    part = ExtractorPart(opts)
    inputs = part.verification_set()
    ref = part.reference(inputs)
    (tmp_path / "model.onnx").write_bytes((d / "model.onnx").read_bytes())
    rep = verify_file(part, VARIANTS["fp32"], tmp_path / "model.onnx", inputs, ref)
    assert rep["passed"] and rep["runner"] == "OnnxRunner" and rep["file"] == "model.onnx" and rep["max_abs_logit_diff"] <= 1e-4


def test_the_torch_reference_is_a_runner_with_the_contract_names(pipeline):
    d = pipeline.converted(MINI)
    part = ExtractorPart(RunOptions(spec=resolve(str(pipeline.card(MINI))), untrained=True, out=d.parent))
    torch_runner = part.torch_runner(part.load())
    x = [{"image": np.random.default_rng(i).random((1, 256, 256, 3), dtype=np.float32)} for i in range(2)]
    a, b = run_all(torch_runner, x), run_all(open_runner(d / "fp32.tflite"), x)
    assert set(a) == set(b) == {"mask_logit", "bit_logits"}
    assert all(np.abs(a[k] - b[k]).max() <= 1e-4 for k in a)


def test_large_files_run_through_the_compiled_model_with_a_weight_cache(pipeline, tmp_path, monkeypatch):
    """Above WEIGHT_CACHE_ABOVE_BYTES the stages' opener runs a file through LiteRT's CompiledModel with
    XNNPACK's weight cache (ChunkySeal's 4.1 GB FP32 embedder: 8.27 GB -> 4.52 GB peak RSS, measured in
    the note); here the threshold is lowered so the mini takes that path, through the verify stage."""
    from videoseal_litert.runtime import runners

    out, d = pipeline.copy(pipeline.converted(MINI), tmp_path)
    monkeypatch.setattr(runners, "WEIGHT_CACHE_ABOVE_BYTES", 0)
    r = runners.open_file(d / "fp32.tflite", 1)
    assert isinstance(r, runners.CompiledLiteRT) and "weight cache" in runners.kernels(r)
    cache = Path(r._dir)
    x = np.random.default_rng(0).random((2, 256, 256, 3), dtype=np.float32)
    got = run_all(r, ({"image": v[None]} for v in x))
    want = run_all(open_runner(d / "fp32.tflite", 1), ({"image": v[None]} for v in x))
    assert set(got) == {"mask_logit", "bit_logits"} and got["bit_logits"].shape == want["bit_logits"].shape
    assert max(float(np.max(np.abs(got[k] - want[k]))) for k in got) <= 1e-5
    assert (cache / "weights.bin").stat().st_size > 0  # XNNPACK wrote its packed weights there
    r.close()
    assert not cache.exists()  # and the cache goes with the runner
    opts = RunOptions(spec=resolve(str(pipeline.card(MINI))), untrained=True, out=out, force=True)
    stage_verify(opts, ExtractorPart(opts), "fp32")
    rep = json.loads((d / "verify-fp32.json").read_text())
    assert rep["passed"] and rep["runner"] == "open_file" and "weight cache" in rep["kernels"]
    assert not list(d.glob(".xnnpack-cache-*"))
