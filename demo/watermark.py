"""The main demo: real watermarks, embedded by PyTorch, decoded by PyTorch, FP32 and INT8 TFLite.

``videoseal-litert demo [--images DIR] [--out artifacts]`` (``make demo``), on the project's trained
tiny pair (registry model ``tiny``, ``models/tiny/checkpoint.safetensors``; ``--ckpt`` for a retrained one):

1. converts and quantizes both parts with the pipeline's own stages (skipped when current): the
   extractor's ``fp32``, ``int8`` and ``int8-dynamic`` files, the embedder's ``fp32`` and ``int8``,
   each verified by the one rule (``models/gate.py``);
2. watermarks the held-out photos (never seen in training or calibration; 7 photos x 3 views,
   each with ``MESSAGES_PER_IMAGE`` seeded random 48-bit messages) with the PyTorch embedder, and
   rounds them to 8 bits (what a stored PNG holds). ``--images DIR`` uses your photos instead, at
   their own size: the official route (``runtime/route.py``) makes the residual at 256x256, resizes
   it to the photo and blends it there, and decoding resizes to 256x256 as official ``detect()`` does;
3. decodes every watermarked image with PyTorch, FP32 and INT8 (each through its runner), and does
   the whole job on TFLite (INT8 embedder, then INT8 extractor);
4. checks false positives: the unwatermarked images decoded against the same messages, with the
   binomial p-value of the number of matching bits (as the official evaluation computes it),
   and the detection (mask) logit on both;
5. writes ``demo/demo.json`` and ``demo/demo.md`` and prints one summary table; exits non-zero
   whenever it prints FAILED (a gate missed, or an artifact that did not pass verification).

``make robustness`` is a preset of ``videoseal-litert evaluate`` (``evaluate/``): the attacks it has
always shown, on the same photos, decoded by PyTorch, FP32, INT8 and INT8-dynamic.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from videoseal_litert.convert.options import RunOptions
from videoseal_litert.convert.parts import EmbedderPart, ExtractorPart
from videoseal_litert.convert.stages import artifact_summary, say_rejected
from videoseal_litert.core.artifacts import machine_description, read_json, write_json, write_text
from videoseal_litert.core.console import say
from videoseal_litert.core.errors import ImageError, VerificationError
from videoseal_litert.core.images import Tally, to_uint8
from videoseal_litert.core.metrics import DETECTION_PVALUE, binomial_pvalue, psnr_db, rate
from videoseal_litert.models.registry import ModelSpec
from videoseal_litert.runtime.runners import Runner, run_all

log = logging.getLogger(__name__)

MESSAGES_PER_IMAGE = 2
MESSAGE_SEED = 0
DECODERS = ("pytorch", "fp32", "int8")
# What the demo promises on the built-in held-out photos (issue: the trained default pair).
GATES = {"min_bit_accuracy": 0.99, "min_psnr_db": 32.0, "max_all_tflite_pp": 0.1, "max_int8_accuracy_pp": 0.1}
# The demo's INT8 extractor is quantized under the accuracy control with every validation bit as
# PyTorch's as the target (``make quantize``'s default is 0.999): a folder of 8 photos holds 768
# bits, where one flipped bit already misses the 99.9% agreement gate.
DEMO_TARGET_AGREEMENT = 1.0
MARGIN_BUCKETS = (0.0, 0.1, 0.5, 1.0, 2.0, math.inf)
FALSE_POSITIVE_PVALUE = DETECTION_PVALUE  # one threshold: core.metrics


@dataclass
class Pair:
    """The embedder and extractor of one checkpoint as PyTorch runners, and its training record when shipped beside it."""

    opts: RunOptions
    embedder: Runner
    extractor: Runner
    checkpoint: str
    nbits: int
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def spec(self) -> ModelSpec:
        return self.opts.spec


def load_pair(opts: RunOptions) -> Pair:
    """Both parts from one checkpoint (``detector.`` and ``embedder.`` keys), each loaded strictly, as runners."""
    ext, emb = ExtractorPart(opts), EmbedderPart(opts)
    loaded = ext.load()
    rec_path = opts.checkpoint_path().with_name("training_record.json")
    record = read_json(rec_path) if rec_path.is_file() else {}
    return Pair(opts, emb.torch_runner(emb.load()), ext.torch_runner(loaded), str(loaded.checkpoint_path), emb.nbits, record)


def margin_buckets(ref: np.ndarray, got: np.ndarray) -> list[dict[str, Any]]:
    """Agreement of ``got``'s bit signs with ``ref``'s per bucket of the reference's |logit|."""
    a = np.abs(ref)
    out = []
    for lo, hi in zip(MARGIN_BUCKETS, MARGIN_BUCKETS[1:], strict=False):
        sel = (a >= lo) & (a < hi)
        out.append({"abs_logit": [lo, hi if math.isfinite(hi) else None], **rate(((got > 0) == (ref > 0))[sel])})
    return out


