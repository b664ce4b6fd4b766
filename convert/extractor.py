"""The extractor part: image -> mask logit and bit logits (``convert/part.py`` is the seam).

Watermarked inputs come from the model's embedder part, for any family that has one and whose weights
are there: the extractor is calibrated and verified on clean photos and on the same photos watermarked
with seeded messages (bits are compared where a message was embedded); verified and validated also on
the watermarked views under the attacks a shared photo meets (``VERIFY_ATTACKS``), each attack a group
of the rule of its own.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from videoseal_litert.calibration_data.attacks import VERIFY_ATTACKS
from videoseal_litert.calibration_data.build import (
    HELDOUT_VIEWS,
    Tally,
    attack_of,
    attacked_items,
    is_watermarked,
    split_items,
    watermarked_items,
)
from videoseal_litert.convert.load import Loaded, load_extractor
from videoseal_litert.convert.options import RunOptions
from videoseal_litert.convert.part import (
    InputSet,
    Part,
    Reference,
    flipped_bits,
    gate_line,
    gate_rows,
    input_set,
    nhwc,
    register_part,
    untrained,
)
from videoseal_litert.core.artifacts import sha256_file, tool_versions
from videoseal_litert.core.logits import split_logits
from videoseal_litert.core.metrics import sqnr_db
from videoseal_litert.models.catalog import family_of
from videoseal_litert.models.contracts import (
    EMBEDDER,
    EXTRACTOR,
    EXTRACTOR_CONTRACT,
    NamedExtractor,
    UnitChain,
    extractor_chain,
)
from videoseal_litert.models.embedders import message_for
from videoseal_litert.models.families import DeployExtractor, Family, FamilyConfig
from videoseal_litert.models.gate import BITS, DETECTION, Rule, group_name, judge_extractor
from videoseal_litert.runtime.runners import TorchRunner

log = logging.getLogger(__name__)

# Seeds of the messages the model's embedder draws for the extractor's inputs (``message_for(index, nbits, seed)``).
WATERMARK_SEED = 0  # the extractor's watermarked calibration and verification images


@register_part
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
                embedder = self.sibling(EMBEDDER)
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

    def with_attacks(self, items: Any) -> list[Any]:
        """The items with their watermarks, and each watermarked view under ``VERIFY_ATTACKS`` after it (none
        without an embedder: there is no watermark to attack)."""
        return list(attacked_items(self.with_watermarks(items), VERIFY_ATTACKS if self.watermarker() is not None else ()))

    def verification_set(self) -> InputSet:
        items, tally = self.heldout()
        return input_set(self.with_attacks(items), tally, lambda i: {"image": nhwc(i.pixels)})

    def calibration_inputs(self, calib_dir: Path | None, tally: Tally, limit: int | None = None) -> Iterator[dict[str, np.ndarray]]:
        return ({"image": nhwc(i.pixels)} for i in self.with_watermarks(self.calibration_items(calib_dir, tally, limit)))

    def validation_set(self) -> InputSet:
        """The photo pool's validation split (three views each, watermarked twins and their attacked views when
        the model has an embedder): what the accuracy control and the fallback choose on; at most the spec's
        ``verify_images`` photos' views."""
        tally = Tally()
        items = list(islice(split_items("validation", self.size, tally, HELDOUT_VIEWS), self.opts.spec.verify_images))
        return input_set(self.with_attacks(items), tally, lambda i: {"image": nhwc(i.pixels)})

    # ---- verification -------------------------------------------------------------------------

    def groups_of(self, name: str) -> set[str]:
        a = attack_of(name)
        return {group_name(DETECTION, a), group_name(BITS, a)}

    def figures(self, inputs: InputSet, ref: Reference, got: dict[str, np.ndarray], rule: Rule) -> dict[str, Any]:
        r = np.concatenate([ref.outputs["mask_logit"], ref.outputs["bit_logits"]], axis=1)
        g = np.concatenate([got["mask_logit"], got["bit_logits"]], axis=1)
        marked = np.array([is_watermarked(n) for n in inputs.names])
        attacks = [attack_of(n) for n in inputs.names]
        verdict = judge_extractor(r, g, inputs.names, marked, rule, attacks)
        # The figures below are reported, not judged (the verdict is): the clean and watermarked views, bits
        # where a message was embedded (every row for a model without an embedder).
        base = np.array([a is None for a in attacks])
        rows = base & (marked if marked.any() else True)
        diff = np.abs(r - g)
        bits = verdict.group(BITS)
        return {
            "max_abs_logit_diff": float(diff.max()),
            "max_abs_mask_diff": float(diff[:, 0].max()),
            "max_abs_bit_diff": float(diff[:, 1:].max()),
            "mask_agreement": float(np.mean((r[base, 0] > 0) == (g[base, 0] > 0))) if base.any() else None,
            "bit_agreement": float(np.mean((r[rows, 1:] > 0) == (g[rows, 1:] > 0))) if rows.any() else None,
            "sqnr_db": None if bits is None else bits.as_dict()["snr_db"],
            "mask_sqnr_db": sqnr_db(r[base, 0], g[base, 0]) if base.any() else None,
            "bit_sqnr_db": sqnr_db(r[rows, 1:], g[rows, 1:]) if rows.any() else None,
            "bit_rows": "watermarked images" if marked.any() else "all images",
            "bit_agreement_unwatermarked": float(np.mean((r[~marked, 1:] > 0) == (g[~marked, 1:] > 0)))
            if marked.any() and (~marked).any()
            else None,
            "attacks": attack_figures(r, g, attacks),
            "flipped_bits": flipped_bits(inputs.names, rows, r[:, 1:], g[:, 1:]),
            "gate": verdict.as_dict(),
            "failures": verdict.failures,
            "notes": verdict.notes,
        }

    @staticmethod
    def table(r: dict[str, Any]) -> list[tuple[str, str, str]]:
        rows = gate_rows(r["gate"]) + [
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
        return f"bits {r['bit_agreement']:.2%}, " + gate_line(r["gate"])


def attack_figures(ref: np.ndarray, got: np.ndarray, attacks: list[str | None]) -> dict[str, dict[str, Any]]:
    """Per attack (reported beside the verdict): bits and detections as PyTorch's on the same attacked inputs."""
    out = {}
    for a in dict.fromkeys(x for x in attacks if x is not None):
        idx = np.array([x == a for x in attacks])
        out[a] = {
            "inputs": int(idx.sum()),
            "bit_agreement": float(np.mean((ref[idx, 1:] > 0) == (got[idx, 1:] > 0))),
            "detections_pytorch": int((ref[idx, 0] > 0).sum()),
            "detections_file": int((got[idx, 0] > 0).sum()),
        }
    return out


def _db(v: float | None) -> str:
    return "exact (no error)" if v is None else f"{v:.2f} dB"
