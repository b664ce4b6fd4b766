"""The variants table: every file kind the pipeline writes, one row each (as ultralytics' ``export_formats()``).

A row says what a variant is for every stage: the recipe that makes it from the float file (an
ai-edge-quantizer configuration; ``None`` for ``fp32``, which the converter writes), whether it needs
calibration, its input/output dtype, where it sits in the benchmark, which parts (extractor,
embedder) it applies to, its band per part for trained and for random weights (the watermark SNR the
one rule of ``models/gate.py`` holds a file to; a model's spec may tighten it), whether a bundle ships
it by default, and whether the accuracy-driven fallback may keep ops float to reach its band. Adding a variant is one row and, unless an
existing recipe fits, one recipe function; every stage reads this table.

Which ops a recipe touches is the family's ``QuantPolicy`` (``models/families.py``), with its reasons.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from videoseal_litert.core.errors import UsageError
from videoseal_litert.models.families import QuantPolicy
from videoseal_litert.models.gate import HEADROOM_DB, Band, Bands, tightened
from videoseal_litert.models.parts import EMBEDDER, EXTRACTOR
from videoseal_litert.models.registry import ModelSpec

# recipe(quantizer, policy, io_int8): configures an ``ai_edge_quantizer.Quantizer`` in place; ``io_int8``
# (IO=int8) asks for integer input and output where the recipe can give them.
Recipe = Callable[[Any, QuantPolicy, bool], None]


def _ops() -> Any:  # ai_edge_quantizer.qtyping.TFLOperationName
    from ai_edge_quantizer import qtyping

    return qtyping.TFLOperationName


def recipe_fp16(q: Any, policy: QuantPolicy, io_int8: bool) -> None:
    """float16 weights everywhere, float32 compute."""
    from ai_edge_quantizer.algorithm_manager import AlgorithmName

    q.add_weight_only_config(".*", _ops().ALL_SUPPORTED, num_bits=16, algorithm_key=AlgorithmName.FLOAT_CASTING)


def recipe_dynamic(q: Any, policy: QuantPolicy, io_int8: bool) -> None:
    """Dynamic-range int8 weights for the policy's ``dynamic`` ops (float activations); ``weight_only``
    ops int8 weights with float compute (XNNPACK does not take a hybrid depthwise conv)."""
    ops = _ops()
    for op in policy.dynamic:
        q.add_dynamic_config(".*", ops[op], num_bits=8)
    for op in policy.weight_only:
        q.add_weight_only_config(".*", ops[op], num_bits=8)


def recipe_static(q: Any, policy: QuantPolicy, io_int8: bool) -> None:
    """Static int8 (per-channel weights, calibrated activations) for the policy's ``static`` ops, the ones
    XNNPACK runs fast in int8; ``weight_only`` ops as in ``recipe_dynamic``; the rest float. Float
    input and output unless ``io_int8``."""
    ops = _ops()
    for op in policy.static:
        q.add_static_config(".*", ops[op], activation_num_bits=8, weight_num_bits=8)
    for op in policy.weight_only:
        q.add_weight_only_config(".*", ops[op], num_bits=8)
    if io_int8:
        for op in (ops.INPUT, ops.OUTPUT):
            q.add_static_config(".*", op, activation_num_bits=8, weight_num_bits=8)


INT4_BLOCK = 32  # XNNPACK's blockwise 4-bit GEMM; a layer whose input width is not a multiple uses per-channel scales
INT4_BLOCKWISE_OPS = ("FULLY_CONNECTED",)  # ai-edge-quantizer 0.10 has blockwise 4-bit for these only (CONV_2D: per channel)
# ai-edge-quantizer's OCTAV clipping (MSE-optimal clip per channel, arXiv 2206.06501) for the per-channel
# 4-bit weights instead of min/max, whose 16 levels a whole row's few tail weights stretch: per-channel
# weight SQNR +2.9 dB on ChunkySeal-size Gaussian layers, +0.2 to +2.1 dB on the tiny pair's trained ones.
# Blocks of 32 keep min/max: on the trained fixture (all blockwise) OCTAV cost 0.7 dB end to end (docs/quantization.md).
INT4_ALGORITHM = "OCTAV"


def weighted_ops(q: Any, op: str) -> list[tuple[str, int]]:
    """(output tensor name, input width) of every ``op`` in the quantizer's float model, from its flatbuffer."""
    from ai_edge_litert import schema_py_generated as schema

    model = q._float_model  # ai-edge-quantizer has no public accessor for the parsed model
    code = getattr(schema.BuiltinOperator, op)
    out = []
    for sg in model.subgraphs:
        for o in sg.operators:
            c = model.operatorCodes[o.opcodeIndex]
            if max(c.builtinCode, c.deprecatedBuiltinCode) == code and len(o.inputs) > 1 and o.inputs[1] >= 0:
                name = sg.tensors[o.outputs[0]].name
                out.append((name.decode() if isinstance(name, bytes) else name, int(sg.tensors[o.inputs[1]].shape[-1])))
    return out