def to_8bit(x: torch.Tensor) -> np.ndarray:
    """(1, 3, H, W) float -> what an 8-bit PNG round trip gives back, as (1, 3, H, W) float32."""
    return to_uint8(x.numpy()).astype(np.float32) / 255.0


@dataclass
class Watermarked:
    """Decoder inputs at the extractor's size, NHWC (N, 256, 256, 3), and what went into them."""

    names: list[str]
    marked: np.ndarray
    clean: np.ndarray
    messages: np.ndarray  # (N, nbits) bool
    psnr_db: list[float]
    sizes: list[tuple[int, int]]


def watermark_images(
    pair: Pair,
    images: Path | None = None,
    per_image: int = MESSAGES_PER_IMAGE,
    seed: int = MESSAGE_SEED,
    embedder: Runner | None = None,
    tally: Tally | None = None,
    save_dir: Path | None = None,
) -> Watermarked:
    """Watermark the held-out views (or every photo in ``images``, at its own size) with seeded random
    messages, through the PyTorch embedder or ``embedder`` (a file's runner), by the route for any
    size (``runtime/route.py``); the same seed gives the same messages either way. ``save_dir``: each
    photo watermarked with its first message, at its own size, as ``<stem>-watermarked.png`` there, to look at."""
    from videoseal_litert.calibration_data.build import split_items
    from videoseal_litert.calibration_data.detect_resize import resize_like_detect
    from videoseal_litert.core.images import list_images, read_rgb
    from videoseal_litert.runtime.route import embed

    size = pair.spec.card.config.img_size
    tally = Tally() if tally is None else tally
    if images is None:
        sources = [(it.name, it.pixels) for it in split_items("evaluation", size, tally)]
    else:
        sources = []
        for path in list_images(images, tally):
            try:
                sources.append((path.name, read_rgb(path)[None]))
            except ImageError as e:  # named and skipped, as verification does
                log.warning("skipping %s", e)
                tally.rejected.append((path.name, str(e).removeprefix(f"{path}: ")))
        if not sources:
            raise ImageError(f"no readable images in {images}")
    gen = torch.Generator().manual_seed(seed)
    run = embedder or pair.embedder
    route = EmbedderPart(pair.opts).family.route(pair.spec.card.embedder)
    out = Watermarked([], [], [], [], [], [])
    marked, clean, msgs = [], [], []
    for name, x in sources:
        for j in range(per_image):
            m = torch.randint(0, 2, (1, pair.nbits), generator=gen)
            wm = embed(run, route, size, x[0].transpose(1, 2, 0), m.numpy()[0])
            if save_dir is not None and j == 0:  # the first message's, to look at
                _save_png(to_uint8(wm), save_dir / f"{Path(name).stem}-watermarked.png")
            xw = to_uint8(wm.transpose(2, 0, 1)[None]).astype(np.float32) / 255.0
            x8 = to_uint8(x).astype(np.float32) / 255.0
            out.names.append(f"{name}#{j}")
            out.psnr_db.append(psnr_db(xw, x8))
            out.sizes.append((int(x.shape[-1]), int(x.shape[-2])))
            marked.append(resize_like_detect(xw, size).numpy().transpose(0, 2, 3, 1))
            clean.append(resize_like_detect(x8, size).numpy().transpose(0, 2, 3, 1))
            msgs.append(m.numpy()[0].astype(bool))
    out.marked, out.clean, out.messages = np.concatenate(marked), np.concatenate(clean), np.stack(msgs)
    return out


def _save_png(pixels: np.ndarray, path: Path) -> None:
    from PIL import Image

    from videoseal_litert.core.artifacts import atomic_path

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Image.fromarray(pixels).save(tmp, format="PNG")


