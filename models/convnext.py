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

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from videoseal_litert.core.errors import CardError
from videoseal_litert.models.common import LayerNorm2d
from videoseal_litert.models.families import (
    Family,
    QuantPolicy,
    card_value,
    flag,
    known_keys,
    positive_int,
    register_family,
    registered_families,
)
from videoseal_litert.models.pixel_decoder import PixelDecoder, decoder_options


@dataclass(frozen=True)
class ConvnextConfig:
    """Architecture of one ConvNeXt extractor, as the official card builds it."""

    family: ClassVar[str] = "convnext"
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


class ConvnextExtractor(nn.Module):
    """Image in [0, 1], (B, 3, H, W) -> (B, 1 + nbits) logits; column 0 is the mask logit."""

    def __init__(self, cfg: ConvnextConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.convnext = ConvNeXtV2(cfg.depths, cfg.dims, cfg.stem_stride, cfg.stem_kernel)
        self.pixel_decoder = PixelDecoder(cfg.upscale_stages, cfg.embed_dim, cfg.nbits, cfg.upscale_type, cfg.sigmoid_output)

    def forward(self, imgs: torch.Tensor) -> torch.Tensor:
        return self.pixel_decoder(self.convnext(imgs * 2.0 - 1.0))


# ---- the family ------------------------------------------------------------------------------


# Keys of the official ConvNeXt cards' ``extractor.params`` and of ConvNeXtV2's constructor
# (``drop_path_rate`` and ``head_init_scale`` only matter in training; accepted, unused).
PARAMS_KEYS = {"encoder", "pixel_decoder", "proportional_dim"}
ENCODER_KEYS = {"depths", "dims", "stem_stride", "in_chans", "drop_path_rate", "head_init_scale"}


def _int_list(section: dict[str, Any], key: str, where: str) -> list[Any]:
    value = card_value(section, key, "extractor.params.encoder.")
    if not isinstance(value, list) or not value:
        raise CardError(f"{where}: extractor.params.encoder.{key} = {value!r} must be a non-empty list of positive integers")
    return value


@register_family
class ConvnextFamily(Family):
    """VideoSeal 1.0, PixelSeal, ChunkySeal and the project's tiny pair."""

    name = "convnext"
    model_prefixes = ("convnext",)
    chain_layout = "NCHW"
    quant = QuantPolicy(
        static=("CONV_2D", "FULLY_CONNECTED"),
        dynamic=("CONV_2D", "FULLY_CONNECTED"),
        weight_only=("DEPTHWISE_CONV_2D",),
        int4=("FULLY_CONNECTED",),
        why="XNNPACK has no INT8 kernel for the LayerNorm/GRN arithmetic (DIV, SQRT, RSQRT, SQUARED_DIFFERENCE) "
        "or GELU, and INT8 7x7 depthwise is slower than float on AVX2 without VNNI: the 1x1 convs (as "
        "FULLY_CONNECTED) and the strided convs run INT8, the rest float, in one XNNPACK partition. 4-bit: the "
        "pointwise layers (FULLY_CONNECTED, XNNPACK's blockwise/channelwise 4-bit GEMMs); XNNPACK does not take a "
        "4-bit CONV_2D (measured: left on the builtin kernels), so the strided convs keep 8 bits",
    )

    def parse_card(self, params: dict[str, Any], nbits: int, img_size: int, where: str) -> ConvnextConfig:
        """The official builder sets the pixel decoder's ``embed_dim`` to the encoder's last dim and its
        ``nbits`` to ``args.nbits``; the card's own values there are ignored, as they are upstream."""
        params = known_keys(params, PARAMS_KEYS, "extractor.params", where)
        enc = known_keys(card_value(params, "encoder", "extractor.params."), ENCODER_KEYS, "extractor.params.encoder", where)
        depths = tuple(positive_int(d, "extractor.params.encoder.depths") for d in _int_list(enc, "depths", where))
        dims = [positive_int(d, "extractor.params.encoder.dims") for d in _int_list(enc, "dims", where)]
        if len(depths) != len(dims):
            raise CardError(f"{where}: {len(depths)} depths but {len(dims)} dims")
        if int(enc.get("in_chans", 3)) != 3:
            raise CardError(f"{where}: extractor.params.encoder.in_chans must be 3 (RGB)")
        if flag(params.get("proportional_dim", False), "extractor.params.proportional_dim"):
            scale = math.sqrt(nbits / 128)
            dims = [int(d * scale) for d in dims]  # int() truncation, as upstream
            if min(dims) <= 0:
                raise CardError(f"{where}: proportional_dim with nbits {nbits} scales a dim to zero")
        _, dec = decoder_options(params.get("pixel_decoder"), where)
        return ConvnextConfig(
            nbits=nbits,
            depths=depths,
            dims=tuple(dims),
            stem_stride=positive_int(enc.get("stem_stride", 4), "extractor.params.encoder.stem_stride"),
            img_size=img_size,
            **dec,
        )

    def build(self, cfg: ConvnextConfig) -> ConvnextExtractor:
        return ConvnextExtractor(cfg)

    def deploy_form(self, module: ConvnextExtractor) -> ConvnextExtractor:
        return fold_for_deploy_(module)

    def units(self, module: ConvnextExtractor) -> list[nn.Module]:
        """Downsample layer, its stage's blocks, ..., pixel decoder."""
        out: list[nn.Module] = []
        for down, stage in zip(module.convnext.downsample_layers, module.convnext.stages, strict=True):
            out.append(down)
            out.extend(stage)
        out.append(module.pixel_decoder)
        return out

    def activation_factor(self, unit: nn.Module) -> int:
        # A ConvNeXt-V2 block holds about 25 times its output in intermediates (4x-wide pwconv1, GELU, GRN products).
        return 25 if isinstance(unit, Block) else 4

    def group(self, param_name: str) -> str:
        """stem + stage 0, stage 1..3 (each with its downsample layer), pixel_decoder."""
        parts = param_name.split(".")
        if parts[0] == "convnext" and parts[1] in ("downsample_layers", "stages"):
            i = int(parts[2])
            return "stem + stage 0" if i == 0 else f"stage {i}"
        return parts[0]

    def describe(self, cfg: ConvnextConfig) -> dict[str, Any]:
        return {"depths": list(cfg.depths), "dims": list(cfg.dims), "stem_stride": cfg.stem_stride}


FAMILY = registered_families()[ConvnextFamily.name]  # the instance its decorator registered
