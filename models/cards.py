"""Read model cards in the official VideoSeal YAML format into an extractor and/or embedder architecture.

The same reader serves the registry's cards (``models/cards/*.yaml``) and a user's own card, so a
VideoSeal-family variant with other sizes or nbits converts without code changes. The common
``args`` are read here (``nbits``; the processing size from ``img_size_proc``,
``img_size_extractor`` or ``img_size``); ``extractor.model`` picks the family
(``models/families.py``), which parses ``extractor.params`` into its own config.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import yaml

from videoseal_litert.core.errors import CardError
from videoseal_litert.models.embedders import EmbedderConfig, embedder_family_for_model
from videoseal_litert.models.families import FamilyConfig, card_value, family_for_model, positive_int

log = logging.getLogger(__name__)

IMG_SIZE_KEYS = ("img_size_proc", "img_size_extractor", "img_size")


@dataclass(frozen=True)
class Card:
    """A parsed card: where it came from, what it builds, and where its checkpoint lives.

    A card has an ``extractor`` section, an ``embedder`` section, or both (an official
    checkpoint holds both parts); asking for a part the card lacks is a CardError naming it.
    """

    path: Path
    extractor_model: str | None
    extractor_config: FamilyConfig | None
    checkpoint_path: str | None
    embedder_model: str | None = None
    embedder_config: EmbedderConfig | None = None

    @property
    def config(self) -> FamilyConfig:
        """The extractor's config."""
        if self.extractor_config is None:
            raise CardError(f"card {self.path} has no 'extractor' section: it describes an embedder only (make embedder MODEL={self.path})")
        return self.extractor_config

    @property
    def embedder(self) -> EmbedderConfig:
        """The embedder's config."""
        if self.embedder_config is None:
            raise CardError(
                f"card {self.path} has no 'embedder' section: there is no embedder to convert (make convert converts its extractor)"
            )
        return self.embedder_config

    @property
    def has_embedder(self) -> bool:
        return self.embedder_config is not None

    @property
    def family(self) -> str:
        return self.config.family


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
    try:
        return _parse(path, raw)
    except CardError as e:
        if str(path) in str(e):
            raise
        raise CardError(f"card {path}: {e}") from e


def _parse(path: Path, raw: dict) -> Card:
    args = card_value(raw, "args", "")
    nbits = positive_int(card_value(args, "nbits", "args."), "args.nbits")
    img_size = positive_int(next((args[k] for k in IMG_SIZE_KEYS if k in args), 256), "args.img_size_*")
    if "extractor" not in raw and "embedder" not in raw:
        raise CardError("card has neither an 'extractor' nor an 'embedder' section")
    model, cfg = None, None
    if "extractor" in raw:
        extractor = card_value(raw, "extractor", "")
        model = str(card_value(extractor, "model", "extractor."))
        family = family_for_model(model, f"card {path}")
        cfg = family.parse_card(extractor.get("params") or {}, nbits, img_size, f"card {path}")
    emb_model, emb_cfg = None, None
    if "embedder" in raw:
        section = card_value(raw, "embedder", "")
        emb_model = str(card_value(section, "model", "embedder."))
        emb_cfg = embedder_family_for_model(emb_model, f"card {path}").parse_card(emb_model, section, args, nbits, img_size, f"card {path}")
    return Card(path, model, cfg, raw.get("checkpoint_path"), emb_model, emb_cfg)
