"""Embedder families: the seam between watermark-embedder architectures and the pipeline.

An embedder family is one module with a ``FAMILY`` object (``models/unet.py`` for the official
U-Net embedders, ``models/tiny.py`` for the project's tile embedder) that owns:

- ``parse_card``: the card's ``embedder`` section and ``args`` into the family's config;
- ``build``: the embed path with the official top-level names (``embedder.``, and for the U-Net
  ``rgb2yuv.`` and ``attenuation.``), so official checkpoints load strictly. ``forward(imgs,
  msgs)`` takes images of any size in [0, 1] (B, 3, H, W) and 0/1 messages (B, nbits) and returns
  the watermarked images, as the official ``Videoseal.embed(..., is_video=False)``;
  ``residual(imgs, msgs)`` is the embedder's own output at the processing size;
- ``deploy_form``: the module to convert, with the part's I/O contract (``models/contracts.py``), each
  rewrite proved equal in float;
- ``quant``: which ops the quantized variants touch (the rest stays float, and why);
- ``route``: how an app embeds into an image of another size around the 256x256 file (the same
  steps as the official path; ``runtime/route.py`` implements it without torch);
- ``owns``: which checkpoint keys are the embedder's.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Protocol

import torch
from torch import nn

from videoseal_litert.models.contracts import UnitChain
from videoseal_litert.models.families import QuantPolicy, registrar


class EmbedderConfig(Protocol):
    family: ClassVar[str]
    nbits: int
    img_size: int
    scaling_w: float
    scaling_i: float


class EmbedderFamily(ABC):
    name: ClassVar[str]
    quant: ClassVar[QuantPolicy]
    # How the family's ``embedder.model`` names look, for messages ("unet*"): what ``accepts`` tests.
    model_pattern: ClassVar[str]

    @abstractmethod
    def accepts(self, model: str) -> bool:
        """True when this family builds the card's ``embedder.model``."""

    @abstractmethod
    def parse_card(self, model: str, section: dict, args: dict, nbits: int, img_size: int, where: str) -> EmbedderConfig: ...

    @abstractmethod
    def build(self, cfg: EmbedderConfig) -> nn.Module: ...

    @abstractmethod
    def deploy_form(self, module: nn.Module) -> nn.Module:
        """(image NHWC, message float) -> (watermarked NHWC, residual NHWC); may change ``module`` in place."""

    @abstractmethod
    def owns(self, key: str) -> bool:
        """True for a checkpoint key that belongs to this embedder."""

    def units(self, deploy: nn.Module) -> UnitChain | None:
        """The deploy form as units joined by named tensors, for converting a model too big for one
        file in pieces (``convert/split.py``); None: this family is not cut."""
        return None

    @abstractmethod
    def route(self, cfg: EmbedderConfig) -> dict[str, Any]:
        """The host-side steps for an image of another size (written into the bundle's manifest)."""

    @abstractmethod
    def describe(self, cfg: EmbedderConfig) -> dict[str, Any]: ...


def message_for(index: int, nbits: int, seed: int = 0) -> torch.Tensor:
    """The seeded random message (1, nbits) of 0/1 for the ``index``-th image of a set."""
    return torch.randint(0, 2, (1, nbits), generator=torch.Generator().manual_seed(seed * 1_000_003 + index))


_EMBEDDER_FAMILIES: dict[str, EmbedderFamily] = {}


register_embedder_family = registrar(_EMBEDDER_FAMILIES, "embedder family")  # the class decorator of models/families.py


def registered_embedder_families() -> dict[str, EmbedderFamily]:
    """The embedder families registered so far (``models.catalog.embedder_families()`` imports them all first)."""
    return dict(_EMBEDDER_FAMILIES)
