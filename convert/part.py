"""What every part of a model (extractor, embedder) is for the stages: the ``Part`` seam and what it hands back.

A part answers the same questions for every stage (``convert/stages.py``, ``quantize/quantize_stage.py``,
``package/bundle.py``): its files' names, its loaded PyTorch module and description, the module with
named inputs and outputs to export, its PyTorch reference as a runner, the inputs it is verified and
calibrated on, and the figures that compare a file's outputs with the reference, with the verdict of
the one rule (``models/gate.py``). The two parts: ``convert/extractor.py`` and ``convert/embedder.py``;
``convert/parts.py`` lists them. Nothing in the stages branches on which part it is.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
import torch
from torch import nn

from videoseal_litert.calibration_data.build import (
    Item,
    Tally,
    calibration_items,
    heldout_items,
)
from videoseal_litert.convert.load import Loaded
from videoseal_litert.convert.options import RunOptions
from videoseal_litert.core.artifacts import collect_if_large
from videoseal_litert.core.console import progress
from videoseal_litert.core.errors import ImageError
from videoseal_litert.models.contracts import (
    Contract,
    UnitChain,
)
from videoseal_litert.models.embedders import EmbedderConfig
from videoseal_litert.models.families import FamilyConfig, QuantPolicy
from videoseal_litert.models.gate import Rule
from videoseal_litert.runtime.runners import TorchRunner, run_all

log = logging.getLogger(__name__)


def nhwc(pixels: np.ndarray) -> np.ndarray:
    """(1, 3, H, W) -> (1, H, W, 3), contiguous float32."""
    return np.ascontiguousarray(pixels.transpose(0, 2, 3, 1), dtype=np.float32)


@dataclass
class InputSet:
    """Named inputs (batch of one each) and where each came from; ``tally`` names every rejected file."""

    names: list[str]
    inputs: list[dict[str, np.ndarray]]
    tally: Tally
    fingerprint: list[str]  # "<name>:<sha256 of its pixels>", for stage records


@dataclass
class Reference:
    """The PyTorch reference's outputs on an input set, computed once (the module is freed after)."""

    outputs: dict[str, np.ndarray]
    random_init: bool
    extras: dict[str, Any] = field(default_factory=dict)


class PartFamily(Protocol):
    """What the stages ask of a part's family, extractor (``models/families.Family``) or embedder
    (``models/embedders.EmbedderFamily``)."""

    name: ClassVar[str]
    quant: ClassVar[QuantPolicy]

    def build(self, cfg: Any) -> nn.Module: ...

    def deploy_form(self, module: nn.Module) -> nn.Module: ...


