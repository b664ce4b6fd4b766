"""The float pipeline's stages as functions over a model directory: load, inspect, export, tflite, verify.

Each stage reads what it needs (card, checkpoint, earlier artifacts), writes its own files
atomically, and records its inputs' fingerprint in ``stages.json``; with unchanged inputs and
intact outputs it is skipped. Every stage returns a one-table summary for the command line.
"""

from __future__ import annotations

import functools
import gc
import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, TypeVar

from videoseal_litert.calibration_data.build import Item, calibration_items, heldout_items, watermarked_items
from videoseal_litert.convert.artifacts import ModelDir, machine_description, peak_rss_mb, read_json, tool_versions, write_json, write_text
from videoseal_litert.convert.load import LoadedExtractor, load_extractor, sha256_file
from videoseal_litert.models.errors import ImageError
from videoseal_litert.models.families import INPUT_NAME, OUTPUT_MEANINGS, OUTPUT_NAMES, DeployExtractor, Family, family_of
from videoseal_litert.models.registry import ModelSpec

log = logging.getLogger(__name__)
T = TypeVar("T")

ROOT = Path(__file__).resolve().parent.parent


# Every folder of the installed package: a stage may import any of them.
CODE_DIRS = ("videoseal_litert", "models", "convert", "quantize", "calibration_data", "package", "demo")


@functools.cache
def code_fingerprint() -> str:
    """Hash of all the project's code and the versions of the tools it drives: a change to either reruns the stages."""
    h = hashlib.sha256()
    for sub in CODE_DIRS:
        for p in sorted((ROOT / sub).rglob("*.py")):
            h.update(p.relative_to(ROOT).as_posix().encode())
            h.update(p.read_bytes())
    h.update(json.dumps(tool_versions(), sort_keys=True).encode())
    return h.hexdigest()[:16]


def exclusive_stage(fn: Callable[..., T]) -> Callable[..., T]:
    """Run a stage ``fn(opts, ...)`` holding its model directory's lock (see ``ModelDir.exclusive``)."""

    @functools.wraps(fn)
    def run(opts: RunOptions, *args: Any, **kwargs: Any) -> T:
        with opts.model_dir.exclusive(fn.__name__):
            return fn(opts, *args, **kwargs)

    return run


ONNX_LIMIT_BYTES = 2**31 - 1


@dataclass
class RunOptions:
    """What the user chose on the command line (make variables)."""

    spec: ModelSpec
    out: Path
    ckpt: Path | None = None
    random_init: bool = False
    allow_zero_weights: bool = False
    allow_nonfinite_weights: bool = False
    images: Path | None = None
    threads: int = 2
    force: bool = False
    # Quantize a model in parts of at most this many float bytes (automatic above 2 GB); set small
    # to exercise the large-model path on a mini.
    max_part_bytes: int | None = None
    _embed_fn: Callable[[Any, int], Any] | None = field(default=None, repr=False, compare=False)

    @property
    def family(self) -> Family:
        return family_of(self.spec.card.config)

    @functools.cached_property
    def model_dir(self) -> ModelDir:
        return ModelDir(self.out, self.spec.name)

    def checkpoint_path(self) -> Path | None:
        if self.random_init:
            return None
        return self.ckpt or self.spec.default_checkpoint()

    def inputs(self) -> dict[str, Any]:
        """Fingerprint of what determines the model: card, weights, code."""
        ckpt = self.checkpoint_path()
        return {
            "card_sha256": sha256_file(self.spec.card_path),
            "checkpoint_sha256": sha256_file(ckpt) if ckpt and ckpt.is_file() else None,
            "random_init": self.random_init,
            "code": code_fingerprint(),
        }

    def load(self) -> LoadedExtractor:
        return load_extractor(self.spec, self.ckpt, self.random_init, self.allow_zero_weights, self.allow_nonfinite_weights)

    def verify_items(self) -> list[Item]:
        """Held-out 256x256 inputs (never calibration photos), or the user's IMAGES directory.

        For a model with an embedder, each item is followed by its watermarked version.
        """
        items = list(heldout_items(self.images, self.spec.card.config.img_size))
        if not items:
            raise ImageError(f"no readable image in {self.images}: every file was skipped (the warnings above say why)")
        n = self.spec.verify_images
        if n is not None and self.images is None and n < len(items):
            full = [i for i in items if i.name.endswith(":full")]
            items = (full + [i for i in items if not i.name.endswith(":full")])[:n]
        return self.with_watermarks(items)

    def calibration_stream(self, calib_dir: Path | None, counts: dict[str, int], limit: int | None = None) -> Iterator[Item]:
        """The calibration items (``limit``, else the spec's ``calibration_images``, of them), plus
        their watermarked versions for a model with an embedder; streamed."""
        stream: Iterator[Item] = calibration_items(calib_dir, self.spec.card.config.img_size, counts)
        limit = limit or self.spec.calibration_images
        if limit is not None:
            stream = islice(stream, limit)
        return self.with_watermarks(stream)

    def with_watermarks(self, items: list[Item] | Iterator[Item]) -> list[Item] | Iterator[Item]:
        """``items`` unchanged, or each followed by its watermarked version (same kind: list or stream)."""
        fn = self.embed_fn()
        if fn is None:
            return items
        return list(watermarked_items(items, fn)) if isinstance(items, list) else watermarked_items(items, fn)

    def embed_fn(self) -> Callable[[Any, int], Any] | None:
        """``(pixels, index) -> watermarked pixels`` with a seeded message per index, when the card has
        an embedder this pipeline runs and the weights are a checkpoint; else None."""
        if self.random_init:
            return None
        from videoseal_litert.models.errors import CardError
        from videoseal_litert.models.tiny import read_embedder_config, seeded_embed_fn

        try:
            read_embedder_config(self.spec.card_path)
        except CardError:
            return None
        if self._embed_fn is None:
            from videoseal_litert.convert.load import load_embedder

            self._embed_fn = seeded_embed_fn(load_embedder(self.spec, self.ckpt))
        return self._embed_fn


