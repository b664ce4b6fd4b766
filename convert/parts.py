"""The two parts of a model, extractor and embedder, on one seam: what every stage asks of a part.

Each stage (``convert/stages.py``, ``quantize/stage.py``, ``package/bundle.py``) takes a part and
asks it for the same things: its files' names, its loaded PyTorch module and description, the
module with named inputs and outputs to export, its PyTorch reference as a runner, the inputs it is
verified and calibrated on, the figures that compare a file's outputs with the reference, and which
with the verdict of the one rule (``models/gate.py``). Nothing in the stages branches on which part it is.

Watermarked inputs come from the model's embedder part, for any family that has one and whose
weights are there: the extractor is calibrated and verified on clean photos and on the same photos
watermarked with seeded messages (bits are compared where a message was embedded).
"""

from __future__ import annotations

import gc
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
import torch
from torch import nn

from videoseal_litert.calibration_data.build import (
    HELDOUT_VIEWS,
    Item,
    Tally,
    calibration_items,
    heldout_items,
    is_watermarked,
    split_items,
    watermarked_items,
)
from videoseal_litert.convert.load import Loaded, checkpoint_keys, load_embedder, load_extractor
from videoseal_litert.convert.options import RunOptions
from videoseal_litert.core.artifacts import sha256_file, tool_versions
from videoseal_litert.core.console import progress
from videoseal_litert.core.errors import ImageError, UsageError
from videoseal_litert.core.logits import split_logits
from videoseal_litert.core.metrics import psnr_db, sqnr_db
from videoseal_litert.models.embedders import EmbedderConfig, EmbedderFamily, embedder_family_of, message_for
from videoseal_litert.models.families import DeployExtractor, Family, FamilyConfig, QuantPolicy, family_of
from videoseal_litert.models.gate import Band, judge, judge_noise
from videoseal_litert.models.parts import (
    EMBEDDER,
    EMBEDDER_CONTRACT,
    EXTRACTOR,
    EXTRACTOR_CONTRACT,
    Contract,
    NamedEmbedder,
    NamedExtractor,
    UnitChain,
    extractor_chain,
)
from videoseal_litert.runtime.route import embed as route_embed
from videoseal_litert.runtime.runners import Runner, TorchRunner, run_all

log = logging.getLogger(__name__)

# Seeds of the messages each use of the embedder draws (``message_for(index, nbits, seed)``).
WATERMARK_SEED = 0  # the extractor's watermarked calibration and verification images
VALIDATION_MESSAGE_SEED = 5  # the embedder's validation inputs (accuracy control)
VERIFY_MESSAGE_SEED = 7  # the embedder's verification messages
CALIBRATION_MESSAGE_SEED = 8  # the embedder's calibration messages
ROUTE_TOLERANCE = 1e-4
KEEP_DECODER_BYTES = 1_000_000_000  # an embedder's decoder (its model's extractor) above this is loaded per use  # the odd-size route (host resize + JND + blend around the fp32 file) vs PyTorch


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

    # ---- files --------------------------------------------------------------------------------

    def file(self, variant: str) -> str:
        return f"{self.prefix}{variant}.tflite"

    def report(self, variant: str) -> str:
        """Stem of a file's verification report (also its stage record's name)."""
        return f"verify-{self.prefix}{variant}"

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
        out = run_all(runner, progress(inputs.inputs, desc="PyTorch reference"), self.checked_outputs)
        ref = Reference(out, loaded.random_init, self._reference_extras(loaded))
        del loaded
        gc.collect()
        return ref

    def _reference_extras(self, loaded: Loaded) -> dict[str, Any]:
        return {}

    @abstractmethod
    def figures(self, inputs: InputSet, ref: Reference, got: dict[str, np.ndarray], band: Band) -> dict[str, Any]:
        """What the report says of a file's outputs ``got`` against the reference, with the verdict of the
        one rule (``models/gate.py``) under ``band``: ``gate`` (per kind of output) and ``failures``."""

    def extra_checks(self, variant: str, path: Path, ref: Reference) -> dict[str, Any]:
        """Checks of a file beyond its outputs on the input set (the embedder's route): {name: {..., "passed"}}."""
        return {}

    @staticmethod
    @abstractmethod
    def table(r: dict[str, Any]) -> list[tuple[str, str, str]]:
        """(figure, measured, rule) rows of a verification report."""

    @staticmethod
    @abstractmethod
    def one_line(r: dict[str, Any]) -> str:
        """A verification report in one line, for summary tables."""


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