class Part(ABC):
    """One part of one model, for one run of a stage."""

    name: str
    contract: Contract
    prefix: str  # of its file names: "<prefix><variant>.tflite", "verify-<prefix><variant>.json"
    description_file: str  # written by its load stage
    program_file: str  # torch.export program
    onnx_file: str
    summary_keys: tuple[str, ...]  # the figures of a verification report that quantize.json repeats

    def __init__(self, opts: RunOptions) -> None:
        self.opts = opts

    def sibling(self, name: str) -> Part:
        """The same model's ``name`` part for the same run (the embedder reads the extractor to decode; the extractor
        has the embedder watermark its calibration and verification images)."""
        return _PARTS[name](self.opts)

    # ---- files: the one place a part's file names are made (class methods: ``PARTS[name].file(v)`` needs no run) ----

    @classmethod
    def file(cls, variant: str) -> str:
        """The name of the part's ``variant`` file: ``<prefix><variant>.tflite``."""
        return f"{cls.prefix}{variant}.tflite"

    @classmethod
    def variant_of(cls, file_name: str) -> str | None:
        """The variant a file name of this part names (None: not one of its names)."""
        stem = file_name.removesuffix(".tflite")
        if not file_name.endswith(".tflite") or not stem.startswith(cls.prefix):
            return None
        return stem.removeprefix(cls.prefix)

    @classmethod
    def report(cls, variant: str) -> str:
        """Stem of a file's verification report (also its stage record's name)."""
        return f"verify-{cls.prefix}{variant}"

    def record(self, stage: str) -> str:
        """A stage's record name for this part (``records/<name>.json``)."""
        return f"{self.prefix}{stage}"

    @abstractmethod
    def make_target(self, variant: str) -> str:
        """The make command that writes this part's ``variant`` file."""

    # ---- the PyTorch side ---------------------------------------------------------------------

    @property
    @abstractmethod
    def config(self) -> FamilyConfig | EmbedderConfig:
        """The card's config of this part; CardError when the card has no such section."""

    @property
    @abstractmethod
    def family(self) -> PartFamily:
        """The family that builds this part (``models/families.py`` or ``models/embedders.py``)."""

    @property
    def size(self) -> int:
        return int(self.config.img_size)

    @property
    def nbits(self) -> int:
        return int(self.config.nbits)

    @abstractmethod
    def load(self, **kwargs: Any) -> Loaded: ...

    @abstractmethod
    def named(self, loaded: Loaded) -> nn.Module:
        """The deploy form with the contract's names (what export and the converter take); may change ``loaded.module`` in place."""

    # Float weight bytes of the pieces this part is cut into when it is converted or quantized in
    # pieces (``convert/split.py``).
    piece_bytes: int = 1_000_000_000

    # Float weight bytes above which the tflite stage converts this part in pieces (None: never; the
    # extractor's single lightweight conversion stays within 8 GB at ChunkySeal size).
    pieces_above_bytes: int | None = None

    def in_pieces(self, opts: RunOptions) -> bool:
        """True when the tflite stage converts this part in pieces: over its threshold, or asked (``max_part_bytes``)."""
        if self.pieces_above_bytes is None:
            return False
        return opts.max_part_bytes is not None or self.float_bytes() > self.pieces_above_bytes

    @abstractmethod
    def units(self, loaded: Loaded) -> UnitChain:
        """The deploy form as units joined by named tensors (changes ``loaded.module`` in place);
        UsageError when the family cannot be cut."""

    # The outputs verification compares with the reference (the embedder's residual is only the route's input).
    checked_outputs: tuple[str, ...]

    @abstractmethod
    def torch_runner(self, loaded: Loaded, outputs: tuple[str, ...] | None = None) -> TorchRunner:
        """The official module behind the contract's names (``outputs`` of them, default all): the
        reference every file is compared with."""

    @abstractmethod
    def describe(self, loaded: Loaded) -> dict[str, Any]:
        """The part's description (``description_file``)."""

    def float_bytes(self) -> int:
        """Bytes of the part's float32 weights, counted on the meta device (nothing allocated)."""
        with torch.device("meta"):
            module = self.family.build(self.config)
        return sum(p.numel() * 4 for p in module.parameters())

    def sample_inputs(self) -> dict[str, torch.Tensor]:
        return self.contract.sample_inputs(self.size, self.nbits)

    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        return {p.name: tuple(p.shape(self.size, self.nbits)) for p in self.contract.inputs}  # type: ignore[arg-type]

    # ---- inputs -------------------------------------------------------------------------------

    def heldout(self) -> tuple[list[Item], Tally]:
        """Held-out 256x256 items (never calibration photos), or the user's IMAGES directory; at most
        the spec's ``verify_images`` for the built-in set (first views first)."""
        tally = Tally()
        items = list(heldout_items(self.opts.images, self.size, tally))
        if not items:
            raise ImageError(f"no readable image in {self.opts.images}: every file was rejected ({_rejected(tally)})")
        n = self.opts.spec.verify_images
        if n is not None and self.opts.images is None and n < len(items):
            full = [i for i in items if i.name.endswith(":full")]
            items = (full + [i for i in items if not i.name.endswith(":full")])[:n]
        return items, tally

    def calibration_items(self, calib_dir: Path | None, tally: Tally, limit: int | None = None) -> Iterator[Item]:
        stream: Iterator[Item] = calibration_items(calib_dir, self.size, tally)
        limit = limit or self.opts.spec.calibration_images
        return islice(stream, limit) if limit is not None else stream

    @abstractmethod
    def verification_set(self) -> InputSet: ...

    @abstractmethod
    def calibration_inputs(self, calib_dir: Path | None, tally: Tally, limit: int | None = None) -> Iterator[dict[str, np.ndarray]]:
        """Named calibration inputs, streamed (the calibration photos, plus CALIB=dir)."""

    # ---- verification -------------------------------------------------------------------------

    def reference(self, inputs: InputSet) -> Reference:
        """The PyTorch reference on ``inputs``; its module is freed before any file is loaded (at
        ChunkySeal size the two together would need over 8 GB)."""
        loaded = self.load()
        runner = self.torch_runner(loaded, self.checked_outputs)
        out = run_all(runner, progress(inputs.inputs, desc="PyTorch reference", unit="inputs"), self.checked_outputs)
        ref = Reference(out, loaded.random_init, self._reference_extras(loaded))
        nbytes = sum(p.numel() * p.element_size() for p in loaded.module.parameters())
        del loaded
        collect_if_large(nbytes)
        return ref

    def _reference_extras(self, loaded: Loaded) -> dict[str, Any]:
        return {}

    @abstractmethod
    def figures(self, inputs: InputSet, ref: Reference, got: dict[str, np.ndarray], rule: Rule) -> dict[str, Any]:
        """What the report says of a file's outputs ``got`` against the reference, with the verdict of the
        one rule (``models/gate.py``): ``gate`` (every group), ``failures`` (the gated groups') and ``notes``
        (what the reported groups found)."""

    @abstractmethod
    def groups_of(self, name: str) -> set[str]:
        """The rule's groups (``models/gate.py``) the input named ``name`` takes part in."""

    def extra_checks(self, variant: str, path: Path, ref: Reference, rule: Rule) -> dict[str, Any]:
        """Checks of a file beyond its outputs on the input set (the embedder's route), by the same rule:
        {name: {..., "passed", "failures"}}."""
        return {}

    @staticmethod
    @abstractmethod
    def table(r: dict[str, Any]) -> list[tuple[str, str, str]]:
        """(figure, measured, rule) rows of a verification report."""

    @staticmethod
    @abstractmethod
    def one_line(r: dict[str, Any]) -> str:
        """A verification report in one line, for summary tables."""


