"""The official pixel decoder (``videoseal/modules/pixel_decoder.py``), shared by every extractor family.

Non-pixelwise only: upsample stages, global mean over H and W, Linear to ``1 + nbits`` logits
(column 0 is the detection "mask" logit). The released cards use one stage of scale 1.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from videoseal_litert.core.errors import CardError, UnsupportedModelError
from videoseal_litert.models.common import LayerNorm2d, ReflectionPad2d
from videoseal_litert.models.families import flag, known_keys, positive_int

# Keys of the official cards' ``extractor.params.pixel_decoder`` (``embed_dim`` and ``nbits`` are
# overwritten by the builder, as upstream).
DECODER_KEYS = {"pixelwise", "upscale_stages", "embed_dim", "nbits", "sigmoid_output", "upscale_type"}
UPSCALE_TYPES = ("bilinear", "nearest", "bicubic")


def decoder_options(section: Any, where: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The card's pixel-decoder section, checked: (the raw section, config fields upscale_stages, upscale_type, sigmoid_output)."""
    dec = known_keys(section, DECODER_KEYS, "extractor.params.pixel_decoder", where)
    what = "extractor.params.pixel_decoder."
    if flag(dec.get("pixelwise", False), what + "pixelwise"):
        raise UnsupportedModelError(f"{where}: pixelwise pixel decoders are not supported (the extractor must pool to 1 + nbits logits)")
    stages = dec.get("upscale_stages", [1])
    if not isinstance(stages, list) or not stages:
        raise CardError(f"{where}: {what}upscale_stages = {stages!r} must be a non-empty list of positive integers")
    upscale_type = dec.get("upscale_type", "bilinear")
    if upscale_type not in UPSCALE_TYPES:
        raise CardError(f"{where}: {what}upscale_type = {upscale_type!r} must be one of {', '.join(UPSCALE_TYPES)}")
    for key in ("embed_dim", "nbits"):
        if key in dec:
            positive_int(dec[key], what + key)
    return dec, {
        "upscale_stages": tuple(positive_int(s, what + "upscale_stages") for s in stages),
        "upscale_type": upscale_type,
        "sigmoid_output": flag(dec.get("sigmoid_output", False), what + "sigmoid_output"),
    }


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