@dataclass
class StageSummary:
    stage: str
    model_id: str
    skipped: bool
    rows: list[tuple[str, str]]

    def table(self) -> str:
        head = f"{self.stage} {self.model_id}: " + ("up to date, skipped" if self.skipped else "done")
        width = max((len(k) for k, _ in self.rows), default=0)
        return "\n".join([head, *[f"  {k.ljust(width)}  {v}" for k, v in self.rows]])


def is_current(opts: RunOptions, stage: str, inputs: dict[str, Any]) -> bool:
    return not opts.force and opts.model_dir.up_to_date(stage, inputs)


def _stage_rows(opts: RunOptions, stage: str) -> list[tuple[str, str]]:
    rec = opts.model_dir.stages().get(stage, {})
    return [("wall time", f"{rec.get('wall_s', 0):.1f} s"), ("peak RSS", f"{rec.get('peak_rss_mb', 0):.0f} MB")]


def model_description(opts: RunOptions, loaded: LoadedExtractor) -> dict[str, Any]:
    cfg = loaded.config
    return {
        "model_id": opts.spec.name,
        "description": opts.spec.description,
        "card": str(opts.spec.card_path),
        "nbits": cfg.nbits,
        "architecture": {"family": loaded.family.name, **loaded.family.describe(cfg)},
        "num_params": sum(p.numel() for p in loaded.module.parameters()),
        "input": {
            "name": INPUT_NAME,
            "shape": [1, cfg.img_size, cfg.img_size, 3],
            "layout": opts.spec.input_layout,
            "dtype": "float32",
            "range": list(opts.spec.input_range),
            "channel_order": "RGB",
            "preprocessing_in_graph": "x * 2 - 1",
            "resize_rule": f"resize any other size to {cfg.img_size}x{cfg.img_size}: bilinear, align_corners=False, antialias=True, aspect ratio not kept (official detect())",
        },
        "outputs": [
            {"name": name, "index": i, "shape": [1, width], "dtype": "float32", "meaning": OUTPUT_MEANINGS[name]}
            for i, (name, width) in enumerate(zip(OUTPUT_NAMES, (1, cfg.nbits), strict=True))
        ],
        "checkpoint": loaded.checkpoint_path,
        "checkpoint_sha256": loaded.checkpoint_sha256,
        "random_init": loaded.random_init,
        "tool_versions": tool_versions(),
    }


@exclusive_stage
def stage_load(opts: RunOptions) -> StageSummary:
    """Checkpoint + card -> strictly loaded extractor; writes model.json."""
    md, inputs, t0 = opts.model_dir, opts.inputs(), time.time()
    if is_current(opts, "load", inputs):
        return StageSummary("load", opts.spec.name, True, _stage_rows(opts, "load"))
    loaded = opts.load()
    write_json(md / "model.json", model_description(opts, loaded))
    md.record("load", inputs, ["model.json"], t0)
    desc = read_json(md / "model.json")
    rows = [
        ("weights", "RANDOM (seeded), not a trained model" if loaded.random_init else f"{loaded.checkpoint_path}"),
        ("checkpoint sha256", str(loaded.checkpoint_sha256)),
        ("parameters", f"{desc['num_params']:,}"),
        ("nbits", str(desc["nbits"])),
    ]
    return StageSummary("load", opts.spec.name, False, rows + _stage_rows(opts, "load"))


