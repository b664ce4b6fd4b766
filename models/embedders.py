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

import difflib
from abc import ABC, abstractmethod
from typing import Any, ClassVar, Protocol

import torch
from torch import nn

from videoseal_litert.core.errors import UnsupportedModelError
from videoseal_litert.models.contracts import UnitChain
from videoseal_litert.models.families import QuantPolicy


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


def embedder_families() -> dict[str, EmbedderFamily]:
    from videoseal_litert.models.tiny import FAMILY as TILE
    from videoseal_litert.models.unet import FAMILY as UNET

    return {f.name: f for f in (UNET, TILE)}


def registered_embedder_models() -> list[str]:
    """The ``embedder.model`` names of the registry's cards (read as YAML, not parsed: a name to suggest)."""
    import yaml

    from videoseal_litert.models.registry import REGISTRY

    names = set()
    for spec in REGISTRY:
        section = (yaml.safe_load(spec.card_path.read_text()) or {}).get("embedder") or {}
        if isinstance(section, dict) and isinstance(section.get("model"), str):
            names.add(section["model"])
    return sorted(names)


def embedder_family_for_model(model: str, where: str) -> EmbedderFamily:
    """The family that builds a card's ``embedder.model``; UnsupportedModelError naming the families' patterns
    and the closest model name among the registry's cards."""
    for fam in embedder_families().values():
        if fam.accepts(model):
            return fam
    known = [f.model_pattern for f in embedder_families().values()]
    close = difflib.get_close_matches(model, registered_embedder_models(), n=1, cutoff=0.5)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    raise UnsupportedModelError(f"{where}: unknown embedder model '{model}'; supported: {', '.join(known)}.{hint}")


def embedder_family_of(cfg: EmbedderConfig) -> EmbedderFamily:
    return embedder_families()[cfg.family]
