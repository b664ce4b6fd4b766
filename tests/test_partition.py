"""The large-model path (ChunkySeal over 2 GB) exercised on chunkyseal-mini with small parts."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from tests.conftest import cli
from videoseal_litert.convert.options import RunOptions
from videoseal_litert.convert.parts import ExtractorPart
from videoseal_litert.convert.tflite import short_name
from videoseal_litert.models.registry import resolve
from videoseal_litert.quantize.partition import MergeError, convert_parts, merge_parts, plan_parts
from videoseal_litert.quantize.stage import stage_quantize
from videoseal_litert.runtime.runners import open_runner

MINI = "chunkyseal-mini"
PART_BYTES = 5_000_000  # chunkyseal-mini has 15.5 MB of float weights: four parts


@pytest.fixture(scope="module")
def part_files(reference, tmp_path_factory):
    """chunkyseal-mini's deploy form cut into float parts and converted, once for the module."""
    tmp = tmp_path_factory.mktemp("parts")
    part = ExtractorPart(RunOptions(spec=resolve(str(reference / f"{MINI}.yaml")), out=tmp))
    loaded = part.load()
    parts = plan_parts(part.family, part.family.deploy_form(loaded.module), PART_BYTES)
    assert len(parts) == 4 and parts[0].first and parts[-1].last
    assert all(sum(p.numel() * 4 for p in q.parameters()) <= PART_BYTES for q in parts[:-1])
    return part, convert_parts(parts, 256, tmp), tmp


@pytest.mark.slow
def test_fp32_parts_joined_equal_pytorch(part_files, reference):
    part, paths, tmp = part_files
    ref_module = part.load().module
    merged = tmp / "merged.tflite"
    merge_parts(paths, merged)
    data = np.load(reference / f"{MINI}.npz")
    x = data["images"][:2]
    runner = open_runner(merged)
    for i in range(len(x)):
        out = runner({"image": x[i : i + 1].transpose(0, 2, 3, 1).copy()})
        with torch.no_grad():
            ref = ref_module(torch.from_numpy(x[i : i + 1])).numpy()
        got = np.concatenate([out["mask_logit"].reshape(1, -1), out["bit_logits"].reshape(1, -1)], axis=1)
        assert np.abs(got - ref).max() <= 1e-4
        assert np.abs(ref - data["logits"][i : i + 1]).max() <= 1e-4  # the official logits, independently


def test_merge_refuses_mismatched_seam(part_files, tmp_path):
    """Parts that do not chain are refused by name: two outputs into one input, or a shape mismatch."""
    _, paths, _ = part_files
    with pytest.raises(MergeError, match="part 0 must have one output to feed part 1"):
        merge_parts([paths[-1], paths[1]], tmp_path / "bad.tflite")
    with pytest.raises(MergeError, match="seam before part 1: shape"):
        merge_parts([paths[0], paths[2]], tmp_path / "bad.tflite")
    assert not (tmp_path / "bad.tflite").exists()


@pytest.mark.slow
def test_partitioned_quantize_passes_its_floors(pipeline, tmp_path):
    out, d = pipeline.copy(pipeline.converted(MINI), tmp_path)
    spec = dataclasses.replace(resolve(str(pipeline.card(MINI))), calibration_images=16, verify_images=4)
    opts = RunOptions(spec=spec, out=out, max_part_bytes=PART_BYTES)
    stage_quantize(opts, ExtractorPart(opts), variants=("int8", "int8-full", "int4"))
    q = json.loads((d / "quantize.json").read_text())
    assert q["partitioned"]["num_parts"] == 4 and q["calibration"]["used"] == 16
    assert set(q["partitioned"]["peak_rss_mb_after"]) == {
        "convert_parts",
        "calibrate",
        "quantize_int8",
        "quantize_int8-full",
        "quantize_int4",
    }
    int8, full = q["variants"]["int8"], q["variants"]["int8-full"]
    assert int8["passed"] and full["passed"]
    assert int8["xnnpack"]["num_not_delegated"] == 0
    # int8-full joins its parts at int8 seams: integer input and outputs, nothing float in between.
    assert full["io"]["inputs"][0]["dtype"] == "int8" and all(o["dtype"] == "int8" for o in full["io"]["outputs"])
    assert json.loads((d / "verify-int8.json").read_text())["num_images"] == 4
    for v in ("int8", "int8-full"):
        assert q["variants"][v]["size_ratio_to_fp32"] < 0.3
    # int4 through the same parts: 4-bit pointwise weights, so smaller than int8's 8-bit ones.
    int4 = q["variants"]["int4"]
    assert int4["passed"] and int4["xnnpack"]["num_not_delegated"] == 0
    assert int4["size_ratio_to_fp32"] < int8["size_ratio_to_fp32"]


def test_short_names_keep_classes_that_tell_list_items_apart():
    a = "videoseal_litert.models.parts.NamedExtractor/videoseal_litert.models.convnext.DeployExtractor_deploy/torch.nn.modules.container.Sequential_0/videoseal_litert.models.convnext.Block_1;"
    b = "videoseal_litert.models.parts.NamedExtractor/videoseal_litert.models.convnext.DeployExtractor_deploy/torch.nn.modules.container.Sequential_0/videoseal_litert.models.convnext.LayerNorm2d_1;"
    assert short_name(a) == "NamedExtractor/DeployExtractor_deploy/Sequential_0/Block_1;"
    assert short_name(a) != short_name(b)
    assert short_name("serving_default_image") == "serving_default_image" and short_name("arith.constant3") == "arith.constant3"


def test_converted_file_has_short_names_and_named_io(pipeline, tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    d = pipeline.converted("videoseal_1.0-mini")
    assert cli("tflite", "--model", pipeline.card("videoseal_1.0-mini"), "--out", tmp_path) == 2  # load first: named error
    it = Interpreter(model_path=str(d / "fp32.tflite"))
    names = [x["name"] for x in it.get_tensor_details()]
    assert not [n for n in names if "models." in n or "torch.nn.modules" in n]
    assert len(set(names)) == len(names)
    sig = it.get_signature_runner()
    assert set(sig.get_input_details()) == {"image"} and set(sig.get_output_details()) == {"mask_logit", "bit_logits"}
