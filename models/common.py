"""Building blocks shared by the extractor families (official ``videoseal/modules/common.py``).

Each converter-friendly form is written once here, with the official formula beside it for the
tests that prove the two equal in float.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LayerNorm2d(nn.Module):
    """Channels-first LayerNorm (biased variance, eps inside the sqrt), official ``LayerNorm(data_format="channels_first")``.

    Written as permute -> F.layer_norm -> permute rather than the official hand-written
    mean/var formula: the converter keeps one LayerNorm pattern and drops a transpose pair;
    the two are equal in float (tests/test_models.py::test_layernorm_forms_agree).
    """

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.eps = eps
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, (self.dim,), self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


def layer_norm_2d_official(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """The official channels-first LayerNorm formula, kept as the reference for tests."""
    u = x.mean(1, keepdim=True)
    s = (x - u).pow(2).mean(1, keepdim=True)
    x = (x - u) / torch.sqrt(s + eps)
    return weight[:, None, None] * x + bias[:, None, None]


class ReflectionPad2d(nn.Module):
    """Reflection padding written as slices and concatenation, equal to ``nn.ReflectionPad2d``.

    The converter lowers ``nn.ReflectionPad2d`` to MIRROR_PAD, which XNNPACK does not take (it
    splits the graph); SLICE and CONCATENATION stay on the fast path
    (tests/test_models.py::test_reflection_pad_forms_agree).
    """

    def __init__(self, pad: int) -> None:
        super().__init__()
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.pad
        x = torch.cat([x[:, :, p - i : p - i + 1] for i in range(p)] + [x] + [x[:, :, -2 - i : -1 - i] for i in range(p)], dim=2)
        return torch.cat([x[..., p - i : p - i + 1] for i in range(p)] + [x] + [x[..., -2 - i : -1 - i] for i in range(p)], dim=3)