@exclusive_stage
def stage_inspect(opts: RunOptions) -> StageSummary:
    """Write inspect.json / inspect.md: per-stage parameters, per-tensor statistics, FLOPs, flags."""
    from videoseal_litert.convert.inspect_checkpoint import inspect_extractor, render_markdown

    md, t0 = opts.model_dir, time.time()
    loaded = load_extractor(opts.spec, opts.ckpt, opts.random_init, allow_zero_weights=True, allow_nonfinite_weights=True)
    report = inspect_extractor(loaded)
    report["machine"] = machine_description()
    write_json(md / "inspect.json", report)
    write_text(md / "inspect.md", render_markdown(report))
    rows = [
        ("parameters", f"{report['num_params']:,}"),
        ("GFLOPs / image", f"{report['gflops_256']:.2f}"),
        ("flagged tensors", str(len(report["flagged"]))),
        ("all-zero conv/linear", str(len(report["zero_conv_linear_weights"]))),
        ("non-finite tensors", str(len(report["nonfinite_tensors"]))),
        ("report", str(md / "inspect.md")),
        ("wall time", f"{time.time() - t0:.1f} s"),
    ]
    return StageSummary("inspect", opts.spec.name, False, rows)


def require_artifact(md: ModelDir, name: str, make_target: str) -> Path:
    """An earlier stage's artifact, intact (``ModelDir.require``)."""
    return md.require(name, make_target)


@exclusive_stage
def stage_export(opts: RunOptions) -> StageSummary:
    """Extractor -> extractor.pt2 (torch.export) and model.onnx (checked with onnxruntime)."""
    from videoseal_litert.convert.export import export_onnx, export_program

    md, inputs, t0 = opts.model_dir, opts.inputs(), time.time()
    require_artifact(md, "model.json", "load")
    if is_current(opts, "export", inputs):
        return StageSummary("export", opts.spec.name, True, _stage_rows(opts, "export"))
    loaded = opts.load()
    deploy = DeployExtractor(loaded.family.deploy_form(loaded.module)).eval()
    export_program(deploy, loaded.config.img_size, md / "extractor.pt2")
    weight_bytes = sum(p.numel() * p.element_size() for p in deploy.parameters())
    outs = ["extractor.pt2", "export.json"]
    rows = [("extractor.pt2", _mb(md / "extractor.pt2"))]
    if weight_bytes >= ONNX_LIMIT_BYTES:
        # A protobuf cannot hold more than 2 GB; ONNX with external data is not produced here.
        info = {
            "onnx_skipped": f"{weight_bytes / 1e9:.2f} GB of weights exceeds the 2 GB protobuf limit",
            "random_init": loaded.random_init,
        }
        (md / "model.onnx").unlink(missing_ok=True)
        rows.append(("model.onnx", "skipped: weights over the 2 GB protobuf limit"))
    else:
        res = export_onnx(deploy, loaded.config.img_size, md / "model.onnx")
        info = {"onnx_opset": res.onnx_opset, "onnx_max_abs_diff_vs_pytorch": res.onnx_max_abs_diff, "random_init": loaded.random_init}
        outs.insert(1, "model.onnx")
        rows += [
            ("model.onnx", _mb(md / "model.onnx")),
            ("ONNX opset", str(res.onnx_opset)),
            ("ONNX vs PyTorch max abs diff", f"{res.onnx_max_abs_diff:.3g}"),
        ]
    write_json(md / "export.json", info)
    md.record("export", inputs, outs, t0)
    return StageSummary("export", opts.spec.name, False, rows + _stage_rows(opts, "export"))


@exclusive_stage
def stage_tflite(opts: RunOptions) -> StageSummary:
    """Extractor -> fp32.tflite with litert-torch."""
    from videoseal_litert.convert.tflite import convert_fp32

    md, inputs, t0 = opts.model_dir, opts.inputs(), time.time()
    require_artifact(md, "model.json", "load")
    if is_current(opts, "tflite", inputs):
        return StageSummary("tflite", opts.spec.name, True, _stage_rows(opts, "tflite"))
    loaded = opts.load()
    deploy = DeployExtractor(loaded.family.deploy_form(loaded.module)).eval()
    del loaded
    convert_fp32(deploy, opts.spec.card.config.img_size, md / "fp32.tflite")
    md.record("tflite", inputs, ["fp32.tflite"], t0)
    return StageSummary("tflite", opts.spec.name, False, [("fp32.tflite", _mb(md / "fp32.tflite"))] + _stage_rows(opts, "tflite"))


