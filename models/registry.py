"""The registry of released models: one declarative spec per model, listed explicitly.

``resolve(name_or_card)`` returns a spec for a registry name or alias, or for the path of a
user's card YAML (its id is the file's stem). Unknown names fail with the known names and the
closest match.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from videoseal_litert.core.errors import UnknownModelError
from videoseal_litert.models.cards import Card, Verification, read_card
from videoseal_litert.models.catalog import CARDS_DIR  # the cards folder, named once
from videoseal_litert.models.contracts import EMBEDDER, EXTRACTOR

CHECKPOINTS_DIR = Path(__file__).resolve().parent / "checkpoints"
SHIPPED_DIR = Path(__file__).resolve().parent / "tiny"
# Written by `make train-fixture` (not committed: 133 MB).
FIXTURE_DIR = Path(__file__).resolve().parent.parent / "runs" / "fixture" / "export"


@dataclass(frozen=True)
class ModelSpec:
    """What the pipeline knows about one model, from its card and its release."""

    name: str
    card_path: Path
    aliases: tuple[str, ...] = ()
    checkpoint_file: str | None = None
    checkpoint_url: str | None = None
    # How to get the checkpoint when it is not downloaded (a model the project trains itself).
    checkpoint_hint: str | None = None
    # Where checkpoint_file is looked for when no CKPT is given (released ones: downloaded by the user).
    checkpoint_dir: Path = CHECKPOINTS_DIR
    description: str = ""
    # False for the project's own tiny pair: no official layout to check against, weights in the repo.
    released: bool = True
    input_layout: str = "NHWC"
    input_range: tuple[float, float] = (0.0, 1.0)
    # Floors (dB) over the card's and the variants table's, by part and variant: a spec may raise the rule's
    # floor for its files, never lower it (models/variants.rule_for, FloorError).
    floors: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    # Quantized variants `make quantize` (and `make embedder`) write by default, by part; a part not
    # named here gets every quantized variant of the table that applies to it. VARIANTS= overrides.
    variants: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # At full size a float image takes ~12 s through ChunkySeal on 2 cores: verification uses the
    # first view of this many held-out photos and calibration this many images (None: all).
    verify_images: int | None = None
    calibration_images: int | None = None

    @property
    def card(self) -> Card:
        return read_card(self.card_path)

    @property
    def verification(self) -> Verification:
        """The card's verification section with the spec's own floors over it."""
        v = self.card.verification
        if not self.floors:
            return v
        merged = {p: {**v.floors.get(p, {}), **self.floors.get(p, {})} for p in {*v.floors, *self.floors}}
        return dataclasses.replace(v, floors=merged)

    def default_checkpoint(self) -> Path:
        return self.checkpoint_dir / (self.checkpoint_file or f"{self.name}.pth")


REGISTRY: tuple[ModelSpec, ...] = (
    ModelSpec(
        name="videoseal",
        aliases=("videoseal_1.0", "videoseal-1.0"),
        card_path=CARDS_DIR / "videoseal.yaml",
        checkpoint_file="y_256b_img.pth",
        checkpoint_url="https://dl.fbaipublicfiles.com/videoseal/y_256b_img.pth",
        description="VideoSeal 1.0: ConvNeXt-Tiny extractor, 256 bits",
    ),
    ModelSpec(
        name="pixelseal",
        card_path=CARDS_DIR / "pixelseal.yaml",
        checkpoint_file="pixelseal_checkpoint.pth",
        checkpoint_url="https://dl.fbaipublicfiles.com/videoseal/pixelseal/checkpoint.pth",
        description="PixelSeal: ConvNeXt-Tiny extractor, 256 bits",
    ),
    ModelSpec(
        name="chunkyseal",
        card_path=CARDS_DIR / "chunkyseal.yaml",
        checkpoint_file="chunkyseal_checkpoint.pth",
        checkpoint_url="https://dl.fbaipublicfiles.com/videoseal/chunkyseal/checkpoint.pth",
        description="ChunkySeal: ConvNeXt-Chunky extractor, 1024 bits",
        verify_images=4,
        calibration_images=16,
        # INT8, FP16 and INT4 (the file under 0.15x FP32 a phone can hold) are the extractor's
        # deliverables at this size; int8-full, int8-dynamic and int4-mixed on request. The embedder
        # (4.1 GB of float weights) is converted and quantized in pieces joined by named tensors
        # (docs/large-models.md): FP16 and INT8 by default.
        variants={EXTRACTOR: ("int8", "fp16", "int4"), EMBEDDER: ("fp16", "int8")},
    ),
    ModelSpec(
        name="videoseal_0.0",
        aliases=("videoseal0.0", "videoseal-0.0"),
        card_path=CARDS_DIR / "videoseal_0.0.yaml",
        checkpoint_file="rgb_96b.pth",
        checkpoint_url="https://dl.fbaipublicfiles.com/videoseal/rgb_96b.pth",
        description="VideoSeal 0.0: SAM-style ViT-S extractor, 96 bits",
    ),
    ModelSpec(
        name="tiny",
        aliases=("default", "tiny-pair"),
        card_path=CARDS_DIR / "tiny.yaml",
        checkpoint_file="checkpoint.safetensors",
        checkpoint_dir=SHIPPED_DIR,
        description="the project's tiny watermark pair (trained on 2 CPU cores by demo/train_tiny.py): "
        "ConvNeXt-V2 extractor, 48 bits; a demo and test fixture, not a released VideoSeal model",
        released=False,
    ),
    ModelSpec(
        name="fixture",
        aliases=("videoseal-fixture",),
        card_path=CARDS_DIR / "fixture.yaml",
        checkpoint_file="checkpoint.safetensors",
        checkpoint_dir=FIXTURE_DIR,
        checkpoint_hint="train it on this machine with `make train-fixture` (at most 2 hours on 2 cores; resumable)",
        description="the project's released-size fixture (make train-fixture): the VideoSeal 1.0 card's ConvNeXt-Tiny "
        "extractor with 48 bits, trained on 2 CPU cores to read the tiny pair's watermark; the tiny embedder; not a released model",
        released=False,
    ),
)


def names() -> list[str]:
    return [s.name for s in REGISTRY]


def resolve(name_or_card: str) -> ModelSpec:
    """A registry spec by name or alias, or a spec for a card YAML path (id = file stem)."""
    key = name_or_card.strip()
    for spec in REGISTRY:
        if key == spec.name or key in spec.aliases:
            return spec
    path = Path(key)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        path = path.resolve()
        card = read_card(path)  # raises a named error for a bad or unsupported card
        url = card.checkpoint_path if card.checkpoint_path and "://" in str(card.checkpoint_path) else None
        local = Path(str(card.checkpoint_path)) if card.checkpoint_path and not url else None
        if local is not None and not local.is_absolute():
            local = path.parent / local
        return ModelSpec(
            name=path.stem,
            card_path=path,
            checkpoint_file=str(local) if local else None,
            checkpoint_url=url,
            # The card by file name and content, never by where it lay on the machine that built the files.
            description=f"user card {path.name} (sha256 {hashlib.sha256(path.read_bytes()).hexdigest()[:16]})",
        )
    known = [n for s in REGISTRY for n in (s.name, *s.aliases)]
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.4)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    raise UnknownModelError(f"unknown model '{key}'. Known models: {', '.join(names())}; or pass the path of a card YAML.{hint}")
