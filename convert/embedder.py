"""The embedder part: image and message -> watermarked image and residual (``convert/part.py`` is the seam).

Verified on the held-out photos with seeded messages: its error against the watermark PyTorch writes,
the bits the model's extractor (PyTorch) reads from its output, and for FP32 the route for other sizes.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from videoseal_litert.calibration_data.build import (
    VALIDATION_VIEWS,
    Tally,
    heldout_items,
    split_items,
    to_uint8,
)
from videoseal_litert.convert.load import Loaded, checkpoint_keys, load_embedder
from videoseal_litert.convert.options import RunOptions
from videoseal_litert.convert.part import (
    InputSet,
    Part,
    Reference,
    gate_line,
    gate_rows,
    nhwc,
    register_part,
    untrained,
)
from videoseal_litert.core.artifacts import sha256_file, tool_versions
from videoseal_litert.core.errors import UsageError
from videoseal_litert.core.metrics import psnr_db
from videoseal_litert.models.catalog import embedder_family_of
from videoseal_litert.models.contracts import (
    EMBEDDER,
    EMBEDDER_CONTRACT,
    EXTRACTOR,
    NamedEmbedder,
    UnitChain,
)
from videoseal_litert.models.embedders import EmbedderConfig, EmbedderFamily, message_for
from videoseal_litert.models.gate import DECODED_BITS, DECODED_DETECTION, PIXELS, Rule, judge_embedder, judge_extractor, judge_signal
from videoseal_litert.runtime.route import embed as route_embed
from videoseal_litert.runtime.runners import Runner, TorchRunner, run_all

log = logging.getLogger(__name__)

# Seeds of the messages each use of the embedder draws (``message_for(index, nbits, seed)``).
VALIDATION_MESSAGE_SEED = 5  # the embedder's validation inputs (accuracy control)
VERIFY_MESSAGE_SEED = 7  # the embedder's verification messages
CALIBRATION_MESSAGE_SEED = 8  # the embedder's calibration messages
KEEP_DECODER_BYTES = 1_000_000_000  # an embedder's decoder (its model's extractor) above this is loaded per use


@register_part
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
        """The photo pool's validation split (two views each: full and centre crop) with seeded messages: what the accuracy
        control chooses on; at most the spec's ``verify_images`` items."""
        tally = Tally()
        items = list(islice(split_items("validation", self.size, tally, VALIDATION_VIEWS), self.opts.spec.verify_images))
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
                    extractor = self.sibling(EXTRACTOR)
                    self._decoder = extractor.torch_runner(extractor.load())
                    self._decoder_bytes = extractor.float_bytes()
        return self._decoder  # type: ignore[return-value]

    def release_decoder(self) -> None:
        """Free a large decoder (ChunkySeal's 3.1 GB extractor) between uses, so it is never held
        beside an opened file; a small one stays for the next file."""
        if self._decoder not in (None, False) and self._decoder_bytes > KEEP_DECODER_BYTES:
            self._decoder = False
            gc.collect()

    def decode(self, images: np.ndarray) -> np.ndarray:
        """The card's extractor (PyTorch) on each image: (N, 1 + nbits) logits, the mask logit first."""
        runner = self.decoder()
        assert runner is not None
        out = run_all(runner, ({"image": x[None]} for x in images), ["mask_logit", "bit_logits"])
        return np.concatenate([out["mask_logit"], out["bit_logits"]], axis=1)

    def groups_of(self, name: str) -> set[str]:
        return {PIXELS, DECODED_BITS, DECODED_DETECTION}  # every input takes part in every group

    def figures(self, inputs: InputSet, ref: Reference, got: dict[str, np.ndarray], rule: Rule) -> dict[str, Any]:
        covers = np.concatenate([x["image"] for x in inputs.inputs])
        messages = np.concatenate([x["message"] for x in inputs.inputs])
        want, wm = ref.outputs["watermarked"], got["watermarked"]
        decoded, attacked_groups, skipped = None, [], None
        if self.decoder() is not None:
            if "decoded" not in ref.extras:
                ref.extras["decoded"] = self.decode(want)
            decoded = (ref.extras["decoded"], self.decode(wm))
            if self._decoder_bytes <= KEEP_DECODER_BYTES:
                attacked_groups = self._attacked_decisions(inputs.names, want, wm, ref, rule)
            else:
                skipped = f"attacked views not decoded: the decoder holds {self._decoder_bytes / 1e9:.1f} GB of weights (minutes a view)"
            self.release_decoder()
        # The watermark (PyTorch's watermarked minus cover) against the file's error on it; and the decisions
        # PyTorch's extractor reads from the file's output against those it reads from PyTorch's, on the outputs as
        # they are and after each attack a shared photo meets (stored as 8 bits first).
        verdict = judge_embedder(covers, want, wm, rule, inputs.names, decoded)
        verdict.groups += attacked_groups
        f: dict[str, Any] = {
            "max_abs_pixel_diff": float(np.abs(wm - want).max()),
            "mean_abs_pixel_diff": float(np.abs(wm - want).mean()),
            "psnr_vs_pytorch_db": psnr_db(wm, want),
            "psnr_watermark_vs_cover_db": {"tflite": psnr_db(wm, covers), "pytorch": psnr_db(want, covers)},
            "watermark_snr_db": verdict.groups[0].as_dict()["snr_db"],  # None: no error at all
            "output_range": [float(wm.min()), float(wm.max())],
            "decoding": None,
            "pixels_only": decoded is None,
            "gate": verdict.as_dict(),
            "failures": verdict.failures,
            "notes": verdict.notes + ([skipped] if skipped else []),
        }
        if not (0.0 <= f["output_range"][0] and f["output_range"][1] <= 1.0):
            f["failures"].append(f"output outside [0, 1]: {f['output_range']}")
        if decoded is not None:
            ref_dec, dec = decoded[0][:, 1:], decoded[1][:, 1:]
            f["decoding"] = {
                "extractor": "the card's extractor in PyTorch",
                "bit_agreement_tflite_vs_pytorch_embedded": float(np.mean((dec > 0) == (ref_dec > 0))),
                "bit_accuracy_pytorch_embedded": float(np.mean((ref_dec > 0) == (messages > 0.5))),
                "bit_accuracy_tflite_embedded": float(np.mean((dec > 0) == (messages > 0.5))),
            }
        else:
            f["notes"].append(
                "pixels only: the card has no extractor (or the checkpoint no extractor weights) to decode the file's output; "
                "the message this file writes is not checked"
            )
        return f

    def _attacked_decisions(self, names: list[str], want: np.ndarray, wm: np.ndarray, ref: Reference, rule: Rule) -> list[Any]:
        """The decoded groups on PyTorch's output and the file's after each of ``VERIFY_ATTACKS`` (each stored as 8 bits
        first, then attacked as a shared photo is): one group of decisions per attack, by the rule."""
        from videoseal_litert.calibration_data.attacks import VERIFY_ATTACKS, resolve_attacks
        from videoseal_litert.calibration_data.build import attacked

        def views(images: np.ndarray) -> np.ndarray:
            nchw = [to_uint8(x.transpose(2, 0, 1)[None]).astype(np.float32) / 255.0 for x in images]
            return np.concatenate([attacked(x, a).transpose(0, 2, 3, 1) for a in resolve_attacks(",".join(VERIFY_ATTACKS)) for x in nchw])

        if "decoded_attacked" not in ref.extras:
            ref.extras["decoded_attacked"] = self.decode(views(want))
        got = self.decode(views(wm))
        labels = [f"{n}/{a}" for a in VERIFY_ATTACKS for n in names]
        atts = [a for a in VERIFY_ATTACKS for _ in names]
        return judge_extractor(ref.extras["decoded_attacked"], got, labels, [True] * len(labels), rule, atts, decoded=True).groups

    def extra_checks(self, variant: str, path: Path, ref: Reference, rule: Rule) -> dict[str, Any]:
        """The file through the route for other sizes (``runtime/route.py``: the host's resize, JND and blend
        around it) against the official path on a photo at 240 x 320, by the rule's pixels group."""
        name, img, msg, want = ref.extras["route_case"]
        runner: Runner = self.opts.opener(path, self.opts.threads)
        got = route_embed(runner, ref.extras["route"], self.size, img, msg)
        g = judge_signal(f"{PIXELS} / route at 240x320", want.astype(np.float64) - img, got.astype(np.float64) - want, rule.floor.snr_db)
        return {
            "route": {
                "image": name,
                "max_abs_diff_vs_pytorch": float(np.abs(got - want).max()),
                **g.as_dict(),
            }
        }

    @staticmethod
    def table(r: dict[str, Any]) -> list[tuple[str, str, str]]:
        cover = r["psnr_watermark_vs_cover_db"]
        rows = gate_rows(r["gate"])
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
            rows.append(("decoding", "PIXELS ONLY: no extractor (or no extractor weights) for this card; the message is not checked", "-"))
        if "route" in r["checks"]:
            c = r["checks"]["route"]
            snr = "exact" if c["snr_db"] is None else f"{c['snr_db']:.1f} dB"
            rows.append(
                (
                    f"other sizes: the route on {c['image']} ({'pass' if c['passed'] else 'FAIL'})",
                    f"SNR {snr}, max abs diff {c['max_abs_diff_vs_pytorch']:.2g}",
                    f"SNR >= {c['floor_db']:g} dB",
                )
            )
        return rows

    @staticmethod
    def one_line(r: dict[str, Any]) -> str:
        if r.get("pixels_only", r.get("decoding") is None):
            return "PIXELS ONLY (no extractor to decode it): " + gate_line(r["gate"])
        return f"decoded bits {r['decoding']['bit_agreement_tflite_vs_pytorch_embedded']:.2%} as PyTorch's; " + gate_line(r["gate"])
