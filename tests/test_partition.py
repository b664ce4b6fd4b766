"""The large-model path (ChunkySeal over 2 GB) exercised on the minis with small pieces: the extractor's
chain (chunkyseal-mini) and the U-Net embedder with its skips (chunkyseal-embedder-mini)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from tests.conftest import cli
from videoseal_litert.convert.options import RunOptions
from videoseal_litert.convert.parts import EmbedderPart, ExtractorPart
from videoseal_litert.convert.split import MergeError, convert_pieces, join, plan, write_model
from videoseal_litert.convert.stages import stage_tflite
from videoseal_litert.convert.tflite import short_name
from videoseal_litert.core.errors import VerificationError
from videoseal_litert.models.registry import resolve
from videoseal_litert.models.variants import VARIANTS
from videoseal_litert.quantize.quantize_stage import CONTROL_IN_PIECES, stage_quantize
from videoseal_litert.runtime.runners import open_runner

MINI = "chunkyseal-mini"
PART_BYTES = 5_000_000  # chunkyseal-mini has 15.5 MB of float weights: four pieces
EMB_MINI = "chunkyseal-embedder-mini"
EMB_PIECE_BYTES = 300_000  # chunkyseal-embedder-mini's U-Net (2.1 MB) in seven pieces, skips crossing three of them
# The stages in pieces (each converts every piece again): three pieces, the skips still crossing one, at a third of the cost.
EMB_STAGE_PIECE_BYTES = 1_000_000
OUTS = ("mask_logit", "bit_logits")


@pytest.fixture(scope="module")
def part_files(reference, tmp_path_factory):
    """chunkyseal-mini's deploy form cut into float pieces and converted, once for the module."""
    tmp = tmp_path_factory.mktemp("parts")
    part = ExtractorPart(RunOptions(spec=resolve(str(reference / f"{MINI}.yaml")), untrained=True, out=tmp))
    pieces = plan(part.units(part.load()), PART_BYTES)
    assert len(pieces) == 4 and pieces[0].inputs == ("image",) and pieces[-1].outputs == OUTS
    assert all(p.weight_bytes() <= PART_BYTES for p in pieces[:-1])
    return part, convert_pieces(pieces, part.sample_inputs(), tmp), tmp


@pytest.mark.slow
def test_fp32_parts_joined_equal_pytorch(part_files, reference):
    part, paths, tmp = part_files
    ref_module = part.load().module
    merged = tmp / "merged.tflite"
    join(paths, merged, ("image",), OUTS)
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


def test_join_refuses_pieces_that_do_not_chain(part_files, tmp_path):
    """Pieces whose names do not connect are refused by name, and nothing is written."""
    _, paths, _ = part_files
    with pytest.raises(MergeError, match=r"piece 0 reads \['x\d+'\], which are not model inputs"):
        join([paths[-1], paths[1]], tmp_path / "bad.tflite", ("image",), OUTS)
    with pytest.raises(MergeError, match=r"piece 1 reads 'x\d+', which no earlier piece writes"):
        join([paths[0], paths[2]], tmp_path / "bad.tflite", ("image",), OUTS)
    with pytest.raises(MergeError, match=r"no piece reads or writes \['mask_logit', 'bit_logits'\]"):
        join(paths[:2], tmp_path / "bad.tflite", ("image",), OUTS)
    assert not (tmp_path / "bad.tflite").exists()


@pytest.fixture(scope="module")
def embedder_pieces(reference, tmp_path_factory):
    """chunkyseal-embedder-mini's U-Net in float pieces, joined once for the module."""
    tmp = tmp_path_factory.mktemp("unet-pieces")
    part = EmbedderPart(RunOptions(spec=resolve(str(reference / f"{EMB_MINI}.yaml")), untrained=True, out=tmp))
    pieces = plan(part.units(part.load()), EMB_PIECE_BYTES)
    paths = convert_pieces(pieces, part.sample_inputs(), tmp)
    joined = tmp / "joined.tflite"
    join(paths, joined, ("image", "message"), ("watermarked", "residual"))
    return pieces, joined


