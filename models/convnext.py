"""ConvNeXt-V2 watermark extractor of the VideoSeal family.

Paper: Fernandez et al., "Video Seal: Open and Efficient Video Watermarking" (2024), and
Woo et al., "ConvNeXt V2: Co-designing and Scaling ConvNets with Masked Autoencoders" (CVPR 2023).
Official code: github.com/facebookresearch/videoseal (``videoseal/modules/convnext.py``,
``videoseal/modules/pixel_decoder.py``, ``videoseal/models/extractor.py``).

Module and parameter names follow the official code, so an official state dict (prefix
``detector.`` stripped) loads strictly without renaming. The VideoSeal variant of ConvNeXt-V2
has no layer scale, no final norm and no classification head; the extractor ends in a pixel
decoder that pools globally and maps to ``1 + nbits`` logits.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class ExtractorConfig:
    """Architecture of one ConvNeXt extractor, as the official card builds it."""

    nbits: int
    depths: tuple[int, ...]
    dims: tuple[int, ...]
    stem_stride: int = 4
    stem_kernel: int = 4
    upscale_stages: tuple[int, ...] = (1,)
    upscale_type: str = "bilinear"
    sigmoid_output: bool = False
    img_size: int = 256

    @property
    def embed_dim(self) -> int:
        return self.dims[-1]


class LayerNorm2d(nn.Module):
    """Channels-first LayerNorm (biased variance, eps inside the sqrt), as in ConvNeXt-V2.

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


class GRN(nn.Module):
    """Global Response Normalization over channels-last input (N, H, W, C).

    The L2 norm over H and W is written ``sqrt(sum(x*x))`` instead of ``torch.norm``: the same
    value in float, and it lowers to MUL/SUM/SQRT instead of ABS/POW ops
    (tests/test_models.py::test_grn_forms_agree).
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1, 1, 1, dim))
        self.beta = nn.Parameter(torch.zeros(1, 1, 1, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gx = torch.sqrt(torch.sum(x * x, dim=(1, 2), keepdim=True))
        nx = gx / (gx.mean(dim=-1, keepdim=True) + 1e-6)
        # gamma * (x * nx) + x == x * (gamma * nx + 1): the (1, 1, 1, C) factor is computed once and
        # the full-resolution tensor sees one MUL instead of MUL, MUL, ADD.
        y = x * (self.gamma * nx + 1.0)
        return y if self.beta is None else y + self.beta


def grn_official(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """The official GRN formula, kept as the reference for tests."""
    gx = torch.norm(x, p=2, dim=(1, 2), keepdim=True)
    nx = gx / (gx.mean(dim=-1, keepdim=True) + 1e-6)
    return gamma * (x * nx) + beta + x


class Block(nn.Module):
    """ConvNeXt-V2 block: dwconv 7x7 -> LN -> Linear 4x -> GELU -> GRN -> Linear, residual."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.grn = GRN(4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.dwconv(x).permute(0, 2, 3, 1)
        x = self.pwconv2(self.grn(self.act(self.pwconv1(self.norm(x)))))
        return shortcut + x.permute(0, 3, 1, 2)


@torch.no_grad()
def fold_for_deploy_(extractor: ConvnextExtractor) -> ConvnextExtractor:
    """Fold each block's LayerNorm affine into ``pwconv1`` and GRN's beta into ``pwconv2``, in place.

    ``pwconv1(n * g + b) = (W diag(g)) n + (W b + c)`` and ``pwconv2(y + beta) = W2 y + (W2 beta + c2)``:
    the same function with two fewer constant tensors and elementwise ops per block (0.16 MB and
    about 6,600 x 2 ADD/MUL channels on VideoSeal 1.0). In place, so a 3 GB model is not copied;
    the result is only for export (tests/test_models.py::test_folded_extractor_equals_official).
    """
    for stage in extractor.convnext.stages:
        for block in stage:
            if block.norm.weight is None:
                continue
            g, b = block.norm.weight, block.norm.bias
            w1 = block.pwconv1.weight
            block.pwconv1.bias += w1 @ b
            w1 *= g[None, :]
            block.norm = nn.LayerNorm(block.norm.normalized_shape, eps=block.norm.eps, elementwise_affine=False)
            block.pwconv2.bias += block.pwconv2.weight @ block.grn.beta.flatten()
            del block.grn.beta
            block.grn.register_parameter("beta", None)
    return extractor