def decode(pair: Pair, tflites: dict[str, Path], images: np.ndarray, threads: int = 2) -> dict[str, np.ndarray]:
    """(N, 1 + nbits) logits from PyTorch and each ``.tflite``, on NHWC images, each through its runner."""
    runners = {"pytorch": pair.extractor, **{k: pair.opts.opener(p, threads) for k, p in tflites.items()}}
    out = {}
    for k, runner in runners.items():
        r = run_all(runner, ({"image": x[None]} for x in images))
        out[k] = np.concatenate([r["mask_logit"], r["bit_logits"]], axis=1)
    return out


def prepare_artifacts(
    opts: RunOptions, embedder_variants: tuple[str, ...] = ("int8",), target_agreement: float = DEMO_TARGET_AGREEMENT
) -> list[Any]:
    """Convert, verify and quantize both parts of the pair with the pipeline's stages (skipped when current):
    the extractor's fp32, int8 and int8-dynamic files, the embedder's fp32 and ``embedder_variants``."""
    from videoseal_litert.convert.stages import stage_load, stage_tflite, stage_verify
    from videoseal_litert.quantize.quantize_stage import stage_quantize

    tables = []
    for part, variants in ((ExtractorPart(opts), ("int8", "int8-dynamic")), (EmbedderPart(opts), embedder_variants)):
        tables += [stage_load(opts, part), stage_tflite(opts, part), stage_verify(opts, part, "fp32")]
        if variants:
            target = target_agreement if part.name == "extractor" else None  # the embedder: its default (10 dB)
            # The demo's target is the INT8 file's (its accuracy control's): int8-dynamic is judged by the rule alone.
            tables.append(stage_quantize(opts, part, variants=variants, target=target, target_variants=("int8",)))
    return tables


def prepared(opts: RunOptions, target_agreement: float) -> RunOptions:
    """The run's options for the stages (the user's photos are what the demo watermarks, not what the files are verified
    on), with the pair's files converted, quantized and verified (skipped when current; tables to the log)."""
    stage_opts = opts.for_stages()
    for t in prepare_artifacts(stage_opts, target_agreement=target_agreement):
        log.info("%s", t.table())
    return stage_opts


def run_demo(opts: RunOptions, target_agreement: float = DEMO_TARGET_AGREEMENT) -> dict[str, Any]:
    """The demo on the run's model (a pair with both parts: ``tiny``, or ``fixture`` after ``make train-fixture``) and its
    photos (``opts.images``; default the photo pool's evaluation split); ``target_agreement`` 0 quantizes the extractor
    without the accuracy control (for comparison)."""
    t0 = time.time()
    images, threads, out = opts.images, opts.threads, opts.out
    opts = prepared(opts, target_agreement)
    md = opts.model_dir.path
    extractor, embedder = ExtractorPart(opts), EmbedderPart(opts)
    pair = load_pair(opts)
    tally = Tally()
    wm = watermark_images(pair, images, tally=tally)
    say_rejected(tally)
    # The whole job on TFLite: the INT8 embedder marks the same images with the same messages, the
    # INT8 extractor reads them.
    # The user's photos get their own report folder (the held-out photos' demo.md stays), with the photos watermarked.
    dd = out / "demo" if images is None else out / "demo" / Path(images).name
    int8_embedder = opts.opener(md / embedder.file("int8"), threads)
    wm_tfl = watermark_images(pair, images, embedder=int8_embedder, save_dir=dd / "watermarked")
    assert np.array_equal(wm_tfl.messages, wm.messages)
    files = {v: md / extractor.file(v) for v in ("fp32", "int8")}
    logits = decode(pair, files, wm.marked, threads)
    clean_logits = decode(pair, files, wm.clean, threads)
    all_tfl = decode(pair, {"int8": files["int8"]}, wm_tfl.marked, threads)["int8"]
    report = _figures(pair, wm, wm_tfl, logits, clean_logits, all_tfl)
    report.update(
        {
            "images": f"the photo pool's evaluation split ({tally.sources} photos, full view at 256x256)"
            if images is None
            else str(images),
            "rejected": tally.as_dict()["rejected"],
            "all_tflite": {**report["all_tflite"], "embedder": embedder.file("int8"), "extractor": extractor.file("int8")},
            "accuracy_control_target": target_agreement or None,
        }
    )
    report["rule"] = _judged(pair, logits, clean_logits)
    report["gates"] = check_gates(report, builtin=images is None)
    report["passed"] = all(g["passed"] for g in report["gates"].values())
    report["watermarked_photos"] = str(dd / "watermarked")
    _finish(report, dd, md, t0)
    return report


