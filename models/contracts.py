"""A VideoSeal model has two parts, the extractor and the embedder, with the same shape for the pipeline.

Each part here is its I/O contract (names, shapes, dtypes, ranges, meanings), the module with
named inputs and outputs that every exported file holds, and fixed sample inputs for tracing (what a
converted file must meet against PyTorch is the rule of ``models/gate.py``). The stages (``convert/parts.py``) add what needs
the pipeline: loading, reference outputs, calibration and verification inputs, figures.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from videoseal_litert.core.logits import split_logits

EXTRACTOR = "extractor"
EMBEDDER = "embedder"
PART_NAMES = (EXTRACTOR, EMBEDDER)


@dataclass(frozen=True)
class Port:
    """One named input or output. ``dims`` holds numbers and the symbols ``S`` (the processing size),
    ``nbits`` and ``C`` (channels the family decides: the embedder's residual)."""

    name: str
    dims: tuple[int | str, ...]
    meaning: str
    kind: str = "image"  # image | bits | logits
    value_range: tuple[float, float] | None = None

    def shape(self, size: int, nbits: int, channels: int | None = None) -> list[int | None]:
        sym = {"S": size, "nbits": nbits, "C": channels}
        return [sym[d] if isinstance(d, str) else d for d in self.dims]

    def describe(self, size: int, nbits: int, channels: int | None = None) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "shape": self.shape(size, nbits, channels), "dtype": "float32", "meaning": self.meaning}
        if self.value_range is not None:
            d["range"] = list(self.value_range)
        return d


@dataclass(frozen=True)
class Contract:
    part: str
    inputs: tuple[Port, ...]
    outputs: tuple[Port, ...]

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.outputs)

    def describe(self, size: int, nbits: int, channels: int | None = None) -> dict[str, list[dict[str, Any]]]:
        return {
            "inputs": [p.describe(size, nbits, channels) for p in self.inputs],
            "outputs": [p.describe(size, nbits, channels) for p in self.outputs],
        }

    def sample_inputs(self, size: int, nbits: int, seed: int = 0) -> dict[str, torch.Tensor]:
        """Fixed inputs for tracing and export checks: images uniform in [0, 1], bits 0/1 as float."""
        g = torch.Generator().manual_seed(seed)
        out = {}
        for p in self.inputs:
            shape = p.shape(size, nbits)
            out[p.name] = torch.randint(0, 2, shape, generator=g).float() if p.kind == "bits" else torch.rand(*shape, generator=g)
        return out


IMAGE = Port("image", (1, "S", "S", 3), "RGB image, NHWC float32 in [0, 1] (bytes / 255) at the processing size", "image", (0.0, 1.0))

EXTRACTOR_CONTRACT = Contract(
    EXTRACTOR,
    inputs=(IMAGE,),
    outputs=(
        Port("mask_logit", (1, 1), "detection (mask) logit; the released checkpoints were trained with zero weight on it", "logits"),
        Port("bit_logits", (1, "nbits"), "one logit per message bit: bit = logit > 0, P(bit = 1) = sigmoid(logit)", "logits"),
    ),
)

EMBEDDER_CONTRACT = Contract(
    EMBEDDER,
    inputs=(IMAGE, Port("message", (1, "nbits"), "the message bits as float32 0.0 / 1.0", "bits", (0.0, 1.0))),
    outputs=(
        Port(
            "watermarked",
            (1, "S", "S", 3),
            "the watermarked image, NHWC float32 in [0, 1] (residual, attenuation, blend and clamp done in the graph)",
            "image",
            (0.0, 1.0),
        ),
        Port(
            "residual",
            (1, "S", "S", "C"),
            "the embedder network's raw output in (-1, 1), NHWC; only needed to embed into images of another size (route)",
        ),
    ),
)

CONTRACTS = {EXTRACTOR: EXTRACTOR_CONTRACT, EMBEDDER: EMBEDDER_CONTRACT}


class NamedExtractor(nn.Module):
    """A deploy-form extractor (``models.families.DeployExtractor``) with the contract's names."""

    def __init__(self, deploy: nn.Module) -> None:
        super().__init__()
        self.deploy = deploy

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        mask, bits = self.deploy(image)
        return dict(zip(EXTRACTOR_CONTRACT.output_names, (mask, bits), strict=True))


class NamedEmbedder(nn.Module):
    """A deploy-form embedder (``EmbedderFamily.deploy_form``) with the contract's names."""

    def __init__(self, deploy: nn.Module) -> None:
        super().__init__()
        self.deploy = deploy

    def forward(self, image: torch.Tensor, message: torch.Tensor) -> dict[str, torch.Tensor]:
        wm, res = self.deploy(image, message)
        return dict(zip(EMBEDDER_CONTRACT.output_names, (wm, res), strict=True))


# ---- units: a part as steps joined by named tensors (for converting and quantizing in pieces) ------


@dataclass
class Unit:
    """One step of a part: ``module(*tensors named inputs)`` returns the tensors named ``outputs`` (a
    tensor, or a tuple in that order). Names are the contract's for the part's own inputs and outputs,
    the family's for the tensors between units (a U-Net's skips are read by a unit far from the one
    that wrote them)."""

    module: nn.Module
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]

    def weight_bytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in self.module.parameters())


@dataclass
class UnitChain:
    """A part's units in order. ``nchw``: the tensor names whose PyTorch form is NCHW; a file holds
    every 4-D tensor NHWC, so a piece permutes those at its edges. ``activation_factor(unit)``: about
    how many times its outputs' bytes calibration keeps while running the unit."""

    units: list[Unit]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    nchw: frozenset[str]
    activation_factor: Any = None

    def factor(self, unit: Unit) -> int:
        return 4 if self.activation_factor is None else int(self.activation_factor(unit.module))


class _Prepare(nn.Module):
    """The extractor's preprocessing: images in [0, 1] -> ``x * 2 - 1``."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return image * 2.0 - 1.0


class _SplitLogits(nn.Module):
    """(1, 1 + nbits) -> the contract's two outputs."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return split_logits(x)


def extractor_chain(chain: list[nn.Module], chain_layout: str, activation_factor: Any = None) -> UnitChain:
    """The extractor as units from its family's chain (``Family.units``: the first takes ``x * 2 - 1``
    NCHW, the last returns the (1, 1 + nbits) logits, the others map a ``chain_layout`` tensor on)."""
    image = EXTRACTOR_CONTRACT.input_names[0]
    names = [f"x{k}" for k in range(len(chain))]
    units = [Unit(_Prepare(), (image,), (names[0],))]
    units += [Unit(m, (names[k],), (names[k + 1] if k + 1 < len(chain) else "logits",)) for k, m in enumerate(chain)]
    units.append(Unit(_SplitLogits(), ("logits",), EXTRACTOR_CONTRACT.output_names))
    nchw = {image, names[0]} | (set(names[1:]) if chain_layout == "NCHW" else set())
    return UnitChain(units, EXTRACTOR_CONTRACT.input_names, EXTRACTOR_CONTRACT.output_names, frozenset(nchw), activation_factor)
