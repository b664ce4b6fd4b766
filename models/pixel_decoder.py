"""The official pixel decoder (``videoseal/modules/pixel_decoder.py``), shared by every extractor family.

Non-pixelwise only: upsample stages, global mean over H and W, Linear to ``1 + nbits`` logits
(column 0 is the detection "mask" logit). The released cards use one stage of scale 1.
"""

from __future__ import annotations

import torch
from torch import nn

from models.common import LayerNorm2d, ReflectionPad2d


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