def _figures(
    pair: Pair, wm: Any, wm_tfl: Any, logits: dict[str, np.ndarray], clean_logits: dict[str, np.ndarray], all_tfl: np.ndarray
) -> dict:
    """The demo's figures from the decoded logits: bit accuracy, agreement with PyTorch, false positives, detection."""
    msgs, n = wm.messages, wm.messages.shape[1]

    def accuracy(v: np.ndarray) -> float:
        return float(np.mean((v[:, 1:] > 0) == msgs))

    def pvalues(v: np.ndarray) -> list[float]:
        return [binomial_pvalue(int(np.sum((row[1:] > 0) == m)), n) for row, m in zip(v, msgs, strict=True)]

    fp = {k: pvalues(v) for k, v in clean_logits.items()}
    return {
        "model_id": pair.spec.name,
        "checkpoint": pair.checkpoint,
        "random_init": False,
        "num_images": len(wm.names),
        "image_names": wm.names,
        "messages_per_image": MESSAGES_PER_IMAGE,
        "nbits": n,
        "psnr_db": float(np.mean(wm.psnr_db)),
        "psnr_db_min": float(np.min(wm.psnr_db)),
        **{f"{k}_bit_accuracy": accuracy(v) for k, v in logits.items()},
        "int8_bit_agreement_with_pytorch": float(np.mean((logits["int8"][:, 1:] > 0) == (logits["pytorch"][:, 1:] > 0))),
        "fp32_bit_agreement_with_pytorch": float(np.mean((logits["fp32"][:, 1:] > 0) == (logits["pytorch"][:, 1:] > 0))),
        "rates": {
            **{f"{k}_bit_accuracy": rate((v[:, 1:] > 0) == msgs) for k, v in logits.items()},
            "int8_agreement_with_pytorch": rate((logits["int8"][:, 1:] > 0) == (logits["pytorch"][:, 1:] > 0)),
            "all_tflite_bit_accuracy": rate((all_tfl[:, 1:] > 0) == msgs),
            **{f"{k}_false_positives": rate(np.array(v) < FALSE_POSITIVE_PVALUE) for k, v in fp.items()},
            **{f"{k}_detected_watermarked": rate(logits[k][:, 0] > 0) for k in logits},
            **{f"{k}_detected_unwatermarked": rate(clean_logits[k][:, 0] > 0) for k in logits},
        },
        "int8_agreement_by_margin": margin_buckets(logits["pytorch"][:, 1:], logits["int8"][:, 1:]),
        "int8_max_abs_bit_logit_diff": float(np.max(np.abs(logits["int8"][:, 1:] - logits["pytorch"][:, 1:]))),
        "min_abs_bit_logit_pytorch": float(np.min(np.abs(logits["pytorch"][:, 1:]))),
        "all_tflite": {
            "bit_accuracy": accuracy(all_tfl),
            "all_pytorch_bit_accuracy": accuracy(logits["pytorch"]),
            "difference_pp": round(100 * (accuracy(all_tfl) - accuracy(logits["pytorch"])), 4),
            "psnr_db": float(np.mean(wm_tfl.psnr_db)),
            "psnr_db_min": float(np.min(wm_tfl.psnr_db)),
        },
        "watermarked_pvalue_max": {k: max(pvalues(v)) for k, v in logits.items()},
        "false_positive_pvalues": fp["int8"],
        "false_positive_check": {
            k: {"min_pvalue": min(v), f"detections_at_p<{FALSE_POSITIVE_PVALUE:g}": int(sum(p < FALSE_POSITIVE_PVALUE for p in v))}
            for k, v in fp.items()
        },
        "detection_logit": {
            k: {
                "watermarked_detected": float(np.mean(logits[k][:, 0] > 0)),
                "unwatermarked_detected": float(np.mean(clean_logits[k][:, 0] > 0)),
            }
            for k in logits
        },
        "training": {k: pair.record.get(k) for k in ("command", "steps", "train_seconds", "hardware", "heldout_metrics_256")},
        "machine": machine_description(),
        "note": f"the project's {pair.spec.name} pair: a demo and test fixture for the conversion pipeline, not a production watermarker",
    }


