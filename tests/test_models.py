"""Faithfulness of the PyTorch extractors to the official implementation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.conftest import EMBEDDER_MINIS, MINIS
from videoseal_litert.convert.inspect_checkpoint import count_flops
from videoseal_litert.convert.load import build_extractor, load_extractor
from videoseal_litert.core.errors import UnknownModelError, UnsupportedModelError
from videoseal_litert.models.cards import read_card
from videoseal_litert.models.common import LayerNorm2d, layer_norm_2d_official
from videoseal_litert.models.convnext import GRN, grn_official
from videoseal_litert.models.registry import REGISTRY, resolve

# Registry name -> key in official_layouts.json (the official card names).
OFFICIAL_NAME = {"videoseal": "videoseal_1.0", "pixelseal": "pixelseal", "chunkyseal": "chunkyseal", "videoseal_0.0": "videoseal_0.0"}


@pytest.mark.parametrize("spec", [s for s in REGISTRY if s.released], ids=lambda s: s.name)
def test_full_size_layout_matches_official(spec, reference):
    layouts = json.loads((reference / "official_layouts.json").read_text())
    assert spec.name in OFFICIAL_NAME, f"registered model {spec.name} has no official layout to check against"
    official = layouts[OFFICIAL_NAME[spec.name]]
    expected = {k.removeprefix("detector."): tuple(v) for k, v in official["extractor"].items()}
    module = build_extractor(spec.card.config, device="meta")
    got = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    assert sorted(set(expected) - set(got)) == []
    assert sorted(set(got) - set(expected)) == []
    assert {k: v for k, v in got.items() if v != expected[k]} == {}
    assert sum(p.numel() for p in module.parameters()) == official["extractor_params"]
    assert spec.card.config.nbits == official["nbits"]


@pytest.mark.parametrize("spec", [s for s in REGISTRY if not s.released and s.checkpoint_hint is None], ids=lambda s: s.name)
def test_project_model_ships_a_checkpoint_that_loads_strictly(spec):
    # Not a released model: no official layout, so its committed checkpoint is the layout to match.
    loaded = load_extractor(spec)
    assert not loaded.random_init and loaded.checkpoint_path == str(spec.default_checkpoint())
    assert loaded.config.nbits == spec.card.config.nbits


def test_a_trained_not_shipped_model_says_how_to_make_its_checkpoint(tmp_path):
    """The released-size fixture's weights are not committed: loading it without them names `make train-fixture`."""
    import dataclasses

    from videoseal_litert.core.errors import CheckpointNotFoundError
    from videoseal_litert.models.registry import resolve

    spec = dataclasses.replace(resolve("fixture"), checkpoint_dir=tmp_path)
    with pytest.raises(CheckpointNotFoundError, match="make train-fixture"):
        load_extractor(spec)


def test_chunkyseal_proportional_dims():
    # docs/toolchain.md: base dims [128, 256, 512, 1024] scaled by sqrt(1024/128) with int() truncation.
    assert resolve("chunkyseal").card.config.dims == (362, 724, 1448, 2896)
    assert resolve("chunkyseal").card.config.stem_stride == 2


def test_chunkyseal_flops_match_published_estimate():
    # docs/toolchain.md: about 1.2 T arithmetic ops per 256x256 image.
    assert count_flops(resolve("chunkyseal").card.config) == pytest.approx(1.2e12, rel=0.1)


@pytest.mark.parametrize("mini", MINIS)
def test_mini_reproduces_official_logits(mini, reference):
    spec = resolve(str(reference / f"{mini}.yaml"))
    built = json.loads((reference / f"{mini}.json").read_text())
    enc = built["encoder"]
    cfg = spec.card.config
    if spec.card.family == "convnext":
        assert list(cfg.dims) == enc["dims"]
    else:
        assert (cfg.embed_dim, cfg.depth, cfg.num_heads, list(cfg.global_attn_indexes)) == (
            enc["embed_dim"],
            enc["depth"],
            enc["num_heads"],
            enc["global_attn_indexes"],
        )
    loaded = load_extractor(spec)
    data = np.load(reference / f"{mini}.npz")
    with torch.no_grad():
        out = loaded.module(torch.from_numpy(data["images"])).numpy()
    assert out.shape == data["logits"].shape
    assert np.abs(out - data["logits"]).max() <= 1e-5
    assert sum(p.numel() for p in loaded.module.parameters()) == built["num_params"]


def test_layernorm_forms_agree():
    torch.manual_seed(0)
    ln = LayerNorm2d(37)
    with torch.no_grad():
        ln.weight.normal_(1.0, 0.3)
        ln.bias.normal_(0.0, 0.3)
    x = torch.randn(2, 37, 9, 11) * 3 + 1
    torch.testing.assert_close(ln(x), layer_norm_2d_official(x, ln.weight, ln.bias, 1e-6), rtol=1e-5, atol=1e-5)


