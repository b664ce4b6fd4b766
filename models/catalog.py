"""Every model family, found by name: the extractor families (``models/families.py``) and the embedder families
(``models/embedders.py``), each registered by a decorator on its class when its module is imported, as timm's models
are. This module imports every family module (a new family is one module with the decorator and one import line
here) and answers which family builds a card's model; the cards' folder gives the names to suggest.
"""

from __future__ import annotations

import difflib
from pathlib import Path

from videoseal_litert.core.errors import UnsupportedModelError
from videoseal_litert.models import convnext, sam, tiny, unet  # noqa: F401 - importing a family module registers it
from videoseal_litert.models.embedders import EmbedderConfig, EmbedderFamily, registered_embedder_families
from videoseal_litert.models.families import Family, FamilyConfig, registered_families

CARDS_DIR = Path(__file__).resolve().parent / "cards"  # the registry's cards (models/registry.py)


def families() -> dict[str, Family]:
    """Every extractor family, by name (in name order, whatever order their modules were imported in)."""
    return dict(sorted(registered_families().items()))


def family_for_model(model: str, where: str) -> Family:
    """The family that builds an official ``extractor.model`` name; UnsupportedModelError otherwise."""
    for fam in families().values():
        if fam.accepts(model):
            return fam
    known = [p for f in families().values() for p in f.model_prefixes]
    close = difflib.get_close_matches(model, known, n=1, cutoff=0.4)
    hint = f" Did you mean '{close[0]}...'?" if close else ""
    raise UnsupportedModelError(f"{where}: unknown extractor model '{model}'; supported: names starting with {', '.join(known)}.{hint}")


def family_of(cfg: FamilyConfig) -> Family:
    return families()[cfg.family]


def embedder_families() -> dict[str, EmbedderFamily]:
    """Every embedder family, by name (in name order)."""
    return dict(sorted(registered_embedder_families().items()))


def registered_embedder_models() -> list[str]:
    """The ``embedder.model`` names of the registry's cards (read as YAML, not parsed: a name to suggest)."""
    import yaml

    names = set()
    for path in sorted(CARDS_DIR.glob("*.yaml")):
        section = (yaml.safe_load(path.read_text()) or {}).get("embedder") or {}
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