@exclusive_stage
def stage_verify(opts: RunOptions, variant: str = "fp32") -> StageSummary:
    """Compare <variant>.tflite with PyTorch on held-out photos; raise on a missed threshold."""
    from videoseal_litert.convert.verify import reference_logits, verify_variant

    md, t0 = opts.model_dir, time.time()
    tfl = require_artifact(md, f"{variant}.tflite", "tflite" if variant == "fp32" else "quantize")
    items = opts.verify_items()
    inputs = {
        **opts.inputs(),
        "tflite_sha256": sha256_file(tfl),
        "images": [f"{i.name}:{i.sha256}" for i in items],
        "threads": opts.threads,
    }
    thresholds = opts.spec.thresholds[variant]
    inputs["thresholds"] = thresholds.__dict__
    if is_current(opts, f"verify-{variant}", inputs):
        r = read_json(md / f"verify-{variant}.json")
        return StageSummary(f"verify-{variant}", opts.spec.name, True, _verify_rows(r) + _stage_rows(opts, f"verify-{variant}"))
    loaded = opts.load()
    reference = reference_logits(loaded.module, items)
    random_init, img_size = loaded.random_init, loaded.config.img_size
    del loaded  # free the PyTorch weights before the interpreter loads its own copy
    gc.collect()
    try:
        report = verify_variant(opts.spec.name, variant, reference, tfl, thresholds, random_init, md.path, img_size, opts.threads)
    finally:
        log.info("verify peak RSS %.0f MB", peak_rss_mb())
    md.record(f"verify-{variant}", inputs, [f"verify-{variant}.json", f"verify-{variant}.md"], t0)
    return StageSummary(f"verify-{variant}", opts.spec.name, False, _verify_rows(report.__dict__) + _stage_rows(opts, f"verify-{variant}"))


def _verify_rows(r: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        ("result", "PASSED" if r["passed"] else "FAILED"),
        ("images", str(r["num_images"])),
        ("max abs logit diff", f"{r['max_abs_logit_diff']:.3g}"),
        ("mask / bit agreement", f"{r['mask_agreement']:.4%} / {r['bit_agreement']:.4%}"),
        ("SQNR", "exact" if r["sqnr_db"] is None else f"{r['sqnr_db']:.1f} dB"),
        ("weights", "RANDOM (not trained)" if r["random_init"] else "checkpoint"),
    ]


def _mb(p: Path) -> str:
    return f"{p.stat().st_size / 1e6:.1f} MB"


@exclusive_stage
def stage_bench(opts: RunOptions, runs: int = 20, warmup: int = 3, threads: tuple[int, ...] | None = None) -> StageSummary:
    """bench.json / bench.md: PyTorch eager and every variant, 1 and 2 threads, interleaved."""
    from videoseal_litert.convert.bench import bench, write_bench

    md = opts.model_dir
    threads = threads or tuple(sorted({1, opts.threads}))
    has_embedder = (md / "embedder-fp32.tflite").exists() and (md / "embedder.json").exists()
    if has_embedder and not (md / "fp32.tflite").exists():  # an embedder-only card
        report = {"model_id": opts.spec.name, "machine": machine_description(), "latency": {}, "size": {}, "peak_rss_mb": {}}
    else:
        require_artifact(md, "fp32.tflite", "convert")
        report = bench(md.path, lambda: opts.load().module, threads=threads, runs=runs, warmup=warmup)
    if has_embedder:
        from videoseal_litert.convert.embedder import bench_embedder

        report["embedder"] = bench_embedder(md.path, threads, runs=max(3, runs // 2), warmup=min(warmup, 2))
    write_bench(md.path, report)
    rows = []
    for t, stats in report["latency"].items():
        for v, s in stats.items():
            size = report["size"].get(v, {}).get("ratio_to_fp32")
            rows.append(
                (
                    f"{t} thr {v}",
                    f"{s['median_ms']:.1f} ms median ({s['ratio_to_fp32']:.2f}x fp32)" + (f", {size:.3f}x size" if size else ""),
                )
            )
    for t, stats in report.get("embedder", {}).get("latency", {}).items():
        for v, st in stats.items():
            rows.append((f"{t} thr embedder-{v}", f"{st['median_ms']:.1f} ms median ({st['ratio_to_fp32']:.2f}x fp32)"))
    return StageSummary("bench", opts.spec.name, False, rows)