class ConvNeXtV2(nn.Module):
    """ConvNeXt-V2 encoder without final norm or head (VideoSeal's variant)."""

    def __init__(
        self, depths: tuple[int, ...], dims: tuple[int, ...], stem_stride: int = 4, stem_kernel: int = 4, in_chans: int = 3
    ) -> None:
        super().__init__()
        self.depths = list(depths)
        stem = nn.Sequential(nn.Conv2d(in_chans, dims[0], kernel_size=stem_kernel, stride=stem_stride), LayerNorm2d(dims[0]))
        self.downsample_layers = nn.ModuleList([stem])
        for i in range(len(dims) - 1):
            self.downsample_layers.append(nn.Sequential(LayerNorm2d(dims[i]), nn.Conv2d(dims[i], dims[i + 1], 2, stride=2)))
        self.stages = nn.ModuleList(nn.Sequential(*[Block(dims[i]) for _ in range(depths[i])]) for i in range(len(dims)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for down, stage in zip(self.downsample_layers, self.stages, strict=True):
            x = stage(down(x))
        return x


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


class Upsample(nn.Module):
    """Official upsample block: resize, reflection pad 1, 3x3 conv (no bias), LN, GELU."""

    def __init__(self, upscale_type: str, channels: int, factor: int) -> None:
        super().__init__()
        resize: nn.Module = nn.Identity() if factor == 1 else nn.Upsample(scale_factor=factor, mode=upscale_type)
        self.upsample_block = nn.Sequential(
            resize,  # a scale of 1 is an exact identity; nn.Identity keeps it out of the graph
            ReflectionPad2d(1),
            nn.Conv2d(channels, channels, kernel_size=3, padding=0, bias=False),
            LayerNorm2d(channels),
            nn.GELU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.upsample_block(x)


class PixelDecoder(nn.Module):
    """Official pixel decoder, non-pixelwise: upsample stages, global mean, Linear to 1 + nbits."""

    def __init__(self, upscale_stages: tuple[int, ...], embed_dim: int, nbits: int, upscale_type: str, sigmoid_output: bool) -> None:
        super().__init__()
        self.output_upscaling = nn.Sequential(*[Upsample(upscale_type, embed_dim, s) for s in upscale_stages])
        self.linear = nn.Linear(embed_dim, nbits + 1)
        self.sigmoid_output = sigmoid_output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.output_upscaling(x).mean(dim=(-2, -1))
        x = self.linear(x)
        return torch.sigmoid(x) if self.sigmoid_output else x


class ConvnextExtractor(nn.Module):
    """Image in [0, 1], (B, 3, H, W) -> (B, 1 + nbits) logits; column 0 is the mask logit."""

    def __init__(self, cfg: ExtractorConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.convnext = ConvNeXtV2(cfg.depths, cfg.dims, cfg.stem_stride, cfg.stem_kernel)
        self.pixel_decoder = PixelDecoder(cfg.upscale_stages, cfg.embed_dim, cfg.nbits, cfg.upscale_type, cfg.sigmoid_output)

    def forward(self, imgs: torch.Tensor) -> torch.Tensor:
        return self.pixel_decoder(self.convnext(imgs * 2.0 - 1.0))


class DeployExtractor(nn.Module):
    """What goes into the ``.tflite``: NHWC float input in [0, 1], two outputs (mask, bits).

    NHWC is what an Android bitmap gives; the permute to the extractor's NCHW is in the graph,
    and so is the ``x * 2 - 1`` preprocessing, so the host only scales bytes to [0, 1].
    """

    def __init__(self, extractor: ConvnextExtractor) -> None:
        super().__init__()
        self.extractor = extractor

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.extractor(image.permute(0, 3, 1, 2))
        return logits[:, :1], logits[:, 1:]
