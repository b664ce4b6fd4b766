"""The parts of a model by name, and the ones its card describes.

The seam is ``convert/part.py`` (``Part``, ``InputSet``, ``Reference``); the parts themselves are
``convert/extractor.py`` and ``convert/embedder.py``. The names are re-exported here, the one place the
stages import a part from.
"""

from __future__ import annotations

from videoseal_litert.convert.embedder import EmbedderPart
from videoseal_litert.convert.extractor import ExtractorPart
from videoseal_litert.convert.options import RunOptions
from videoseal_litert.convert.part import InputSet, Part, Reference, gate_line, gate_rows, nhwc, registered_parts
from videoseal_litert.core.errors import UsageError
from videoseal_litert.models.contracts import EMBEDDER, EXTRACTOR

__all__ = [
    "PARTS",
    "EmbedderPart",
    "ExtractorPart",
    "InputSet",
    "Part",
    "Reference",
    "gate_line",
    "gate_rows",
    "make_part",
    "nhwc",
    "parts_of",
]


# Both part modules are imported above, and each registered itself (``@register_part``): extractor first.
PARTS: dict[str, type[Part]] = {n: registered_parts()[n] for n in (EXTRACTOR, EMBEDDER)}


def make_part(opts: RunOptions, name: str) -> Part:
    """The ``name`` part of the model in ``opts``: UsageError for an unknown part, CardError when the card lacks it."""
    if name not in PARTS:
        raise UsageError(f"unknown part {name!r}; choose from {', '.join(PARTS)}")
    part = PARTS[name](opts)
    part.config  # noqa: B018 - CardError naming the missing section, before any work
    return part


def parts_of(opts: RunOptions) -> list[Part]:
    """Every part the model's card describes, extractor first."""
    card = opts.spec.card
    present = {EXTRACTOR: card.extractor_config is not None, EMBEDDER: card.has_embedder}
    return [PARTS[n](opts) for n in PARTS if present[n]]
