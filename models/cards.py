"""Read model cards in the official VideoSeal YAML format into an extractor and/or embedder architecture.

The same reader serves the registry's cards (``models/cards/*.yaml``) and a user's own card, so a
VideoSeal-family variant with other sizes or nbits converts without code changes. The common
``args`` are read here (``nbits``; the processing size from ``img_size_proc``,
``img_size_extractor`` or ``img_size``); ``extractor.model`` picks the family
(``models/families.py``), which parses ``extractor.params`` into its own config.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from videoseal_litert.core.errors import CardError
from videoseal_litert.models.embedders import EmbedderConfig, embedder_family_for_model
from videoseal_litert.models.families import FamilyConfig, card_value, family_for_model, positive_int
from videoseal_litert.models.gate import CLEAR_FRACTION
from videoseal_litert.models.parts import EMBEDDER, EXTRACTOR

log = logging.getLogger(__name__)

IMG_SIZE_KEYS = ("img_size_proc", "img_size_extractor", "img_size")


@dataclass(frozen=True)
class Verification:
    """The card's ``verification`` section (this project's; the official loader ignores keys it does not
    read): how the one rule (``models/gate.py``) judges this model's files. A card may raise a floor or
    lower the clear fraction, never the reverse (``models/variants.rule_for``)."""

    # False: the checkpoint's mask head was not trained (the released VideoSeal checkpoints trained it
    # with zero weight): detection is reported, not gated, and judged through the message bits.
    mask_trained: bool = True
    floors: Mapping[str, Mapping[str, float]] = field(default_factory=dict)  # part -> variant -> dB
    clear_fraction: float = CLEAR_FRACTION


VERIFICATION_KEYS = ("mask_trained", "floors", "clear_fraction")


def parse_verification(raw: Any, where: str) -> Verification:
    """The ``verification`` section, each key checked; CardError naming a bad one."""
    if raw is None:
        return Verification()
    if not isinstance(raw, dict):
        raise CardError(f"{where}: 'verification' must be a mapping of {', '.join(VERIFICATION_KEYS)}")
    unknown = sorted(set(raw) - set(VERIFICATION_KEYS))
    if unknown:
        raise CardError(f"{where}: unknown key(s) {', '.join(unknown)} under 'verification'; known: {', '.join(VERIFICATION_KEYS)}")
    mask = raw.get("mask_trained", True)
    if not isinstance(mask, bool):
        raise CardError(f"{where}: verification.mask_trained must be true or false, not {mask!r}")
    floors: dict[str, dict[str, float]] = {}
    for part, per in (raw.get("floors") or {}).items():
        if part not in (EXTRACTOR, EMBEDDER) or not isinstance(per, dict):
            raise CardError(f"{where}: verification.floors.{part}: expected '{EXTRACTOR}' or '{EMBEDDER}' mapping variant names to dB")
        for v, db in per.items():
            if isinstance(db, bool) or not isinstance(db, (int, float)):
                raise CardError(f"{where}: verification.floors.{part}.{v} must be a number of dB, not {db!r}")
        floors[part] = {str(v): float(db) for v, db in per.items()}
    frac = raw.get("clear_fraction", CLEAR_FRACTION)
    if isinstance(frac, bool) or not isinstance(frac, (int, float)) or not 0 < frac <= 1:
        raise CardError(f"{where}: verification.clear_fraction must be a number in (0, 1], not {frac!r}")
    return Verification(mask, floors, float(frac))


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
    verification: Verification = Verification()

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
    verification = parse_verification(raw.get("verification"), f"card {path}")
    return Card(path, model, cfg, raw.get("checkpoint_path"), emb_model, emb_cfg, verification)