def gate_rows(name: str, g: dict[str, Any]) -> list[tuple[str, str, str]]:
    """A verdict of ``models/gate.py`` as (figure, measured, rule) rows."""
    snr = "exact (no error)" if g["snr_db"] is None else f"{g['snr_db']:.2f} dB"
    rows = [
        (
            f"{name}: watermark SNR (signal RMS {g['signal_rms']:.3g}, noise RMS {g['noise_rms']:.3g})",
            snr,
            f">= {g['min_snr_db']:g} dB" if g["noise_gated"] else f"reported (band capped at noise {g['noise_cap_rms']:.3g})",
        ),
    ]
    if g["flips_judged"]:
        rows += [
            (f"{name}: clear-margin flips (outside the noise band)", str(g["clear_flips"]), "0"),
            (
                f"{name}: flips in the noise band",
                f"{g['flips_in_band']} of {g['outputs_in_band']} in band ({g['outputs_judged']} judged)",
                f"<= {g['flips_in_band_allowed']}",
            ),
        ]
    return rows


def gate_line(g: dict[str, Any]) -> str:
    """A verdict in a few words, for summary tables."""
    snr = "exact" if g["snr_db"] is None else f"SNR {g['snr_db']:.1f} dB"
    band = f" (band {g['min_snr_db']:g})" if g["noise_gated"] else ""
    flips = f", {g['clear_flips']} clear flips, {g['flips_in_band']}/{g['outputs_in_band']} in band" if g["flips_judged"] else ""
    return f"{snr}{band}{flips}"


# ---- the extractor --------------------------------------------------------------------------------