def recipe_int4(q: Any, policy: QuantPolicy, io_int8: bool) -> None:
    """4-bit weights with dynamic int8 activations for each of the policy's ``int4`` ops: blockwise (32
    input channels per scale) where the op has a blockwise kernel and its input width is a multiple of
    32, per output channel otherwise (OCTAV's clip); 8 bits for a layer of odd input width (XNNPACK packs two 4-bit
    weights per byte along the input and leaves such a layer on the builtin kernels: measured on
    chunkyseal-mini's widths 45 and 181). The rest of the ``dynamic`` ops 8-bit, ``weight_only`` ops
    8-bit weights with float compute. One config per op, so none overrides another."""
    from ai_edge_quantizer import qtyping

    ops, gran = _ops(), qtyping.QuantGranularity
    for op in policy.dynamic:
        if op not in policy.int4:
            q.add_dynamic_config(".*", ops[op], num_bits=8)
    for op in policy.int4:
        for name, width in weighted_ops(q, op):
            scope = f"^{re.escape(name)};$"
            if width % 2:
                q.add_dynamic_config(scope, ops[op], num_bits=8)
            elif op in INT4_BLOCKWISE_OPS and width % INT4_BLOCK == 0:
                q.add_dynamic_config(scope, ops[op], num_bits=4, granularity=gran.BLOCKWISE_32)
            else:
                q.add_dynamic_config(scope, ops[op], num_bits=4, granularity=gran.CHANNELWISE, algorithm_key=INT4_ALGORITHM)
    for op in policy.weight_only:
        q.add_weight_only_config(".*", ops[op], num_bits=8)


def recipe_full_integer(q: Any, policy: QuantPolicy, io_int8: bool) -> None:
    """Every op integer with int8 input and output, for NPU/DSP delegates (no CPU speed goal)."""
    from ai_edge_quantizer import recipe

    q.load_quantization_recipe(recipe.static_wi8_ai8())


@dataclass(frozen=True)
class Variant:
    name: str
    recipe: Recipe | None  # None: the float file itself (the tflite stage writes it)
    parts: tuple[str, ...]
    needs_calibration: bool = False
    io_dtype: str = "float32"  # the file's input and output dtype
    # The watermark SNR a file of this variant keeps against PyTorch, per part, for trained and for random
    # weights (the one rule that judges it: ``models/gate.py``); a model's spec may tighten it. None: the
    # bands measured for ``measured_as`` (default: this row's name) in MEASURED.
    bands: Mapping[str, Bands] | None = None
    measured_as: str | None = None
    ships: bool = False  # in a bundle unless VARIANTS= says otherwise
    fallback: bool = False  # the accuracy-driven fallback may keep ops float to reach the band
    # The accuracy control (quantize/control.py) may give op groups more precision to reach its target:
    # "float" (no quantization) or "int8" (8-bit weights instead of 4); None: no control.
    controlled: str | None = None
    default: bool = True  # written by `make quantize` unless VARIANTS= (or the model's spec) says otherwise
    # The bundle's golden-vector tolerance per part, for float arithmetic (another CPU rounds float
    # files to ~1e-5); None: integer arithmetic, about one output step (the bundle derives it).
    golden_atol: Mapping[str, float] | None = None
    summary: str = ""
    bench_order: int | None = None  # where it sits in the benchmark (None: its place in the table)

    def __post_init__(self) -> None:
        if self.bands is None:
            object.__setattr__(self, "bands", {part: _bands(part, self.measured_as or self.name) for part in self.parts})

    def file(self, prefix: str) -> str:
        return f"{prefix}{self.name}.tflite"


