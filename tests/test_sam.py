"""The SAM-style ViT family (VideoSeal 0.0): deploy-form rewrites equal in float, the BATCH_MATMUL
failure they fix, card checks, and the large-model path on token-grid seams."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from videoseal_litert.convert.options import RunOptions
from videoseal_litert.convert.parts import ExtractorPart
from videoseal_litert.core.errors import CardError
from videoseal_litert.models.cards import read_card
from videoseal_litert.models.contracts import EXTRACTOR_CONTRACT, NamedExtractor
from videoseal_litert.models.families import DeployExtractor
from videoseal_litert.models.registry import resolve
from videoseal_litert.models.sam import (
    SamConfig,
    SamExtractor,
    add_decomposed_rel_pos_official,
    fold_for_deploy_,
    window_partition,
    window_unpartition,
)

SMALL = SamConfig(nbits=8, embed_dim=32, depth=2, num_heads=2, out_chans=32, use_rel_pos=True, window_size=8, global_attn_indexes=(1,))


def small_vit(seed: int = 0) -> SamExtractor:
    """Two blocks (one windowed, one global) with non-zero relative positions, so a wrong rewrite shows."""
    torch.manual_seed(seed)
    m = SamExtractor(SMALL).eval()
    with torch.no_grad():
        for name, p in m.named_parameters():
            if "rel_pos" in name or "pos_embed" in name:
                p.normal_(0.0, 0.5)
    return m


def test_deploy_form_equals_official_in_float():
    m = small_vit()
    x = torch.rand(2, 3, 256, 256)
    with torch.no_grad():
        ref = m(x)
        got = fold_for_deploy_(copy.deepcopy(m))(x)
    assert ref.abs().max() > 0.05
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


def test_rel_pos_matmul_equals_official_einsum():
    attn = small_vit().image_encoder.blocks[1].attn  # global: 16x16 tokens
    q = torch.randn(4, 256, 16)
    scores = torch.randn(4, 256, 256)
    ref = add_decomposed_rel_pos_official(scores, q, attn.rel_pos_h, attn.rel_pos_w, (16, 16), (16, 16))
    attn.fold_rel_pos_()
    torch.testing.assert_close(attn._rel_pos_deploy(scores, q, 16, 16), ref, rtol=1e-5, atol=1e-5)
    assert not hasattr(attn, "rel_pos_h")  # the tables replace the parameters in the deploy form


def test_window_partition_pads_and_round_trips():
    x = torch.randn(2, 13, 10, 5)  # not multiples of the window: zero padding runs
    w, pad_hw = window_partition(x, 8)
    assert w.shape == (2 * 2 * 2, 8, 8, 5) and pad_hw == (16, 16)
    assert torch.equal(window_unpartition(w, 8, pad_hw, (13, 10)), x)


@pytest.mark.slow
def test_dynamic_int8_batch_matmul_fails_on_the_official_form_and_not_on_the_deploy_form(tmp_path):
    """Regression guard (docs/toolchain.md): the official einsum puts the constant relative-position table on
    the left of BATCH_MATMUL; a dynamic-range recipe quantizes it and the kernel refuses an int8 left
    operand with a float right one. The deploy form puts the constant on the right."""
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_quantizer import quantizer, recipe

    from videoseal_litert.convert.tflite import convert_fp32

    m = small_vit()
    results = {}
    for name, module in (("official", copy.deepcopy(m)), ("deploy", fold_for_deploy_(copy.deepcopy(m)))):
        f = tmp_path / f"{name}.tflite"
        convert_fp32(NamedExtractor(DeployExtractor(module)).eval(), EXTRACTOR_CONTRACT.sample_inputs(256, 8), f)
        q = quantizer.Quantizer(str(f))
        q.load_quantization_recipe(recipe.dynamic_wi8_afp32())
        out = tmp_path / f"{name}-dynamic.tflite"
        out.write_bytes(q.quantize().quantized_model)
        try:
            Interpreter(model_path=str(out)).allocate_tensors()
            results[name] = "ok"
        except RuntimeError as e:
            results[name] = str(e)
    assert "batch_matmul" in results["official"].lower() and "kTfLiteInt8" in results["official"]
    assert results["deploy"] == "ok"


@pytest.mark.parametrize(
    "change, message",
    [
        ({"embed_dim": 100}, "not divisible by num_heads"),
        ({"global_attn_indexes": [7]}, "outside 0..3"),
        ({"frobnicate": 1}, "unknown extractor.params.encoder key"),
        ({"depth": 0}, "must be a positive integer"),
    ],
)
def test_nonsense_vit_card_values_are_named(change, message, reference, tmp_path):
    import yaml

    raw = yaml.safe_load((reference / "videoseal_0.0-mini.yaml").read_text())
    raw["extractor"]["params"]["encoder"].update(change)
    card = tmp_path / "bad.yaml"
    card.write_text(yaml.safe_dump(raw))
    with pytest.raises(CardError, match=message):
        read_card(card)


@pytest.mark.slow
def test_vit_parts_joined_equal_the_official_logits(reference, tmp_path):
    """The large-model path on a ViT: the chain's seams carry NHWC token grids (no transposes)."""
    from videoseal_litert.convert.split import convert_pieces, join, plan
    from videoseal_litert.runtime.runners import open_runner

    part = ExtractorPart(RunOptions(spec=resolve(str(reference / "videoseal_0.0-mini.yaml")), untrained=True, out=tmp_path))
    assert part.family.name == "sam" and part.family.chain_layout == "NHWC"
    pieces = plan(part.units(part.load()), 800_000)
    assert len(pieces) >= 3 and not pieces[1].nchw & set(pieces[1].inputs)  # token grids cross as they are
    merged = tmp_path / "merged.tflite"
    join(convert_pieces(pieces, part.sample_inputs(), tmp_path), merged, ("image",), ("mask_logit", "bit_logits"))
    data = np.load(reference / "videoseal_0.0-mini.npz")
    runner = open_runner(merged)
    for img, ref in zip(data["images"][:2], data["logits"][:2], strict=True):
        out = runner({"image": img.transpose(1, 2, 0)[None].copy()})
        assert np.abs(np.concatenate([out["mask_logit"][0], out["bit_logits"][0]]) - ref).max() <= 1e-4
