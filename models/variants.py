"""The variants table: every file kind the pipeline writes, one row each (as ultralytics' ``export_formats()``).

A row says what a variant is for every stage: the recipe that makes it from the float file (an
ai-edge-quantizer configuration; ``None`` for ``fp32``, which the converter writes), whether it needs
calibration, its input/output dtype, where it sits in the benchmark, which parts (extractor,
embedder) it applies to, its precision (which floor of ``FLOORS`` the one rule of ``models/gate.py`` holds its
files to; a model's card may raise it), whether a bundle ships it by default, and whether the
accuracy-driven fallback may keep ops float until it passes the rule. Adding a variant is one row and, unless an
existing recipe fits, one recipe function; every stage reads this table.

Which ops a recipe touches is the family's ``QuantPolicy`` (``models/families.py``), with its reasons.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from videoseal_litert.core.errors import UsageError
from videoseal_litert.models.contracts import EMBEDDER, EXTRACTOR
from videoseal_litert.models.families import QuantPolicy
from videoseal_litert.models.gate import CLEAR_FRACTION, Floor, Rule
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
    # Which floor of FLOORS judges its groups: "fp32", "fp16" or "quantized" (any integer arithmetic).
    precision: str = "quantized"
    ships: bool = False  # in a bundle unless VARIANTS= says otherwise
    fallback: bool = False  # the accuracy-driven fallback may keep ops float until the file passes the rule
    # The accuracy control (quantize/control.py) may give op groups more precision to reach its target:
    # "float" (no quantization) or "int8" (8-bit weights instead of 4); None: no control.
    controlled: str | None = None
    default: bool = True  # written by `make quantize` unless VARIANTS= (or the model's spec) says otherwise
    summary: str = ""
    bench_order: int | None = None  # where it sits in the benchmark (None: its place in the table)

    def floor(self, part: str) -> Floor:
        """The SNR floor this row's files of ``part`` are held to (before a card raises it)."""
        return FLOORS[part][self.precision]


# The rule's SNR floors (dB) of a group against PyTorch (models/gate.py), by part and by what a variant's
# arithmetic is: constants with their reasons, none derived from this project's own files. A card may raise a
# floor (``verification: floors:``), never lower it (FloorError).
FLOORS: dict[str, dict[str, Floor]] = {
    EXTRACTOR: {
        "fp32": Floor(
            80.0,
            "float32 errs by rounding alone (over 110 dB on every model here); 80 dB still fails an error a ten-thousandth of the decisions' RMS",
        ),
        "fp16": Floor(
            40.0, "float16 weights keep 11 significant bits (about 66 dB); 40 dB leaves the error a hundredth of the decisions' RMS"
        ),
        "quantized": Floor(
            12.0, "at 12 dB the quantization noise is a quarter of S, so a clear decision (|PyTorch| > S/2) lies two noise RMS from zero"
        ),
    },
    EMBEDDER: {
        "fp32": Floor(80.0, "float32 rounding, as the extractor's: far under any watermark"),
        "fp16": Floor(
            30.0,
            "float16 through U-Nets whose norms amplify rounding (a random PixelSeal mini's FP16 measured 37.5 dB); 30 dB keeps the error a thirtieth of the watermark's amplitude",
        ),
        "quantized": Floor(
            10.0,
            "at 10 dB the error is a third of the watermark's amplitude; what it does to the message is judged by the decoded bits' flips",
        ),
    },
}


class FloorError(UsageError):
    """A card or spec that would loosen the rule: lower a floor, or raise the clear fraction."""


BOTH = (EXTRACTOR, EMBEDDER)
VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant(
            "fp32",
            None,
            BOTH,
            precision="fp32",
            ships=True,
            summary="float32, the converter's output",
        ),
        Variant(
            "fp16",
            recipe_fp16,
            BOTH,
            precision="fp16",
            ships=True,
            summary="float16 weights, float32 compute",
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
        Variant(
            "int4-mixed",
            recipe_int4,
            (EXTRACTOR,),
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


def rule_for(spec: ModelSpec, part: str, row: Variant | None = None, precision: str | None = None) -> Rule:
    """The rule one file is judged by: the floor of its row (or, for a file made elsewhere, of its ``precision``:
    "fp32", "fp16" or "quantized") for the part, raised where the model's card or spec raises it (for a file made
    elsewhere: the highest raise among the rows of its precision); the clear fraction, lowered where they lower
    it; detection gated unless the card says the mask head was not trained. FloorError where a card or spec
    would loosen the rule."""
    if row is None and precision is None:
        raise ValueError("rule_for: give a row or a precision")
    rows = [row] if row is not None else [v for v in VARIANTS.values() if v.precision == precision and part in v.parts]
    floor = FLOORS[part][row.precision if row is not None else str(precision)]
    v = spec.verification
    for r in rows:
        own = v.floors.get(part, {}).get(r.name)
        if own is None:
            continue
        if own < FLOORS[part][r.precision].snr_db:
            raise FloorError(
                f"{spec.name} {part} {r.name}: the card's floor {own:g} dB is under the rule's {FLOORS[part][r.precision].snr_db:g} dB "
                f"({FLOORS[part][r.precision].why}); a card may raise a floor, never lower it"
            )
        if own > floor.snr_db:
            floor = Floor(own, f"raised by {spec.name}'s card from {FLOORS[part][r.precision].snr_db:g} dB")
    if v.clear_fraction > CLEAR_FRACTION:
        raise FloorError(
            f"{spec.name}: the card's clear fraction {v.clear_fraction:g} is over the rule's {CLEAR_FRACTION:g}; a card may lower it "
            "(more decisions count as clear), never raise it"
        )
    return Rule(floor, v.clear_fraction, detection_gated=v.mask_trained)


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
