"""Build an ai-edge-quantizer ``Quantizer`` for one row of the variants table (``models/variants.py``).

The table's recipe function configures it with the family's ``QuantPolicy``; ``keep_float`` names
op output tensors that get more precision than the recipe gives them: float, or 8-bit weights for a
4-bit row (its ``controlled``); the accuracy control and the fallback add to it. Also here: a workaround for a quantizer bug on large
per-channel convolution weights.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from videoseal_litert.core.errors import UsageError
from videoseal_litert.models.families import QuantPolicy
from videoseal_litert.models.variants import Variant

_CHUNK_BYTES = 16 * 2**20


def _patch_large_conv_weights() -> None:
    """Work around ai-edge-quantizer 0.10 failing on per-channel 4-D weights over 32 MiB.

    For such tensors ``uniform_quantize`` reshapes the weight to 2-D and broadcasts the
    (out, 1, 1, 1) scales to it, which numpy refuses ("input operand has more dimensions than allowed
    by the axis remapping"); ChunkySeal's 2x2 downsampling and 3x3 decoder convs are that big. Per
    output channel the quantization is independent, so the tensor is quantized in slices along
    axis 0 (each under the limit) with the matching slices of scale and zero point, and joined.
    Same numbers as an unchunked run (tests/test_quantize.py::test_large_conv_weight_quantizes_by_slices).
    """
    import dataclasses

    import numpy as np
    from ai_edge_quantizer.algorithms.uniform_quantize import uniform_quantize_tensor as uqt

    if getattr(uqt.uniform_quantize, "_by_output_channel", False):
        return
    original = uqt.uniform_quantize

    def uniform_quantize(tensor_data: np.ndarray, quantization_params: Any, *args: Any, **kwargs: Any) -> np.ndarray:
        scale = np.asarray(quantization_params.scale)
        zp = np.asarray(quantization_params.zero_point)
        per_out_channel = (
            tensor_data.ndim > 2
            and scale.ndim == tensor_data.ndim
            and scale.shape[0] == tensor_data.shape[0] > 1
            and all(d == 1 for d in scale.shape[1:])
            and zp.shape == scale.shape
        )
        if not per_out_channel or tensor_data.nbytes <= 32 * 2**20:
            return original(tensor_data, quantization_params, *args, **kwargs)
        step = max(1, _CHUNK_BYTES // max(1, tensor_data[0].nbytes))
        parts = []
        for i in range(0, tensor_data.shape[0], step):
            sub = dataclasses.replace(quantization_params, scale=scale[i : i + step], zero_point=zp[i : i + step])
            parts.append(original(tensor_data[i : i + step], sub, *args, **kwargs))
        return np.concatenate(parts, axis=0)

    uniform_quantize._by_output_channel = True
    uqt.uniform_quantize = uniform_quantize


def build_quantizer(
    float_path: str, row: Variant, policy: QuantPolicy | None = None, keep_float: Iterable[str] = (), io_int8: bool = False
) -> Any:  # ai_edge_quantizer.quantizer.Quantizer
    """A configured ``ai_edge_quantizer.Quantizer`` for the variant ``row`` with the family's ``policy``."""
    from ai_edge_quantizer import qtyping, quantizer
    from ai_edge_quantizer.algorithm_manager import AlgorithmName

    _patch_large_conv_weights()
    if row.recipe is None:
        raise UsageError(f"variant {row.name!r} is the converter's float output, not made by quantization")
    policy = policy or QuantPolicy(static=(), dynamic=())
    q = quantizer.Quantizer(float_path)
    row.recipe(q, policy, io_int8)
    for pattern in keep_float:
        # ai-edge-quantizer matches the op scope: its output tensor names joined and ended with ";".
        scope = f"^{re.escape(pattern)};$"
        if row.controlled == "int8":  # more precision for a 4-bit row: 8-bit weights
            for op in policy.int4:
                q.add_dynamic_config(scope, qtyping.TFLOperationName[op], num_bits=8)
        else:
            q.update_quantization_recipe(scope, qtyping.TFLOperationName.ALL_SUPPORTED, algorithm_key=AlgorithmName.NO_QUANTIZE)
    return q


def calibration_quantizer(float_path: str) -> Any:  # ai_edge_quantizer.quantizer.Quantizer
    """A quantizer whose recipe covers every op, so that one calibration serves every variant."""
    from ai_edge_quantizer import quantizer, recipe

    _patch_large_conv_weights()
    q = quantizer.Quantizer(float_path)
    q.load_quantization_recipe(recipe.static_wi8_ai8())
    return q
