"""Files made worse on purpose, for the rule's tests: a reviewer's edits of a verified ``.tflite``.

Each takes a file and writes a copy with one change: the last layer's mask bias moved (every clean photo
flagged), one bit's weights negated (that bit inverted on every image), the stem's weights sign-flipped, or
activation ranges calibrated on one flat grey image. What each does to the decisions follows from the edit
itself, not from the rule's output."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np


def _edit_op(src: Path, dst: Path, op_name: str, which: str, edit: Callable[[np.ndarray], np.ndarray]) -> str:
    """Apply ``edit`` to the constant weights (input 1) or bias (input 2) of the ``which`` ("first"/"last")
    ``op_name`` op that has them as float32, int8 or float16 buffers; write ``dst``. Returns the op's output name."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    from videoseal_litert.convert.tflite import as_numpy_buffers

    model = flatbuffer_utils.read_model(str(src))
    as_numpy_buffers(model)
    sg = model.subgraphs[0]
    code = getattr(schema.BuiltinOperator, op_name)
    dtypes = {
        schema.TensorType.INT8: np.int8,
        schema.TensorType.INT32: np.int32,
        schema.TensorType.FLOAT32: np.float32,
        schema.TensorType.FLOAT16: np.float16,
    }
    ops = [
        o
        for o in sg.operators
        if max(model.operatorCodes[o.opcodeIndex].builtinCode, model.operatorCodes[o.opcodeIndex].deprecatedBuiltinCode) == code
    ]
    for op in ops if which == "first" else reversed(ops):
        t = sg.tensors[op.inputs[1 if which_input(edit) == "weights" else 2]]
        buf = model.buffers[t.buffer]
        if buf.data is None or t.type not in dtypes:
            continue  # computed in the graph (a DEQUANTIZE output): not this layer
        x = np.frombuffer(buf.data.tobytes(), dtype=dtypes[t.type]).reshape(t.shape).copy()
        scales = None if t.quantization is None or t.quantization.scale is None else np.asarray(t.quantization.scale, np.float64)
        y = edit(x, scales) if getattr(edit, "takes_scales", False) else edit(x)
        buf.data = np.frombuffer(y.astype(dtypes[t.type]).tobytes(), dtype=np.uint8)
        flatbuffer_utils.write_model(model, str(dst))
        name = sg.tensors[op.outputs[0]].name
        return name.decode() if isinstance(name, bytes) else name
    raise AssertionError(f"{src}: no {op_name} with constant {which_input(edit)}")


def which_input(edit: Callable) -> str:
    return getattr(edit, "input", "weights")


def _on(input_: str, fn: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    fn.input = input_  # type: ignore[attr-defined]
    return fn


def shift_mask_bias(src: Path, dst: Path, delta: float) -> None:
    """The last FULLY_CONNECTED's bias of output 0 (the mask logit) moved by ``delta`` logits: in float, or in the
    int32 bias's own scale where the head is quantized (input scale x the row's weight scale)."""

    def edit(b: np.ndarray, scales: np.ndarray | None) -> np.ndarray:
        if np.issubdtype(b.dtype, np.integer):
            assert scales is not None and len(scales), "a quantized bias without its scale"
            b[0] += int(round(delta / float(scales[0])))
        else:
            b[0] += delta
        return b

    edit.takes_scales = True  # type: ignore[attr-defined]
    _edit_op(src, dst, "FULLY_CONNECTED", "last", _on("bias", edit))


def negate_bit(src: Path, dst: Path, bit: int) -> None:
    """Bit ``bit``'s row of the last FULLY_CONNECTED (weights and bias) negated: its logit inverted on every image."""
    _edit_op(src, dst, "FULLY_CONNECTED", "last", _on("weights", lambda w: _negate_row(w, 1 + bit)))
    _edit_op(dst, dst, "FULLY_CONNECTED", "last", _on("bias", lambda b: _negate_row(b, 1 + bit)))


def _negate_row(x: np.ndarray, row: int) -> np.ndarray:
    x[row] = -x[row] if x.dtype != np.int8 else np.clip(-x[row].astype(np.int16), -127, 127)  # int32 biases negate as is
    return x


def negate_first_conv(src: Path, dst: Path) -> str:
    """The first CONV_2D's weights (the stem) with their signs flipped. Returns the op's output tensor name."""
    return _edit_op(src, dst, "CONV_2D", "first", _on("weights", lambda w: _negate_row(w[None], 0)[0]))


def grey_calibrated(part: object, fp32: Path, dst: Path, variant: str = "int8") -> None:
    """``fp32`` quantized as ``variant`` with the activation ranges of one flat grey image (and a random message
    for an embedder): the same recipe, calibrated on nothing like a photo."""
    from videoseal_litert.models.variants import VARIANTS
    from videoseal_litert.quantize.calibrate import calibrate, pin_input_ranges
    from videoseal_litert.quantize.quantize_stage import quantize_to
    from videoseal_litert.quantize.recipes import calibration_quantizer

    size = part.size  # type: ignore[attr-defined]
    x = {"image": np.full((1, size, size, 3), 0.5, np.float32)}
    if part.name == "embedder":  # type: ignore[attr-defined]
        x["message"] = np.random.default_rng(0).integers(0, 2, (1, part.nbits)).astype(np.float32)  # type: ignore[attr-defined]
    qsvs, _ = calibrate(calibration_quantizer(str(fp32)), [x], 1)
    qsvs = pin_input_ranges(fp32, qsvs, part.contract)  # type: ignore[attr-defined]
    quantize_to(fp32, dst, VARIANTS[variant], qsvs, [], False, part.family.quant)  # type: ignore[attr-defined]