# Where each band comes from: the worst watermark SNR (dB) measured on that kind of weights, less
# HEADROOM_DB, by `make quantize` / `make embedder` (every variant) on 2026-12-04 (Intel Xeon, AVX-512
# VNNI, AMX, 2 threads; the figures in each verify-*.json). Trained: the tiny pair and the fixture
# (extractor: both; embedder: the tiny pair's, which the fixture shares); for the extractor's fp32 and
# fp16, whose error is float rounding that grows with a network's depth and width, also the full-size
# extractors with RANDOM_INIT (no trained network of the ViT's or ChunkySeal's size exists here).
# Random: the reference minis (extractor: VideoSeal 1.0, ChunkySeal, VideoSeal 0.0; embedder: VideoSeal
# 1.0, PixelSeal, ChunkySeal, VideoSeal 0.0, each under the embedder's default accuracy control) and, for
# the extractor, the full-size RANDOM_INIT extractors of the three families (quantization noise grows
# with depth: VideoSeal 0.0's int8-dynamic 35.3 dB as a mini, 28.3 dB at full size). All verified on the
# held-out photos; per model: docs/verification.md.
Measured = tuple[tuple[float, str], tuple[float, str]]  # ((trained dB, on what), (random dB, on what))
MEASURED: dict[str, dict[str, Measured]] = {
    EXTRACTOR: {
        # float rounding grows with size: full-size random VideoSeal 0.0 (tiny 129.7, fixture 127.3, ChunkySeal 118.5)
        "fp32": ((115.3, "VideoSeal 0.0 at full size, RANDOM_INIT"), (115.3, "VideoSeal 0.0 at full size")),
        "fp16": ((60.4, "VideoSeal 0.0 at full size, RANDOM_INIT"), (60.4, "VideoSeal 0.0 at full size")),  # tiny 70.6, fixture 77.1
        "int8-dynamic": ((42.0, "tiny"), (28.25, "VideoSeal 0.0 at full size")),  # its mini 35.3
        "int8": ((17.9, "tiny, under its accuracy control"), (20.6, "VideoSeal 1.0 mini")),  # fixture 19.2
        "int8-full": ((16.6, "tiny"), (18.95, "VideoSeal 0.0 at full size")),
        "int4": ((21.0, "tiny"), (11.3, "VideoSeal 0.0 at full size")),  # fixture 29.8; ChunkySeal at full size 11.46
    },
    EMBEDDER: {  # trained: the tiny pair's embedder (the fixture shares it); random U-Nets amplify rounding
        "fp32": ((121.8, "tiny"), (96.6, "ChunkySeal embedder mini")),
        "fp16": ((71.8, "tiny"), (37.5, "PixelSeal embedder mini")),
        "int8": ((35.4, "tiny"), (11.1, "PixelSeal embedder mini, under its accuracy control (all-INT8: 5.1)")),
    },
}
# An embedder's error stays at least this far under the watermark it writes, whatever was measured: at 10 dB
# the error is a third of the watermark's amplitude (issue 31; the embedder's accuracy-control target too).
EMBEDDER_MIN_SNR_DB = 10.0


def _bands(part: str, variant: str) -> Bands:
    """The variant's bands for ``part``: the worst SNR measured on trained and on random weights, each less the
    headroom (an embedder's never under EMBEDDER_MIN_SNR_DB)."""
    least = EMBEDDER_MIN_SNR_DB if part == EMBEDDER else -math.inf

    def band(measured: tuple[float, str], kind: str) -> Band:
        worst, where = measured
        value = round(max(worst - HEADROOM_DB, least), 1)
        why = f"{kind}: worst {worst:g} dB ({where}) less {HEADROOM_DB:g}" + (f", at least {least:g}" if value == least else "")
        return Band(value, why)

    trained, random = MEASURED[part][variant]
    return Bands(trained=band(trained, "trained weights"), random=band(random, "random weights"))