def test_grn_forms_agree():
    torch.manual_seed(0)
    grn = GRN(40)
    with torch.no_grad():
        grn.gamma.normal_(0.0, 0.5)
        grn.beta.normal_(0.0, 0.5)
    x = torch.randn(2, 7, 5, 40)
    torch.testing.assert_close(grn(x), grn_official(x, grn.gamma, grn.beta), rtol=1e-5, atol=1e-5)


def test_unknown_model_lists_known_names_and_closest():
    with pytest.raises(UnknownModelError) as e:
        resolve("videosael")
    msg = str(e.value)
    assert "videoseal, pixelseal, chunkyseal" in msg and "Did you mean 'videoseal'" in msg


def test_alias_resolves():
    assert resolve("videoseal_1.0").name == "videoseal"


def test_card_of_an_unknown_family_names_the_supported_ones(tmp_path):
    card = tmp_path / "dino.yaml"
    card.write_text("args: {nbits: 32, img_size: 256}\nextractor: {model: dino2_vits14, params: {}}\n")
    with pytest.raises(UnsupportedModelError, match="unknown extractor model 'dino2_vits14'.*convnext, sam"):
        read_card(card)


@pytest.mark.parametrize("pad", [1, 2])
def test_reflection_pad_forms_agree(pad):
    from videoseal_litert.models.common import ReflectionPad2d

    x = torch.randn(2, 3, 6, 7)
    assert torch.equal(ReflectionPad2d(pad)(x), torch.nn.ReflectionPad2d(pad)(x))


def test_deploy_wrapper_equals_extractor(reference):
    from videoseal_litert.models.families import DeployExtractor

    loaded = load_extractor(resolve(str(reference / "videoseal_1.0-mini.yaml")))
    x = torch.from_numpy(np.load(reference / "videoseal_1.0-mini.npz")["images"])
    with torch.no_grad():
        ref = loaded.module(x)
        mask, bits = DeployExtractor(loaded.module)(x.permute(0, 2, 3, 1))
    torch.testing.assert_close(torch.cat([mask, bits], dim=1), ref, rtol=1e-5, atol=1e-6)


def test_folded_extractor_equals_official(reference):
    """LN affine folded into pwconv1 and GRN beta into pwconv2: same logits, fewer constants.

    The reference mini's norms may sit at their initial values (weight 1, bias 0, beta 0), where a
    fold would be trivially right, so every affine parameter is randomised first.
    """
    import copy

    from videoseal_litert.models.convnext import fold_for_deploy_
    from videoseal_litert.models.families import DeployExtractor

    loaded = load_extractor(resolve(str(reference / "videoseal_1.0-mini.yaml")))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in loaded.module.named_parameters():
            if name.endswith(("norm.weight", "norm.bias", "grn.gamma", "grn.beta")):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5 + (1.0 if name.endswith("norm.weight") else 0.0))
    x = torch.from_numpy(np.load(reference / "videoseal_1.0-mini.npz")["images"])
    folded = fold_for_deploy_(copy.deepcopy(loaded.module))
    n_before = sum(p.numel() for p in loaded.module.parameters())
    n_after = sum(p.numel() for p in folded.parameters())
    blocks = [b for s in loaded.module.convnext.stages for b in s]
    assert n_before - n_after == sum(2 * b.norm.weight.numel() + b.grn.beta.numel() for b in blocks)
    with torch.no_grad():
        ref = loaded.module(x)
        mask, bits = DeployExtractor(folded)(x.permute(0, 2, 3, 1))
    assert ref.abs().max() > 0.1, "randomised norms should move the logits"
    torch.testing.assert_close(torch.cat([mask, bits], dim=1), ref, rtol=1e-4, atol=1e-5)


def test_every_family_has_a_mini_that_goes_through_every_stage(reference):
    # tests/test_convert.py, test_quantize.py and test_sam.py run every stage on MINIS, and
    # test_embedders.py on EMBEDDER_MINIS (the tile embedder through the demo, on the registry's tiny
    # pair): a family registered in the seams' tables without a mini there would be untested.
    from videoseal_litert.models.catalog import embedder_families, families

    assert {read_card(reference / f"{m}.yaml").family for m in MINIS} == set(families())
    covered = {read_card(reference / f"{m}.yaml").embedder.family for m in EMBEDDER_MINIS} | {resolve("tiny").card.embedder.family}
    assert covered == set(embedder_families())


@pytest.mark.parametrize("mini", MINIS)
def test_deploy_form_reproduces_the_official_logits(mini, reference):
    import copy

    from videoseal_litert.models.families import DeployExtractor

    loaded = load_extractor(resolve(str(reference / f"{mini}.yaml")))
    data = np.load(reference / f"{mini}.npz")
    deploy = DeployExtractor(loaded.family.deploy_form(copy.deepcopy(loaded.module))).eval()
    with torch.no_grad():
        mask, bits = deploy(torch.from_numpy(data["images"]).permute(0, 2, 3, 1))
    assert np.abs(torch.cat([mask, bits], dim=1).numpy() - data["logits"]).max() <= 1e-5