def test_unet_pieces_carry_the_skips_by_name(embedder_pieces):
    """The U-Net's skips are read pieces after they are written: the join wires them by name."""
    pieces, _ = embedder_pieces
    assert len(pieces) == 7 and pieces[0].inputs == ("image",) and pieces[-1].outputs == ("watermarked", "residual")
    written = {n: k for k, p in enumerate(pieces) for n in p.outputs}
    far = [(n, written[n], k) for k, p in enumerate(pieces) for n in p.inputs if n in written and k - written[n] >= 3]
    assert far, "no skip crosses a piece"
    assert any("message" in p.inputs for p in pieces[1:]) and "image" in pieces[-1].inputs  # model inputs read late


@pytest.mark.slow
def test_unet_joined_from_pieces_equals_the_single_file(embedder_pieces, pipeline, reference):
    """The joined file against the embedder converted in one piece (`make embedder`), and against the
    official vectors, on the reference's images and messages."""
    _, joined = embedder_pieces
    single = open_runner(pipeline.embedder(EMB_MINI, "fp32") / "embedder-fp32.tflite")
    pieces = open_runner(joined)
    z = np.load(reference / f"{EMB_MINI}.npz")
    for img, msg, want in zip(z["images"], z["msgs"], z["watermarked"], strict=True):
        feed = {"image": img.transpose(1, 2, 0)[None].copy(), "message": msg[None].astype(np.float32)}
        a, b = pieces(feed), single(feed)
        assert np.abs(a["watermarked"] - b["watermarked"]).max() <= 1e-5
        assert np.abs(a["residual"] - b["residual"]).max() <= 1e-3  # the reference's residual tolerance
        assert np.abs(a["watermarked"][0] - want.transpose(1, 2, 0)).max() <= 1e-4


