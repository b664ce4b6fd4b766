"""Quantization recipes for the four variants, as ai-edge-quantizer recipes.

Which ops run integer is the family's INT8 policy (``models.families.Int8Policy``, with its
reasons; for ConvNeXt see README, "INT8 on the fast path"):

- ``int8``: static INT8 (int8 weights per channel, calibrated int8 activations) for the policy's
  ``static`` ops, the ones XNNPACK runs fast in INT8; ``weight_only`` ops store int8 weights and
  compute in float; everything else computes in float. Input and output stay float32 unless
  ``io_int8``.
- ``int8-full``: every op integer with int8 input and output (for NPU/DSP delegates); no CPU
  speed goal.
- ``int8-dynamic``: dynamic-range INT8 weights, float activations, for the policy's ``dynamic``
  ops; ``weight_only`` ops as in ``int8`` (XNNPACK does not take a hybrid depthwise conv).
- ``fp16``: float16 weights, float32 compute.

``keep_float`` names op output tensors (regexes matched with ``re.search``, as the quantizer
does) that must stay float: the accuracy-driven fallback adds to it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from videoseal_litert.models.errors import UsageError
from videoseal_litert.models.families import Int8Policy

VARIANTS = ("int8", "int8-full", "int8-dynamic", "fp16")


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

    def uniform_quantize(tensor_data, quantization_params, *args, **kwargs):
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


def build_quantizer(float_path: str, variant: str, policy: Int8Policy | None = None, keep_float: Iterable[str] = (), io_int8: bool = False):
    """A configured ``ai_edge_quantizer.Quantizer`` for one variant; ``int8`` and ``int8-dynamic``
    need the family's ``policy``."""
    from ai_edge_quantizer import qtyping, quantizer, recipe

    _patch_large_conv_weights()
    from ai_edge_quantizer.algorithm_manager import AlgorithmName

    ops = qtyping.TFLOperationName
    q = quantizer.Quantizer(float_path)
    if variant in ("int8", "int8-dynamic") and policy is None:
        raise UsageError(f"variant {variant} needs the model family's INT8 policy")
    if variant == "int8":
        for op in policy.static:
            q.add_static_config(".*", ops[op], activation_num_bits=8, weight_num_bits=8)
        for op in policy.weight_only:
            q.add_weight_only_config(".*", ops[op], num_bits=8)
        if io_int8:
            for op in (ops.INPUT, ops.OUTPUT):
                q.add_static_config(".*", op, activation_num_bits=8, weight_num_bits=8)
    elif variant == "int8-full":
        q.load_quantization_recipe(recipe.static_wi8_ai8())
    elif variant == "int8-dynamic":
        for op in policy.dynamic:
            q.add_dynamic_config(".*", ops[op], num_bits=8)
        for op in policy.weight_only:
            q.add_weight_only_config(".*", ops[op], num_bits=8)
    elif variant == "fp16":
        q.add_weight_only_config(".*", ops.ALL_SUPPORTED, num_bits=16, algorithm_key=AlgorithmName.FLOAT_CASTING)
    else:
        raise UsageError(f"unknown variant {variant!r}; known: {', '.join(VARIANTS)}")
    for pattern in keep_float:
        # ai-edge-quantizer matches the op scope: its output tensor names joined and ended with ";".
        q.update_quantization_recipe(f"^{re.escape(pattern)};$", ops.ALL_SUPPORTED, algorithm_key=AlgorithmName.NO_QUANTIZE)
    return q