def _finish(report: dict[str, Any], dd: Path, md: Path, t0: float) -> None:
    """demo.json / demo.md, the report and the artifacts on the terminal, then one final verdict (FAILED exits non-zero)."""
    write_json(dd / "demo.json", report)
    write_text(dd / "demo.md", render(report))
    # On the terminal: the report without its last line, the artifacts, then one final verdict.
    say(render(report).rstrip().rsplit("\n", 1)[0].rstrip())
    table, artifacts_ok = artifact_summary(
        md,
        (("extractor", "fp32"), ("extractor", "int8"), ("extractor", "int8-dynamic"), ("embedder", "fp32"), ("embedder", "int8")),
        time.time() - t0,
        f"\nartifacts in {md}; the whole demo took",
    )
    say(table.rsplit("\n", 1)[0])
    missed = [k for k, g in report["gates"].items() if not g["passed"]]
    say(f"report: {dd / 'demo.md'}")
    failed = missed + ([] if artifacts_ok else ["an artifact's verification"])
    say("PASSED" if not failed else "FAILED: " + ", ".join(failed))
    if failed:  # whenever FAILED is printed, the command exits non-zero
        raise VerificationError(f"demo failed: {', '.join(failed)} (see {dd / 'demo.md'})")


def _judged(pair: Pair, logits: dict[str, np.ndarray], clean: dict[str, np.ndarray]) -> dict[str, Any]:
    """Each file's decisions on the demo's photos (clean and watermarked) against PyTorch's, by the one rule."""
    from videoseal_litert.models.gate import judge_extractor
    from videoseal_litert.models.variants import VARIANTS, rule_for

    out = {}
    for k in logits:
        if k == "pytorch":
            continue
        ref = np.concatenate([clean["pytorch"], logits["pytorch"]])
        got = np.concatenate([clean[k], logits[k]])
        names = [f"clean {i}" for i in range(len(clean[k]))] + [f"watermarked {i}" for i in range(len(logits[k]))]
        marked = [False] * len(clean[k]) + [True] * len(logits[k])
        out[k] = judge_extractor(ref, got, names, marked, rule_for(pair.spec, "extractor", VARIANTS[k])).as_dict()
    return out


def _rule_line(g: dict[str, Any]) -> str:
    worst = min((x["snr_db"] for x in g["groups"].values() if x["snr_db"] is not None), default=None)
    flips = sum(x["clear_flips"] + x["near_flips"] for x in g["groups"].values())
    return (
        ("PASSED" if g["passed"] else "FAILED") + (f", worst group {worst:.1f} dB" if worst is not None else ", exact") + f", {flips} flips"
    )


def check_gates(r: dict[str, Any], builtin: bool) -> dict[str, dict[str, Any]]:
    """FP32 and INT8 pass the rule against PyTorch on the demo's photos, always; accuracy and PSNR on the built-in set."""
    gates = {
        f"{k} by the rule against PyTorch": (_rule_line(g), "PASSED (docs/verification.md)", g["passed"]) for k, g in r["rule"].items()
    }
    gates |= {
        "no false positive (int8)": (
            min(r["false_positive_pvalues"]),
            f"min p >= {FALSE_POSITIVE_PVALUE:g}",
            min(r["false_positive_pvalues"]) >= FALSE_POSITIVE_PVALUE,
        ),
    }
    d = r["all_tflite"]["difference_pp"]
    dp = 100 * (r["int8_bit_accuracy"] - r["pytorch_bit_accuracy"])
    gates["int8 bit accuracy vs PyTorch"] = (
        dp,
        f"within {GATES['max_int8_accuracy_pp']} pp",
        abs(dp) <= GATES["max_int8_accuracy_pp"] + 1e-9,
    )
    gates["INT8 embedder + INT8 extractor vs all-PyTorch"] = (
        d,
        f"within {GATES['max_all_tflite_pp']} pp",
        abs(d) <= GATES["max_all_tflite_pp"],
    )
    if builtin:
        gates["int8 bit accuracy"] = (
            r["int8_bit_accuracy"],
            f">= {GATES['min_bit_accuracy']:.0%}",
            r["int8_bit_accuracy"] >= GATES["min_bit_accuracy"],
        )
        gates["PSNR"] = (r["psnr_db_min"], f">= {GATES['min_psnr_db']:.0f} dB (every image)", r["psnr_db_min"] >= GATES["min_psnr_db"])
    return {k: {"measured": v, "gate": g, "passed": bool(p)} for k, (v, g, p) in gates.items()}


