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
from videoseal_litert.models.catalog import embedder_family_for_model, family_for_model
from videoseal_litert.models.contracts import EMBEDDER, EXTRACTOR
from videoseal_litert.models.embedders import EmbedderConfig
from videoseal_litert.models.families import FamilyConfig, card_value, positive_int
from videoseal_litert.models.gate import CLEAR_FRACTION

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

# The video settings as the official loader reads them (videoseal/utils/cfg.py at 871eda0): ``args.videoseal_*``, or
# the older ``args.videowam_*`` names it maps onto them (PixelSeal's and ChunkySeal's official cards use those).
VIDEO_KEYS = {"step": ("videoseal_step_size", "videowam_step_size"), "chunk": ("videoseal_chunk_size", "videowam_chunk_size")}
# A card without them (the project's tiny pair, a user's card): VideoSeal 1.0's card values. The official loader
# would pass None and fail; a key frame every 4 frames is the released models' densest setting.
FALLBACK_VIDEO = {"step": 4, "chunk": 32}


@dataclass(frozen=True)
class VideoSettings:
    """How the official video route runs this model: the embedder on every ``step``-th frame (its residual reused
    until the next), ``chunk`` key frames per batch; ``source`` says which card keys gave them."""

    step: int = FALLBACK_VIDEO["step"]
    chunk: int = FALLBACK_VIDEO["chunk"]
    source: str = "the card names none: VideoSeal 1.0's card values (step 4, chunk 32)"

    def as_dict(self) -> dict[str, Any]:
        return {"step": self.step, "chunk": self.chunk, "source": self.source}


def parse_video(args: Mapping[str, Any], where: str) -> VideoSettings:
    """``args``' step and chunk under either name the official loader reads; CardError for a bad value or for both
    names given different values."""
    got: dict[str, int] = {}
    said: list[str] = []
    for what, (new, old) in VIDEO_KEYS.items():
        present = [k for k in (new, old) if args.get(k) is not None]
        values = {k: positive_int(args[k], f"args.{k}") for k in present}
        if len(set(values.values())) > 1:
            raise CardError(f"{where}: args.{new} ({values[new]}) and its older name args.{old} ({values[old]}) disagree")
        if present:
            got[what] = values[present[0]]
            said.append(f"args.{present[0]} {values[present[0]]}")
    if not got:
        return VideoSettings()
    missing = [w for w in VIDEO_KEYS if w not in got]
    older = " (older names, mapped by the official loader)" if any("videowam_" in x for x in said) else ""
    source = "card: " + ", ".join(said) + older + "".join(f"; {w} {FALLBACK_VIDEO[w]} (none in the card)" for w in missing)
    return VideoSettings(got.get("step", FALLBACK_VIDEO["step"]), got.get("chunk", FALLBACK_VIDEO["chunk"]), source)


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
    video: VideoSettings = VideoSettings()

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
    video = parse_video(args, f"card {path}")
    return Card(path, model, cfg, raw.get("checkpoint_path"), emb_model, emb_cfg, verification, video)