class ExtractorPart(Part):
    name = EXTRACTOR
    contract = EXTRACTOR_CONTRACT
    prefix = ""
    description_file = "model.json"
    program_file = "extractor.pt2"
    onnx_file = "model.onnx"
    summary_keys = ("max_abs_logit_diff", "mask_agreement", "bit_agreement", "sqnr_db", "gate")

    def __init__(self, opts: RunOptions) -> None:
        super().__init__(opts)
        self._watermark: Callable[[np.ndarray, int], np.ndarray] | None | bool = False  # False: not looked for yet

    def make_target(self, variant: str) -> str:
        return "convert" if variant == "fp32" else "quantize"

    @property
    def config(self) -> FamilyConfig:
        return self.opts.spec.card.config

    def units(self, loaded: Loaded) -> UnitChain:
        fam = loaded.family
        return extractor_chain(fam.units(fam.deploy_form(loaded.module)), fam.chain_layout, fam.activation_factor)

    @property
    def family(self) -> Family:
        return family_of(self.config)

    def load(self, allow_zero_weights: bool | None = None, allow_nonfinite_weights: bool | None = None) -> Loaded:
        o = self.opts
        zero = o.allow_zero_weights if allow_zero_weights is None else allow_zero_weights
        nonfinite = o.allow_nonfinite_weights if allow_nonfinite_weights is None else allow_nonfinite_weights
        return untrained(load_extractor(o.spec, o.ckpt, o.random_init, zero, nonfinite), o)

    def named(self, loaded: Loaded) -> nn.Module:
        return NamedExtractor(DeployExtractor(loaded.family.deploy_form(loaded.module))).eval()

    checked_outputs = EXTRACTOR_CONTRACT.output_names

    def torch_runner(self, loaded: Loaded, outputs: tuple[str, ...] | None = None) -> TorchRunner:
        module = loaded.module.eval()  # one pass gives both logits: ``outputs`` changes nothing

        def fn(image: torch.Tensor) -> dict[str, torch.Tensor]:
            mask, bits = split_logits(module(image.permute(0, 3, 1, 2)))
            return {"mask_logit": mask, "bit_logits": bits}

        return TorchRunner(fn, self.input_shapes(), f"PyTorch {loaded.spec.name} extractor")

    def describe(self, loaded: Loaded) -> dict[str, Any]:
        cfg, spec = loaded.config, loaded.spec
        contract = self.contract.describe(cfg.img_size, cfg.nbits)
        image = contract["inputs"][0]
        return {
            "model_id": spec.name,
            "part": self.name,
            "description": spec.description,
            "card": {"file": spec.card_path.name, "sha256": sha256_file(spec.card_path)},
            "nbits": cfg.nbits,
            "architecture": {"family": loaded.family.name, **loaded.family.describe(cfg)},
            "num_params": sum(p.numel() for p in loaded.module.parameters()),
            "input": {
                **image,
                "layout": spec.input_layout,
                "channel_order": "RGB",
                "preprocessing_in_graph": "x * 2 - 1",
                "resize_rule": f"resize any other size to {cfg.img_size}x{cfg.img_size}: bilinear, align_corners=False, antialias=True, "
                "aspect ratio not kept (official detect())",
            },
            "outputs": [{**o, "index": i} for i, o in enumerate(contract["outputs"])],
            "checkpoint": Path(loaded.checkpoint_path).name if loaded.checkpoint_path else None,
            "checkpoint_sha256": loaded.checkpoint_sha256,
            "random_init": loaded.random_init,
            "tool_versions": tool_versions(),
        }

    # ---- inputs -------------------------------------------------------------------------------

    def watermarker(self) -> Callable[[np.ndarray, int], np.ndarray] | None:
        """``(pixels (1, 3, S, S), index) -> watermarked pixels`` by the model's embedder with the index's
        seeded message, when the card has an embedder and the checkpoint holds its weights; else None."""
        if self._watermark is False:
            self._watermark = None
            if not self.opts.random_init and self.opts.spec.card.has_embedder:
                ckpt = self.opts.checkpoint_path()
                embedder = EmbedderPart(self.opts)
                if ckpt is not None and ckpt.is_file() and embedder.weights_in(ckpt):
                    runner = embedder.torch_runner(embedder.load(), ("watermarked",))
                    nbits = embedder.nbits

                    def mark(pixels: np.ndarray, index: int) -> np.ndarray:
                        m = message_for(index, nbits, WATERMARK_SEED).float().numpy()
                        return runner({"image": nhwc(pixels), "message": m})["watermarked"].transpose(0, 3, 1, 2)

                    self._watermark = mark
                else:
                    log.info("the card has an embedder but %s holds no embedder weights: clean photos only", ckpt)
        return self._watermark  # type: ignore[return-value]

    def with_watermarks(self, items: Any) -> Any:
        fn = self.watermarker()
        if fn is None:
            return items
        return list(watermarked_items(items, fn)) if isinstance(items, list) else watermarked_items(items, fn)

    def verification_set(self) -> InputSet:
        items, tally = self.heldout()
        items = self.with_watermarks(items)
        return InputSet([i.name for i in items], [{"image": nhwc(i.pixels)} for i in items], tally, [f"{i.name}:{i.sha256}" for i in items])

    def calibration_inputs(self, calib_dir: Path | None, tally: Tally, limit: int | None = None) -> Iterator[dict[str, np.ndarray]]:
        return ({"image": nhwc(i.pixels)} for i in self.with_watermarks(self.calibration_items(calib_dir, tally, limit)))

    def validation_set(self) -> InputSet:
        """The photo pool's validation split (three views each, watermarked twins when the model has an
        embedder): what the accuracy control chooses on; at most the spec's ``verify_images`` items."""
        tally = Tally()
        items = list(islice(split_items("validation", self.size, tally, HELDOUT_VIEWS), self.opts.spec.verify_images))
        items = self.with_watermarks(items)
        return InputSet([i.name for i in items], [{"image": nhwc(i.pixels)} for i in items], tally, [f"{i.name}:{i.sha256}" for i in items])

    # ---- verification -------------------------------------------------------------------------

    def figures(self, inputs: InputSet, ref: Reference, got: dict[str, np.ndarray], band: Band) -> dict[str, Any]:
        r = np.concatenate([ref.outputs["mask_logit"], ref.outputs["bit_logits"]], axis=1)
        g = np.concatenate([got["mask_logit"], got["bit_logits"]], axis=1)
        diff = np.abs(r - g)
        # Bits, and the SQNR of the logits, where a message was embedded (every row without an embedder):
        # an unwatermarked image's bit logits are noise around zero. The mask is judged on every row.
        marked = np.array([is_watermarked(n) for n in inputs.names])
        rows = marked if marked.any() else np.ones(len(inputs.names), dtype=bool)
        judged = np.zeros(r.shape, dtype=bool)
        judged[:, 0] = True
        judged[rows, 1:] = True
        verdict = judge(r, g, judged, band, inputs.names, lambda j: "mask" if j == 0 else f"bit {j - 1}", "logits")
        return {
            "max_abs_logit_diff": float(diff.max()),
            "max_abs_mask_diff": float(diff[:, 0].max()),
            "max_abs_bit_diff": float(diff[:, 1:].max()),
            "mask_agreement": float(np.mean((r[:, 0] > 0) == (g[:, 0] > 0))),
            "bit_agreement": float(np.mean((r[rows, 1:] > 0) == (g[rows, 1:] > 0))),
            "sqnr_db": verdict.as_dict()["snr_db"],
            "mask_sqnr_db": sqnr_db(r[:, 0], g[:, 0]),
            "bit_sqnr_db": sqnr_db(r[rows, 1:], g[rows, 1:]),
            "bit_rows": "watermarked images" if not rows.all() else "all images",
            "bit_agreement_unwatermarked": float(np.mean((r[~rows, 1:] > 0) == (g[~rows, 1:] > 0))) if (~rows).any() else None,
            "flipped_bits": flipped_bits(inputs.names, rows, r[:, 1:], g[:, 1:]),
            "gate": {"logits": verdict.as_dict()},
            "failures": verdict.failures,
        }

    @staticmethod
    def table(r: dict[str, Any]) -> list[tuple[str, str, str]]:
        rows = gate_rows("logits", r["gate"]["logits"]) + [
            ("max abs logit diff", f"{r['max_abs_logit_diff']:.3g}", "-"),
            ("mask agreement", f"{r['mask_agreement']:.4%}", "-"),
            (f"bit agreement ({r['bit_rows']})", f"{r['bit_agreement']:.4%}", "-"),
            ("SQNR mask / bits", f"{_db(r['mask_sqnr_db'])} / {_db(r['bit_sqnr_db'])}", "-"),
        ]
        if r["bit_agreement_unwatermarked"] is not None:
            rows.append(("bit agreement, unwatermarked images (no message: not judged)", f"{r['bit_agreement_unwatermarked']:.4%}", "-"))
        return rows

    @staticmethod
    def one_line(r: dict[str, Any]) -> str:
        return f"bits {r['bit_agreement']:.2%}, " + gate_line(r["gate"]["logits"])