_PARTS: dict[str, type[Part]] = {}


def register_part(cls: type[Part]) -> type[Part]:
    """Class decorator: a part's class, registered under its ``name`` (``convert/parts.py`` imports every part module,
    so a part finds another by name, :meth:`Part.sibling`, without the two modules importing each other)."""
    _PARTS[cls.name] = cls
    return cls


def registered_parts() -> dict[str, type[Part]]:
    return dict(_PARTS)


def untrained(loaded: Loaded, opts: RunOptions) -> Loaded:
    """A checkpoint declared untrained (UNTRAINED=1) carries the random-weight label like RANDOM_INIT's."""
    if opts.untrained and not loaded.random_init:
        log.warning("%s %s: the checkpoint's weights are declared UNTRAINED (random), not a trained model", loaded.spec.name, loaded.part)
        loaded.random_init = True
    return loaded


def flipped_bits(names: list[str], rows: np.ndarray, ref: np.ndarray, got: np.ndarray, most: int = 50) -> list[dict[str, Any]]:
    """Bits of ``rows`` whose sign differs from the reference's, smallest reference margin first (at most ``most``)."""
    idx = np.flatnonzero(rows)
    flips = [
        {"image": names[idx[r]], "bit": int(b), "reference": float(ref[idx[r], b]), "quantized": float(got[idx[r], b])}
        for r, b in zip(*np.nonzero((got[idx] > 0) != (ref[idx] > 0)), strict=True)
    ]
    return sorted(flips, key=lambda f: abs(f["reference"]))[:most]


def _rejected(tally: Tally) -> str:
    return "; ".join(f"{f}: {w}" for f, w in tally.rejected) or "none found"


def input_set(items: list[Item], tally: Tally, make: Any) -> InputSet:
    """An InputSet of ``items``, each input ``make(item)``."""
    return InputSet([i.name for i in items], [make(i) for i in items], tally, [f"{i.name}:{i.sha256}" for i in items])


def _snr(g: dict[str, Any]) -> str:
    return "exact" if g["snr_db"] is None else f"{g['snr_db']:.1f} dB"


def gate_rows(gate: dict[str, Any]) -> list[tuple[str, str, str]]:
    """A verdict of ``models/gate.py`` as (figure, measured, rule) rows: one per group."""
    rows = []
    for name, g in gate["groups"].items():
        floor = f"SNR >= {g['floor_db']:g} dB" if g["floor_db"] is not None else "SNR reported"
        if g["clear_threshold"] is None:  # no decisions: the watermark's pixels
            measured, rule = f"SNR {_snr(g)} (watermark RMS {g['signal_rms']:.3g}, error RMS {g['noise_rms']:.3g})", floor
        else:
            measured = (
                f"SNR {_snr(g)}; {g['clear_flips']} of {g['clear_decisions']} clear and {g['near_flips']} of "
                f"{g['decisions'] - g['clear_decisions']} near decisions flipped (clear: |PyTorch| > {g['clear_threshold']:.3g})"
            )
            rule = f"{floor}; no clear flip; <= {g['near_flips_allowed']} near flips"
        verdict = ("pass" if g["passed"] else "FAIL") if g["gated"] else ("reported" + ("" if g["passed"] else ": would fail"))
        rows.append((f"{name} ({verdict})", measured, rule))
    return rows


def gate_line(gate: dict[str, Any]) -> str:
    """A verdict in a few words, for summary tables: the lowest gated SNR, the flips, any failing group."""
    groups = list(gate["groups"].values())
    gated = [g for g in groups if g["gated"] and g["floor_db"] is not None]
    snrs = [g["snr_db"] for g in gated if g["snr_db"] is not None]
    worst = min(gated, key=lambda g: g["snr_db"] if g["snr_db"] is not None else float("inf"), default=None)
    snr = "exact" if worst is None or not snrs else f"SNR >= {min(snrs):.1f} dB (floor {worst['floor_db']:g})"
    clear = sum(g["clear_flips"] for g in groups if g["gated"])
    near = sum(g["near_flips"] for g in groups if g["gated"])
    text = f"{snr} in {len(groups)} groups, flips {clear} clear / {near} near"
    failing = [g["group"] for g in groups if g["gated"] and not g["passed"]]
    return text + (f"; FAILING {', '.join(failing)}" if failing else "")