BOTH = (EXTRACTOR, EMBEDDER)
VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("fp32", None, BOTH, ships=True, golden_atol={EXTRACTOR: 1e-3, EMBEDDER: 1e-4}, summary="float32, the converter's output"),
        Variant(
            "fp16", recipe_fp16, BOTH, ships=True, golden_atol={EXTRACTOR: 2e-3, EMBEDDER: 1e-3}, summary="float16 weights, float32 compute"
        ),
        Variant("int8-dynamic", recipe_dynamic, (EXTRACTOR,), summary="dynamic-range int8 weights, float activations"),
        Variant(
            "int8",
            recipe_static,
            BOTH,
            needs_calibration=True,
            ships=True,
            fallback=True,
            controlled="float",
            summary="static int8 on the family's fast ops, calibrated; the rest float",
        ),
        Variant(
            "int8-full",
            recipe_full_integer,
            (EXTRACTOR,),
            needs_calibration=True,
            io_dtype="int8",
            summary="every op integer, int8 input and output (NPU/DSP delegates)",
        ),
        Variant(
            "int4",
            recipe_int4,
            (EXTRACTOR,),
            default=False,
            summary="4-bit weights (blockwise 32) for the pointwise layers, dynamic int8 activations; 8-bit elsewhere",
        ),
        # The same band as int4: the control only adds precision to an int4 file.
        Variant(
            "int4-mixed",
            recipe_int4,
            (EXTRACTOR,),
            measured_as="int4",
            controlled="int8",
            default=False,
            summary="int4 where the accuracy control allows, 8-bit weights for the op groups it needs",
        ),
    )
}


def variant(name: str, part: str | None = None) -> Variant:
    """The row named ``name`` (applying to ``part`` when given), or UsageError with the known names."""
    v = VARIANTS.get(name)
    if v is None:
        raise UsageError(f"unknown variant {name!r}; choose from {', '.join(names(part))}")
    if part is not None and part not in v.parts:
        raise UsageError(f"variant {name!r} does not apply to the {part}; for the {part}: {', '.join(names(part))}")
    return v


def names(part: str | None = None) -> list[str]:
    """Variant names in benchmark order (those applying to ``part`` when given)."""
    place = {name: i for i, name in enumerate(VARIANTS)}
    rows = sorted(VARIANTS.values(), key=lambda v: place[v.name] if v.bench_order is None else v.bench_order)
    return [v.name for v in rows if part is None or part in v.parts]


def quantized(part: str) -> tuple[str, ...]:
    """The variants of ``part`` made from the float file by default (all but fp32 and the opt-in
    rows), in benchmark order."""
    return tuple(n for n in names(part) if VARIANTS[n].recipe is not None and VARIANTS[n].default)


def band_for(spec: ModelSpec, part: str, row: Variant, random_init: bool) -> Band:
    """The band one file of ``row`` is judged by: this table's for the part and the kind of weights, or the
    model's spec's own where it is stricter (BandError where it would be looser)."""
    default = row.bands[part].pick(random_init)
    return tightened(default, spec.bands.get(part, {}).get(row.name), f"{spec.name} {part} {row.name}")


def default_variants(spec: ModelSpec, part: str) -> tuple[str, ...]:
    """The quantized variants ``make quantize`` writes for ``part`` of this model by default."""
    return tuple(spec.variants.get(part, quantized(part)))


def parse(spec: str | None, part: str) -> tuple[str, ...] | None:
    """A comma-separated list from the command line, each checked against the table; None when not given."""
    if spec is None:
        return None
    chosen = tuple(dict.fromkeys(v.strip() for v in spec.split(",") if v.strip()))
    if not chosen:
        raise UsageError(f"no variant given; choose from {', '.join(names(part))}")
    for n in chosen:
        variant(n, part)
    return chosen