def _db(v: float | None) -> str:
    return "exact (no error)" if v is None else f"{v:.2f} dB"


# ---- the embedder ---------------------------------------------------------------------------------


class EmbedderPart(Part):
    name = EMBEDDER
    contract = EMBEDDER_CONTRACT
    prefix = "embedder-"
    description_file = "embedder.json"
    program_file = "embedder.pt2"
    onnx_file = "embedder.onnx"
    summary_keys = ("max_abs_pixel_diff", "psnr_vs_pytorch_db", "watermark_snr_db", "psnr_watermark_vs_cover_db", "decoding", "gate")

    def __init__(self, opts: RunOptions) -> None:
        super().__init__(opts)
        self._decoder: TorchRunner | None | bool = False  # False: not looked for yet
        self._decoder_bytes = 0

    def make_target(self, variant: str) -> str:
        return "embedder"

    # A 1 B-parameter U-Net is converted while the rest of it is still in memory: smaller pieces keep
    # each conversion's peak under the 8 GB budget (ChunkySeal: 4.1 GB of float weights).
    piece_bytes = 520_000_000
    # litert-torch converts ChunkySeal's U-Net in one piece at 12.9 GB peak RSS.
    pieces_above_bytes = 2_000_000_000

    @property
    def config(self) -> EmbedderConfig:
        return self.opts.spec.card.embedder

    def units(self, loaded: Loaded) -> UnitChain:
        cut = getattr(loaded.family, "units", None)
        if cut is None:
            raise UsageError(f"the {loaded.family.name} embedder family cannot be converted in pieces (it has no units)")
        return cut(loaded.family.deploy_form(loaded.module))

    @property
    def family(self) -> EmbedderFamily:
        return embedder_family_of(self.config)

    def weights_in(self, ckpt: Path) -> bool:
        """True when the checkpoint holds this embedder's network (``embedder.`` keys)."""
        return any(self.family.owns(k) and k.startswith("embedder.") for k in checkpoint_keys(ckpt))

    def load(self, allow_nonfinite_weights: bool | None = None, **_: Any) -> Loaded:
        o = self.opts
        nonfinite = o.allow_nonfinite_weights if allow_nonfinite_weights is None else allow_nonfinite_weights
        return untrained(load_embedder(o.spec, o.ckpt, o.random_init, nonfinite), o)

    def named(self, loaded: Loaded) -> nn.Module:
        return NamedEmbedder(loaded.family.deploy_form(loaded.module)).eval()

    checked_outputs = ("watermarked",)

    def torch_runner(self, loaded: Loaded, outputs: tuple[str, ...] | None = None) -> TorchRunner:
        module = loaded.module.eval()
        wanted = set(outputs or self.contract.output_names)  # each output is a pass through the network: only those asked for

        def fn(image: torch.Tensor, message: torch.Tensor) -> dict[str, torch.Tensor]:
            imgs, msgs = image.permute(0, 3, 1, 2), message.round().long()
            out = {}
            if "watermarked" in wanted:
                out["watermarked"] = module(imgs, msgs).permute(0, 2, 3, 1)
            if "residual" in wanted:
                out["residual"] = module.residual(imgs, msgs).permute(0, 2, 3, 1)
            return out

        return TorchRunner(fn, self.input_shapes(), f"PyTorch {loaded.spec.name} embedder")

    def describe(self, loaded: Loaded) -> dict[str, Any]:
        cfg, fam, spec = loaded.config, loaded.family, loaded.spec
        route = fam.route(cfg)
        return {
            "model_id": spec.name,
            "part": self.name,
            "card": {"file": spec.card_path.name, "sha256": sha256_file(spec.card_path)},
            "embedder": {"family": fam.name, **fam.describe(cfg), "nbits": cfg.nbits},
            "num_params": sum(p.numel() for n, p in loaded.module.named_parameters() if not n.startswith("attenuation")),
            "contract": self.contract.describe(cfg.img_size, cfg.nbits, route["residual_channels"]),
            "route": route,
            "quantization": {"static_int8": list(fam.quant.static), "why": fam.quant.why},
            "checkpoint": Path(loaded.checkpoint_path).name if loaded.checkpoint_path else None,
            "checkpoint_sha256": loaded.checkpoint_sha256,
            "random_init": loaded.random_init,
            "tool_versions": tool_versions(),
        }

    # ---- inputs -------------------------------------------------------------------------------

    def verification_set(self) -> InputSet:
        items, tally = self.heldout()
        inputs = [
            {"image": nhwc(it.pixels), "message": message_for(i, self.nbits, VERIFY_MESSAGE_SEED).float().numpy()}
            for i, it in enumerate(items)
        ]
        return InputSet([i.name for i in items], inputs, tally, [f"{i.name}:{i.sha256}" for i in items])

    def validation_set(self) -> InputSet:
        """The photo pool's validation split (three views each) with seeded messages: what the accuracy
        control chooses on; at most the spec's ``verify_images`` items."""
        tally = Tally()
        items = list(islice(split_items("validation", self.size, tally, HELDOUT_VIEWS), self.opts.spec.verify_images))
        inputs = [
            {"image": nhwc(it.pixels), "message": message_for(i, self.nbits, VALIDATION_MESSAGE_SEED).float().numpy()}
            for i, it in enumerate(items)
        ]
        return InputSet([i.name for i in items], inputs, tally, [f"{i.name}:{i.sha256}" for i in items])

    def calibration_inputs(self, calib_dir: Path | None, tally: Tally, limit: int | None = None) -> Iterator[dict[str, np.ndarray]]:
        for i, it in enumerate(self.calibration_items(calib_dir, tally, limit)):
            yield {"image": nhwc(it.pixels), "message": message_for(i, self.nbits, CALIBRATION_MESSAGE_SEED).float().numpy()}

    # ---- verification -------------------------------------------------------------------------

    def _reference_extras(self, loaded: Loaded) -> dict[str, Any]:
        """The odd-size route's case (a real photo at 240 x 320, a message, the official path's output),
        computed while the official module is in memory."""
        g = torch.Generator().manual_seed(3)
        first = next(iter(heldout_items(None, self.size)))
        img = torch.nn.functional.interpolate(torch.from_numpy(first.pixels), size=(240, 320), mode="bilinear", antialias=True).clamp(0, 1)
        msg = torch.randint(0, 2, (1, self.nbits), generator=g)
        with torch.no_grad():
            want = loaded.module(img, msg)[0].permute(1, 2, 0).numpy()
        return {
            "route": loaded.family.route(loaded.config),
            "route_case": (f"{first.name} resized to 240x320", img[0].permute(1, 2, 0).numpy(), msg[0].numpy(), want),
        }

    def decoder(self) -> TorchRunner | None:
        """The card's extractor (PyTorch) that reads watermarked images, when the card has one and its
        weights are there (random under RANDOM_INIT, else ``detector.`` keys in the checkpoint)."""
        if self._decoder is False:
            self._decoder = None
            if self.opts.spec.card.extractor_config is not None:
                ckpt = self.opts.checkpoint_path()
                if self.opts.random_init or (ckpt and ckpt.is_file() and any(k.startswith("detector.") for k in checkpoint_keys(ckpt))):
                    extractor = ExtractorPart(self.opts)
                    self._decoder = extractor.torch_runner(extractor.load(), ("bit_logits",))
                    self._decoder_bytes = extractor.float_bytes()
        return self._decoder  # type: ignore[return-value]

    def release_decoder(self) -> None:
        """Free a large decoder (ChunkySeal's 3.1 GB extractor) between uses, so it is never held
        beside an opened file; a small one stays for the next file."""
        if self._decoder not in (None, False) and self._decoder_bytes > KEEP_DECODER_BYTES:
            self._decoder = False
            gc.collect()

    def decode(self, images: np.ndarray) -> np.ndarray:
        runner = self.decoder()
        assert runner is not None
        return run_all(runner, ({"image": x[None]} for x in images), ["bit_logits"])["bit_logits"]

    def figures(self, inputs: InputSet, ref: Reference, got: dict[str, np.ndarray], band: Band) -> dict[str, Any]:
        covers = np.concatenate([x["image"] for x in inputs.inputs])
        messages = np.concatenate([x["message"] for x in inputs.inputs])
        want, wm = ref.outputs["watermarked"], got["watermarked"]
        # The watermark itself (PyTorch's watermarked minus cover) against the file's error on it.
        pixels = judge_noise(want.astype(np.float64) - covers, wm.astype(np.float64) - want, band, "pixels")
        f: dict[str, Any] = {
            "max_abs_pixel_diff": float(np.abs(wm - want).max()),
            "mean_abs_pixel_diff": float(np.abs(wm - want).mean()),
            "psnr_vs_pytorch_db": psnr_db(wm, want),
            "psnr_watermark_vs_cover_db": {"tflite": psnr_db(wm, covers), "pytorch": psnr_db(want, covers)},
            "watermark_snr_db": pixels.as_dict()["snr_db"],  # None: no error at all
            "output_range": [float(wm.min()), float(wm.max())],
            "decoding": None,
            "gate": {"pixels": pixels.as_dict()},
            "failures": list(pixels.failures),
        }
        if not (0.0 <= f["output_range"][0] and f["output_range"][1] <= 1.0):
            f["failures"].append(f"output outside [0, 1]: {f['output_range']}")
        if self.decoder() is not None:
            if "decoded" not in ref.extras:
                ref.extras["decoded"] = self.decode(want)
            dec, ref_dec = self.decode(wm), ref.extras["decoded"]
            # The bits the extractor reads from the file's output, against those it reads from PyTorch's, by the
            # same rule; their noise is capped (not judged) at the pixels' band.
            bits = judge(
                ref_dec, dec, np.ones(dec.shape, dtype=bool), band, inputs.names, lambda j: f"bit {j}", "decoded bits", gate_noise=False
            )
            f["decoding"] = {
                "extractor": "the card's extractor in PyTorch",
                "bit_agreement_tflite_vs_pytorch_embedded": float(np.mean((dec > 0) == (ref_dec > 0))),
                "bit_accuracy_pytorch_embedded": float(np.mean((ref_dec > 0) == (messages > 0.5))),
                "bit_accuracy_tflite_embedded": float(np.mean((dec > 0) == (messages > 0.5))),
            }
            f["gate"]["decoded bits"] = bits.as_dict()
            f["failures"] += bits.failures
            self.release_decoder()
        return f

    def extra_checks(self, variant: str, path: Path, ref: Reference) -> dict[str, Any]:
        """The FP32 file through the route for other sizes (``runtime/route.py``) against the official path."""
        if variant != "fp32":
            return {}
        name, img, msg, want = ref.extras["route_case"]
        runner: Runner = self.opts.opener(path, self.opts.threads)
        got = route_embed(runner, ref.extras["route"], self.size, img, msg)
        diff = float(np.abs(got - want).max())
        return {"route": {"image": name, "max_abs_diff_vs_pytorch": diff, "tolerance": ROUTE_TOLERANCE, "passed": diff <= ROUTE_TOLERANCE}}

    @staticmethod
    def table(r: dict[str, Any]) -> list[tuple[str, str, str]]:
        cover = r["psnr_watermark_vs_cover_db"]
        rows = gate_rows("pixels", r["gate"]["pixels"])
        if "decoded bits" in r["gate"]:
            rows += gate_rows("decoded bits", r["gate"]["decoded bits"])
        rows += [
            ("max abs pixel diff vs PyTorch", f"{r['max_abs_pixel_diff']:.3g}", "-"),
            ("PSNR vs PyTorch", f"{r['psnr_vs_pytorch_db']:.1f} dB", "-"),
            ("PSNR watermarked vs cover (file / PyTorch)", f"{cover['tflite']:.2f} / {cover['pytorch']:.2f} dB", "-"),
        ]
        d = r["decoding"]
        if d:
            rows += [
                ("decoded bits, file-embedded vs PyTorch-embedded", f"{d['bit_agreement_tflite_vs_pytorch_embedded']:.4%}", "-"),
                (
                    "bit accuracy, PyTorch-embedded / file-embedded",
                    f"{d['bit_accuracy_pytorch_embedded']:.4%} / {d['bit_accuracy_tflite_embedded']:.4%}",
                    "-",
                ),
            ]
        else:
            rows.append(("decoding", "not checked: no extractor weights for this card", "-"))
        if "route" in r["checks"]:
            c = r["checks"]["route"]
            rows.append(
                (f"other sizes: route on {c['image']}, max abs diff", f"{c['max_abs_diff_vs_pytorch']:.2g}", f"<= {c['tolerance']:g}")
            )
        return rows

    @staticmethod
    def one_line(r: dict[str, Any]) -> str:
        text = "pixels " + gate_line(r["gate"]["pixels"])
        if "decoded bits" in r["gate"]:
            text += f"; decoded bits {r['decoding']['bit_agreement_tflite_vs_pytorch_embedded']:.2%} as PyTorch's, " + gate_line(
                r["gate"]["decoded bits"]
            )
        return text


PARTS: dict[str, type[Part]] = {EXTRACTOR: ExtractorPart, EMBEDDER: EmbedderPart}


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