def render(r: dict[str, Any]) -> str:
    tr = r["training"]
    trained = (
        f"trained {tr['steps']} steps in {tr['train_seconds'] / 60:.0f} min on {tr['hardware']}"
        if tr.get("steps")
        else "training record not found"
    )
    fp = r["false_positive_check"]
    det = r["detection_logit"]
    lines = [
        f"# Watermark demo: the {r['model_id']} pair, PyTorch vs FP32 vs INT8 TFLite",
        "",
        f"{r['num_images']} watermarked images ({r['images']}; {r['messages_per_image']} random {r['nbits']}-bit messages each), "
        f"embedded by the PyTorch embedder, stored as 8-bit; PSNR {r['psnr_db']:.1f} dB mean, {r['psnr_db_min']:.1f} dB min. "
        f"Model: {r['checkpoint']} ({trained}). {r['note']}. Machine: {r['machine']}.",
        "",
        "| decoder | bit accuracy (true messages) | agreement with PyTorch | detected (mask logit > 0): watermarked / unwatermarked | false positives at p < 1e-3 (min p) |",
        "|---|---|---|---|---|",
    ]
    agree = {"pytorch": "-", "fp32": f"{r['fp32_bit_agreement_with_pytorch']:.2%}", "int8": f"{r['int8_bit_agreement_with_pytorch']:.2%}"}
    names = {"pytorch": "PyTorch", "fp32": "FP32 TFLite", "int8": "INT8 TFLite"}
    key = f"detections_at_p<{FALSE_POSITIVE_PVALUE:g}"
    for k in DECODERS:
        lines.append(
            f"| {names[k]} | {r[f'{k}_bit_accuracy']:.2%} | {agree[k]} | {det[k]['watermarked_detected']:.0%} / {det[k]['unwatermarked_detected']:.0%} "
            f"| {fp[k][key]} of {r['num_images']} ({fp[k]['min_pvalue']:.2g}) |"
        )
    a = r["all_tflite"]
    lines.append(
        f"| INT8 TFLite embedder -> INT8 TFLite extractor | {a['bit_accuracy']:.2%} | all-PyTorch {a['all_pytorch_bit_accuracy']:.2%} "
        f"({a['difference_pp']:+.2f} pp) | PSNR {a['psnr_db']:.1f} dB mean | |"
    )
    if r.get("watermarked_photos"):
        lines += ["", f"The photos as the INT8 TFLite embedder watermarked them, at their own size: `{r['watermarked_photos']}`."]
    lines += ["", "95% Wilson intervals:", ""]
    for k, v in r["rates"].items():
        lines.append(f"- {k.replace('_', ' ')}: {v['k']}/{v['n']} = {v['rate']:.4%} [{v['wilson95'][0]:.4%}, {v['wilson95'][1]:.4%}]")
    lines += [
        "",
        "INT8 agreement with PyTorch by the PyTorch bit logit's margin:",
        "",
        "| abs(logit) | bits | agreement | 95% interval |",
        "|---|---|---|---|",
    ]
    for b in r["int8_agreement_by_margin"]:
        hi = "inf" if b["abs_logit"][1] is None else f"{b['abs_logit'][1]:g}"
        shown = f"{b['rate']:.4%} | [{b['wilson95'][0]:.4%}, {b['wilson95'][1]:.4%}]" if b["n"] else "- | -"
        lines.append(f"| [{b['abs_logit'][0]:g}, {hi}) | {b['n']} | {shown} |")
    lines += ["", "| gate | measured | required | |", "|---|---|---|---|"]
    for name, g in r["gates"].items():
        v = g["measured"]
        shown = (
            v
            if isinstance(v, str)
            else f"{v:+.3f} pp"
            if name.startswith("INT8 embedder") or name.endswith("vs PyTorch")
            else f"{v:.4%}"
            if "agree" in name or "accuracy" in name
            else (f"{v:.1f} dB" if name == "PSNR" else f"{v:.3g}")
        )
        lines.append(f"| {name} | {shown} | {g['gate']} | {'pass' if g['passed'] else 'FAIL'} |")
    lines += ["", "PASSED" if r["passed"] else "FAILED", ""]
    return "\n".join(lines)
