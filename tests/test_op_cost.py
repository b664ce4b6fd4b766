"""The op-cost tool's pieces (``quantize/op_cost.py``): which modules it removes, that removal keeps the
graph valid and leaves the model untouched, and which op types it proposes. The full measurement
(conversions and timings) is ``make op-cost``, not part of ``make test``."""

from __future__ import annotations

import torch
import yaml
from torch import nn

from videoseal_litert.convert.options import RunOptions
from videoseal_litert.convert.parts import make_part
from videoseal_litert.models.families import QuantPolicy
from videoseal_litert.models.registry import resolve
from videoseal_litert.quantize.op_cost import candidate_ops, group_kind, removable_groups, without


def test_group_kind_keeps_gemms_out():
    assert group_kind(nn.Conv2d(8, 8, 7, padding=3, groups=8)) == "depthwise conv"
    assert group_kind(nn.Conv2d(8, 16, 1)) is None  # a GEMM: changes channels, carries the FLOPs
    assert group_kind(nn.Conv2d(8, 8, 3, padding=1)) is None  # dense, same shape: still a GEMM
    assert group_kind(nn.Linear(8, 8)) is None
    assert group_kind(nn.Sequential(nn.GELU())) is None  # a container, not a leaf
    assert group_kind(nn.GELU()) == "GELU"


def test_removable_groups_of_the_tiny_extractor(tmp_path):
    part = make_part(RunOptions(spec=resolve("tiny"), out=tmp_path, random_init=True), "extractor")
    named = part.named(part.load())
    groups = removable_groups(named, part.sample_inputs())
    card = yaml.safe_load(resolve("tiny").card_path.read_text())
    # One depthwise 7x7 conv, one LayerNorm, one GRN per ConvNeXt block (the card's depths).
    n_blocks = sum(card["extractor"]["params"]["encoder"]["depths"])
    assert len(groups["depthwise conv"]) == n_blocks
    assert len(groups["GRN"]) == n_blocks
    assert len(groups["LayerNorm"]) == n_blocks
    assert not any("pwconv" in n for names in groups.values() for n in names)

    x = part.sample_inputs()
    with torch.no_grad():
        before = named(**x)
        stripped = without(named, groups["GELU"])
        got = stripped(**x)
        after = named(**x)
    assert not any(isinstance(m, nn.GELU) for m in stripped.modules())
    assert any(isinstance(m, nn.GELU) for m in named.modules())  # the original is untouched
    for k in before:
        assert got[k].shape == before[k].shape
        assert torch.equal(after[k], before[k])
    assert not torch.allclose(got["bit_logits"], before["bit_logits"])


def test_candidate_ops_are_compute_ops_the_policy_leaves_float(pipeline):
    from videoseal_litert.runtime.runners import open_runner

    fp32 = pipeline.converted("videoseal_1.0-mini") / "fp32.tflite"
    policy = QuantPolicy(static=("CONV_2D", "FULLY_CONNECTED"), dynamic=())
    ops = candidate_ops(fp32, policy, open_runner)
    assert "DEPTHWISE_CONV_2D" in ops and "GELU" in ops
    assert not {"CONV_2D", "FULLY_CONNECTED", "DELEGATE", "RESHAPE", "TRANSPOSE", "INPUT", "OUTPUT"} & set(ops)
