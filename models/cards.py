"""Read model cards in the official VideoSeal YAML format into an extractor architecture.

The same reader serves the registry's cards (``models/cards/*.yaml``) and a user's own card, so a
VideoSeal-family variant with other depths, dims or nbits converts without code changes.
The official builder (``videoseal/models/builder.py``) sets the pixel decoder's ``embed_dim`` to
the encoder's last dim and its ``nbits`` to ``args.nbits``; the card's own values there are
ignored, as they are upstream.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from models.convnext import ExtractorConfig
from models.errors import CardError, UnsupportedModelError

log = logging.getLogger(__name__)

CONVNEXT_FAMILY = ("convnext_tiny", "convnext_chunky", "convnext")
LATER_FAMILIES = {"sam_small": "VideoSeal 0.0 (SAM-style ViT)", "sam_base": "SAM-style ViT", "sam_tiny": "SAM-style ViT"}


@dataclass(frozen=True)
class Card:
    """A parsed card: where it came from, what it builds, and where its checkpoint lives."""

    path: Path
    extractor_model: str
    config: ExtractorConfig
    checkpoint_path: str | None


def _get(d: dict[str, Any], key: str, where: str) -> Any:
    if not isinstance(d, dict) or key not in d:
        raise CardError(f"card is missing '{where}{key}'")
    return d[key]


def read_card(path: str | Path) -> Card:
    """Parse an official-format card; raise CardError or UnsupportedModelError by name."""
    path = Path(path)
    if not path.is_file():
        raise CardError(f"card file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise CardError(f"card {path} is not valid YAML: {e}") from e
    if not isinstance(raw, dict):
        raise CardError(f"card {path} is not a mapping")
    args = _get(raw, "args", "")
    nbits = int(_get(args, "nbits", "args."))
    img_size = int(args.get("img_size_proc", args.get("img_size_extractor", args.get("img_size", 256))))
    extractor = _get(raw, "extractor", "")
    model = str(_get(extractor, "model", "extractor."))
    if model in LATER_FAMILIES:
        raise UnsupportedModelError(
            f"card {path}: extractor '{model}' ({LATER_FAMILIES[model]}) is not supported yet; "
            f"this pipeline converts the ConvNeXt family ({', '.join(CONVNEXT_FAMILY[:2])})"
        )
    if model not in CONVNEXT_FAMILY:
        raise UnsupportedModelError(f"card {path}: unknown extractor model '{model}'; supported: {', '.join(CONVNEXT_FAMILY)}")
    params = extractor.get("params") or {}
    enc = _get(params, "encoder", "extractor.params.")
    depths = tuple(int(d) for d in _get(enc, "depths", "extractor.params.encoder."))
    dims = [int(d) for d in _get(enc, "dims", "extractor.params.encoder.")]
    if len(depths) != len(dims):
        raise CardError(f"card {path}: {len(depths)} depths but {len(dims)} dims")
    if params.get("proportional_dim", False):
        scale = math.sqrt(nbits / 128)
        dims = [int(d * scale) for d in dims]  # int() truncation, as upstream
    dec = params.get("pixel_decoder") or {}
    if dec.get("pixelwise", False):
        raise UnsupportedModelError(
            f"card {path}: pixelwise pixel decoders are not supported (the extractor must pool to 1 + nbits logits)"
        )
    cfg = ExtractorConfig(
        nbits=nbits,
        depths=depths,
        dims=tuple(dims),
        stem_stride=int(enc.get("stem_stride", 4)),
        upscale_stages=tuple(int(s) for s in dec.get("upscale_stages", [1])),
        upscale_type=str(dec.get("upscale_type", "bilinear")),
        sigmoid_output=bool(dec.get("sigmoid_output", False)),
        img_size=img_size,
    )
    return Card(path=path, extractor_model=model, config=cfg, checkpoint_path=raw.get("checkpoint_path"))