def test_weights_after_the_flatbuffer_load_and_run_the_same(embedder_pieces, tmp_path):
    """The large-model layout (weights after the flatbuffer, by offset), forced on a small file."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    _, joined = embedder_pieces
    out = tmp_path / "external.tflite"
    write_model(flatbuffer_utils.read_model(str(joined)), out, external_above=0)
    raw = out.read_bytes()
    model = schema.Model.GetRootAs(raw, 0)
    offsets = [model.Buffers(i).Offset() for i in range(model.BuffersLength()) if model.Buffers(i).Size() >= 1024]
    assert offsets and all(o % 16 == 0 and o > 0 for o in offsets) and model.Buffers(0).DataLength() == 0
    ext, small = open_runner(out), open_runner(joined)
    feed = {n: np.full(shape, 0.4 if n == "image" else 1.0, np.float32) for n, shape in small.input_shapes.items()}
    a, b = ext(feed), small(feed)
    assert all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_embedder_converted_and_quantized_in_pieces(pipeline, tmp_path):
    """`make embedder` on a mini forced to split: the fp32 file joined from pieces and fp16 quantized piece by
    piece and joined, each verified against PyTorch like any embedder file; int8 calibrated through the
    pieces (the U-Net's skips spilled between them), joined, with its per-op error over every piece. (This
    random U-Net's all-INT8 file is 4 dB under its watermark, short of the embedder's 10 dB band: the stage's
    fallback then keeps ops float piece by piece, tested on the extractor's pieces below, which cost less.)"""
    from videoseal_litert.core.images import Tally
    from videoseal_litert.quantize.partition import quantize_partitioned

    out, d = pipeline.copy(pipeline.embedder(EMB_MINI, "fp32"), tmp_path)
    images = pipeline.reference / f"{EMB_MINI}-images"
    opts = RunOptions(
        spec=resolve(str(pipeline.card(EMB_MINI))), out=out, max_part_bytes=EMB_STAGE_PIECE_BYTES, images=images, untrained=True
    )
    part = EmbedderPart(opts)
    (d / "embedder-fp32.tflite").unlink()
    stage_tflite(opts, part)
    assert cli("verify", "--model", pipeline.card(EMB_MINI), "--out", out, "--part", "embedder", "--images", images, "--untrained") == 0
    fp32 = json.loads((d / "verify-embedder-fp32.json").read_text())
    assert fp32["passed"] and fp32["max_abs_pixel_diff"] <= 1e-4
    stage_quantize(opts, part, variants=("fp16",))  # the embedder's default target (10 dB): no control in pieces
    q = json.loads((d / "embedder-quantize.json").read_text())
    assert q["partitioned"]["num_parts"] == 3 and q["variants"]["fp16"]["passed"]
    assert q["accuracy_control"] == CONTROL_IN_PIECES and q["variants"]["fp16"]["size_ratio_to_fp32"] < 0.55
    # What XNNPACK leaves to the builtin kernels is what it leaves in the file converted in one piece
    # (the message grid's BROADCAST_TO, JND's LESS_EQUAL/SELECT/POW, the clamp): joining adds nothing.
    single = open_runner(pipeline.embedder(EMB_MINI, "fp32") / "embedder-fp32.tflite").delegation()
    got = q["variants"]["fp16"]["xnnpack"]
    assert [x["op"] for x in got["not_delegated"]] == [x["op"] for x in single["not_delegated"]]
    int8 = VARIANTS["int8"]
    tally = Tally()
    with quantize_partitioned(opts, part, (int8,), None, tally) as source:
        source.quantize(d / "joined-int8.tflite", int8, [])
        inputs = part.verification_set().inputs
        ops = source.op_errors(d / "joined-int8.tflite", inputs)
    assert tally.used > 0 and (d / "joined-int8.tflite").stat().st_size < 0.35 * (d / "embedder-fp32.tflite").stat().st_size
    joined = open_runner(d / "joined-int8.tflite")
    assert [x["op"] for x in joined.delegation()["not_delegated"]] == [x["op"] for x in single["not_delegated"]]
    assert np.isfinite(joined(inputs[0])["watermarked"]).all()
    # The per-op error of the whole joined model: every piece's ops, under the joined file's names, worst first.
    assert {r["tensor"].split("/", 1)[0] for r in ops} == {f"piece{k}" for k in range(3)}
    sq = [r["sqnr_db"] for r in ops if r["sqnr_db"] is not None]
    assert sq == sorted(sq)


@pytest.mark.slow
def test_partitioned_quantize_is_judged_by_the_rule(pipeline, tmp_path):
    """ChunkySeal's path, on its mini cut in four pieces: int8, int8-full and int4 quantized piece by piece and
    joined, each judged by the rule like any file. On these random weights the all-INT8 file fails on the
    validation split, and the fallback keeps the worst ops float, in whichever piece they are, until it passes
    there (then the evaluation views judge it); int8-full and int4 cannot keep ops float: 8- and 4-bit noise
    flips more of the decisions a random network puts near zero than the rule allows, the honest verdict."""
    out, d = pipeline.copy(pipeline.converted(MINI), tmp_path)
    spec = dataclasses.replace(resolve(str(pipeline.card(MINI))), calibration_images=16, verify_images=4)
    opts = RunOptions(spec=spec, out=out, max_part_bytes=PART_BYTES, untrained=True)
    with pytest.raises(VerificationError, match=r"int8-full failed verification: .*near, at most"):
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
    int8, full, int4 = q["variants"]["int8"], q["variants"]["int8-full"], q["variants"]["int4"]
    assert int8["passed"] and int8["xnnpack"]["num_not_delegated"] == 0
    assert int8["kept_float_by_fallback"] and int8["fallback"]["chosen_on"].startswith("the validation split")
    assert all(n.startswith("piece") and n.split("/", 1)[1] for n in int8["kept_float_by_fallback"])
    assert int8["fallback"]["size_bytes_after"] > int8["fallback"]["size_bytes_before"]
    assert json.loads((d / "verify-int8.json").read_text())["num_images"] == 4
    # int8-full joins its parts at int8 seams: integer input and outputs, nothing float in between.
    assert full["io"]["inputs"][0]["dtype"] == "int8" and all(o["dtype"] == "int8" for o in full["io"]["outputs"])
    assert full["size_ratio_to_fp32"] < 0.3 and not full["passed"] and (d / "int8-full.failed.tflite").is_file()
    # int4 through the same parts: 4-bit pointwise weights, so smaller than int8-full's 8-bit ones.
    assert int4["xnnpack"]["num_not_delegated"] == 0 and int4["size_ratio_to_fp32"] < full["size_ratio_to_fp32"]
    for v in ("int8-full", "int4"):
        rep = json.loads((d / f"verify-{v}.json").read_text())
        assert rep["passed"] == q["variants"][v]["passed"] and rep["random_init"] is True
        if not rep["passed"]:
            assert any(g["near_flips"] > g["near_flips_allowed"] or g["clear_flips"] for g in rep["gate"]["groups"].values())


def test_short_names_keep_classes_that_tell_list_items_apart():
    a = "videoseal_litert.models.contracts.NamedExtractor/videoseal_litert.models.convnext.DeployExtractor_deploy/torch.nn.modules.container.Sequential_0/videoseal_litert.models.convnext.Block_1;"
    b = "videoseal_litert.models.contracts.NamedExtractor/videoseal_litert.models.convnext.DeployExtractor_deploy/torch.nn.modules.container.Sequential_0/videoseal_litert.models.convnext.LayerNorm2d_1;"
    assert short_name(a) == "NamedExtractor/DeployExtractor_deploy/Sequential_0/Block_1;"
    assert short_name(a) != short_name(b)
    assert short_name("serving_default_image") == "serving_default_image" and short_name("arith.constant3") == "arith.constant3"


def test_converted_file_has_short_names_and_named_io(pipeline, tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    d = pipeline.converted("videoseal_1.0-mini")
    assert cli("tflite", "--model", pipeline.card("videoseal_1.0-mini"), "--out", tmp_path, "--untrained") == 2  # load first: named error
    it = Interpreter(model_path=str(d / "fp32.tflite"))
    names = [x["name"] for x in it.get_tensor_details()]
    assert not [n for n in names if "models." in n or "torch.nn.modules" in n]
    assert len(set(names)) == len(names)
    sig = it.get_signature_runner()
    assert set(sig.get_input_details()) == {"image"} and set(sig.get_output_details()) == {"mask_logit", "bit_logits"}


def test_join_keeps_blockwise_int4_scales(tmp_path):
    """A blockwise 4-bit weight names its scales by tensor index (``BlockwiseQuantization.scales``):
    the join must renumber it with the piece's tensors, or XNNPACK reads another tensor as the scales
    (it crashed on ChunkySeal's joined int4 extractor). Two pieces of 64-wide linear layers, int4
    (blockwise 32), joined: the same outputs as running the two piece files one after the other."""
    import litert_torch
    from torch import nn

    from videoseal_litert.models.convnext import FAMILY
    from videoseal_litert.quantize.recipes import build_quantizer

    class Fc(nn.Module):
        def __init__(self, a: str, b: str) -> None:
            super().__init__()
            self.a, self.b = a, b
            self.fc = nn.Linear(64, 64)

        def forward(self, **kw: torch.Tensor) -> dict[str, torch.Tensor]:
            return {self.b: torch.relu(self.fc(kw[self.a]))}

    torch.manual_seed(0)
    paths = []
    for k, (a, b) in enumerate((("image", "x1"), ("x1", "bit_logits"))):
        f = tmp_path / f"p{k}.tflite"
        litert_torch.convert(Fc(a, b).eval(), sample_kwargs={a: torch.rand(1, 8, 64)}).export(str(f))
        q = build_quantizer(str(f), VARIANTS["int4"], FAMILY.quant).quantize(None, enable_progress_report=False)
        (tmp_path / f"q{k}.tflite").write_bytes(q.quantized_model)
        paths.append(tmp_path / f"q{k}.tflite")
    joined = tmp_path / "joined.tflite"
    join(paths, joined, ("image",), ("bit_logits",))
    from ai_edge_litert.tools import flatbuffer_utils

    blockwise = [t for t in flatbuffer_utils.read_model(str(joined)).subgraphs[0].tensors if t.type == 17]
    assert len(blockwise) == 2 and all(t.quantization.details.blockSize == 32 for t in blockwise)
    x = np.random.default_rng(0).random((1, 8, 64), dtype=np.float32)
    first, second = open_runner(paths[0]), open_runner(paths[1])
    want = second({"x1": first({"image": x})["x1"]})["bit_logits"]
    got = open_runner(joined)({"image": x})["bit_logits"]
    assert np.array_equal(got, want)
