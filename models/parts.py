"""A VideoSeal model has two parts, the extractor and the embedder, with the same shape for the pipeline.

Each part here is its I/O contract (names, shapes, dtypes, ranges, meanings), the module with
named inputs and outputs that every exported file holds, fixed sample inputs for tracing, and the
floors a converted file must meet against PyTorch. The stages (``convert/parts.py``) add what needs
the pipeline: loading, reference outputs, calibration and verification inputs, figures.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

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


# ---- floors: what a converted file must meet against PyTorch -----------------------------------------


@dataclass(frozen=True)
class ExtractorFloors:
    """Accuracy floors of one extractor file against PyTorch on held-out images."""

    max_abs_logit_diff: float | None = None
    min_mask_agreement: float = 1.0
    min_bit_agreement: float = 1.0
    min_sqnr_db: float | None = None


@dataclass(frozen=True)
class EmbedderFloors:
    """Floors of one embedder file against PyTorch on held-out photos with seeded messages."""

    max_abs_pixel_diff: float | None = None
    min_psnr_vs_pytorch_db: float | None = None
    min_decode_agreement: float = 1.0


Floors = ExtractorFloors | EmbedderFloors
FLOORS_TYPE = {EXTRACTOR: ExtractorFloors, EMBEDDER: EmbedderFloors}
