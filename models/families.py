"""Extractor families: the one seam between architecture-specific code and the pipeline's stages.

A family is one module (``models/convnext.py``, ``models/sam.py``) with a ``FAMILY`` object that
owns everything that depends on the architecture:

- ``parse_card``: the official card's ``extractor.params`` into the family's config;
- ``build``: the extractor, with the official module and parameter names (official state dicts
  load strictly without renaming); it maps images in [0, 1], NCHW, to ``(B, 1 + nbits)`` logits;
- ``deploy_form``: folds and converter-friendly rewrites for export, each proved equal in float;
- ``units``, ``chain_layout``, ``activation_factor``: the extractor as a chain of units, for
  quantizing a model over 2 GB in parts;
- ``quant``: which ops the quantized variants touch, and why;
- ``group`` and ``describe``: parameter grouping for ``inspect`` and the summary for ``model.json``.

Every stage goes through this interface and the part's I/O contract (``models/contracts.py``), which is
the same for every family. Adding a family is one module whose class carries ``@register_family``, imported by
``models/catalog.py``, plus the registry lines.
"""

from __future__ import annotations

import difflib
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, TypeVar

import torch
from torch import nn

from videoseal_litert.core.errors import CardError
from videoseal_litert.core.logits import split_logits

# ---- what every exported extractor holds (names: models/contracts.py) --------------------------------


class DeployExtractor(nn.Module):
    """What goes into every exported file: NHWC float input in [0, 1], two outputs (mask, bits).

    NHWC is what an Android bitmap gives; the permute to the extractor's NCHW is in the graph, and
    so is each family's ``x * 2 - 1`` preprocessing, so the host only scales bytes to [0, 1].
    """

    def __init__(self, extractor: nn.Module) -> None:
        super().__init__()
        self.extractor = extractor

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return split_logits(self.extractor(image.permute(0, 3, 1, 2)))


# ---- the family interface ---------------------------------------------------------------------------


class FamilyConfig(Protocol):
    """What every family's config has; the rest is the family's own."""

    family: ClassVar[str]
    nbits: int
    img_size: int


@dataclass(frozen=True)
class QuantPolicy:
    """TFLite ops a family's quantized variants touch (ai-edge-quantizer op names); the rest stays float.

    ``static``: integer weights and calibrated integer activations (``int8``; the ops the accuracy-
    driven fallback may return to float). ``dynamic``: dynamic-range quantization (``int8-dynamic``).
    ``weight_only``: integer weights, float compute, in both. ``int4``: 4-bit weights (``int4``,
    ``int4-mixed``). Which recipe uses which list is the
    variants table's business (``models/variants.py``); ``int8-full`` quantizes every op.
    """

    static: tuple[str, ...]
    dynamic: tuple[str, ...]
    weight_only: tuple[str, ...] = ()
    why: str = ""
    # 4-bit weights with dynamic int8 activations (``int4``, ``int4-mixed``): the ops whose 4-bit
    # kernels XNNPACK runs; the rest of ``dynamic`` gets 8-bit weights in those files.
    int4: tuple[str, ...] = ()


class Family(ABC):
    """One extractor architecture family (see the module docstring)."""

    name: ClassVar[str]
    # Official ``extractor.model`` names start with one of these (the official builder tests prefixes).
    model_prefixes: ClassVar[tuple[str, ...]]
    # Layout of the tensors between units: "NCHW" (feature maps) or "NHWC" (token grids).
    chain_layout: ClassVar[str] = "NCHW"
    quant: ClassVar[QuantPolicy]

    def accepts(self, model: str) -> bool:
        return model.startswith(self.model_prefixes)

    @abstractmethod
    def parse_card(self, params: dict[str, Any], nbits: int, img_size: int, where: str) -> FamilyConfig:
        """The card's ``extractor.params`` into this family's config; CardError on a bad value."""

    @abstractmethod
    def build(self, cfg: FamilyConfig) -> nn.Module:
        """The extractor with official names: images in [0, 1] (B, 3, H, W) -> (B, 1 + nbits)."""

    def deploy_form(self, module: nn.Module) -> nn.Module:
        """The module to export: folds and rewrites, equal in float, in place. Default: unchanged."""
        return module

    @abstractmethod
    def units(self, module: nn.Module) -> list[nn.Module]:
        """The deploy-form extractor as a chain: the first unit takes ``x * 2 - 1`` (NCHW), the last
        returns the logits, each other unit maps a ``chain_layout`` tensor to the next."""

    def activation_factor(self, unit: nn.Module) -> int:
        """Calibration keeps a unit's intermediates: about this many times its output's bytes."""
        return 4

    @abstractmethod
    def group(self, param_name: str) -> str:
        """The part of the network a parameter belongs to, for ``inspect``."""

    @abstractmethod
    def describe(self, cfg: FamilyConfig) -> dict[str, Any]:
        """Architecture summary for ``model.json``."""


_FAMILIES: dict[str, Family] = {}
_F = TypeVar("_F", bound=type)


def registrar(table: dict[str, Any], kind: str) -> Callable[[_F], _F]:
    """A class decorator (as timm's ``register_model``) that puts the class's one instance in ``table`` under its
    ``name``; a second class of the same name is refused. A family module registers itself; ``models/catalog.py``
    imports every family module and looks them up."""

    def register(cls: _F) -> _F:
        if cls.name in table:
            raise ValueError(f"{kind} {cls.name!r} registered twice")
        table[cls.name] = cls()
        return cls

    return register


register_family = registrar(_FAMILIES, "extractor family")


def registered_families() -> dict[str, Family]:
    """The extractor families registered so far, by name (``models.catalog.families()`` imports them all first)."""
    return dict(_FAMILIES)


def card_value(d: Any, key: str, where: str) -> Any:
    """``d[key]``, or CardError naming the missing key."""
    if not isinstance(d, dict) or key not in d:
        raise CardError(f"card is missing '{where}{key}'")
    return d[key]


def known_keys(section: Any, known: set[str], what: str, where: str) -> dict[str, Any]:
    """``section`` as a mapping whose keys are all in ``known``, or CardError naming the others (a typo is not ignored)."""
    if section is None:
        return {}
    if not isinstance(section, dict):
        raise CardError(f"{where}: {what} must be a mapping, got {type(section).__name__} {section!r}")
    unknown = sorted(map(str, set(section) - known))
    if unknown:
        hints = [f"{k} -> {m[0]}" for k in unknown if (m := difflib.get_close_matches(k, sorted(known), n=1, cutoff=0.6))]
        raise CardError(
            f"{where}: unknown {what} key(s) {unknown}; known: {sorted(known)}" + (f" (did you mean {', '.join(hints)}?)" if hints else "")
        )
    return section


def flag(value: Any, what: str) -> bool:
    """A card's true/false value; a string such as "false" is refused rather than read as True."""
    if not isinstance(value, bool):
        raise CardError(f"card value {what} = {value!r} must be true or false")
    return value


def positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool):
        raise CardError(f"card value {what} = {value!r} is not an integer")
    try:
        v = int(value)
    except (TypeError, ValueError) as e:
        raise CardError(f"card value {what} = {value!r} is not an integer") from e
    if v <= 0 or v != value:
        raise CardError(f"card value {what} = {value!r} must be a positive integer")
    return v
