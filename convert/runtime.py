"""Run a ``.tflite`` extractor with the LiteRT interpreter (``ai_edge_litert``), any variant.

Integer inputs and outputs are quantized and dequantized with the scale and zero point in the
tensor details, so every variant takes the same float image in [0, 1] and returns float logits.
Outputs are found by name (``models.families.OUTPUT_NAMES``), not by position.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from videoseal_litert.models.errors import ArtifactCorruptError
from videoseal_litert.models.families import OUTPUT_NAMES


def open_interpreter(path: str | Path, **kwargs):
    """``ai_edge_litert`` Interpreter with its tensors allocated, or ArtifactCorruptError naming the file."""
    from ai_edge_litert.interpreter import Interpreter

    path = Path(path)
    if not path.is_file():
        raise ArtifactCorruptError(f"{path} does not exist")
    try:
        it = Interpreter(model_path=str(path), **kwargs)
        it.allocate_tensors()
    except (ValueError, RuntimeError) as e:
        raise ArtifactCorruptError(
            f"{path} is not a readable TFLite model ({str(e).strip().splitlines()[0][:200]}); "
            "truncated or corrupted? Rerun the stage that writes it (`make convert` or `make quantize`)"
        ) from e
    return it


class TFLiteExtractor:
    """One interpreter, created once; call with an NHWC (1, H, W, 3) float image in [0, 1]."""

    def __init__(self, path: str | Path, num_threads: int = 2, use_xnnpack: bool = True) -> None:
        from ai_edge_litert.interpreter import OpResolverType

        resolver = OpResolverType.AUTO if use_xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        self.path = Path(path)
        self.interpreter = open_interpreter(path, num_threads=num_threads, experimental_op_resolver_type=resolver)
        self.input = self.interpreter.get_input_details()[0]
        outs = self.interpreter.get_output_details()
        self.outputs = {}
        for key in OUTPUT_NAMES:
            match = [d for d in outs if key in d["name"]]
            if len(match) != 1:
                raise ArtifactCorruptError(
                    f"{path}: expected one output named like '{key}', found {[d['name'] for d in outs]}: not an extractor this pipeline wrote"
                )
            self.outputs[key] = match[0]

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.input["shape"])

    def _quantize_input(self, x: np.ndarray) -> np.ndarray:
        dtype = self.input["dtype"]
        if dtype == np.float32:
            return x.astype(np.float32)
        scale, zp = self.input["quantization"]
        info = np.iinfo(dtype)
        return np.clip(np.round(x / scale + zp), info.min, info.max).astype(dtype)

    def _dequantize(self, detail: dict, y: np.ndarray) -> np.ndarray:
        if detail["dtype"] == np.float32:
            return y.astype(np.float32)
        scale, zp = detail["quantization"]
        return ((y.astype(np.float32) - zp) * scale).astype(np.float32)

    def __call__(self, image_nhwc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.interpreter.set_tensor(self.input["index"], self._quantize_input(image_nhwc))
        self.interpreter.invoke()
        mask, bits = (self._dequantize(self.outputs[k], self.interpreter.get_tensor(self.outputs[k]["index"])) for k in OUTPUT_NAMES)
        return mask, bits


def delegation_report(path: str | Path, num_threads: int = 2) -> dict:
    """Which ops XNNPACK takes and which run on the interpreter's own kernels.

    The interpreter lists the model's original ops followed by one DELEGATE node per partition.
    An op belongs to a partition when it lies between that partition's inputs and outputs:
    walking back from the DELEGATE node's outputs through producers, stopping at its inputs.
    Ops in no partition run on the builtin kernels (often single-threaded, slow for INT8).
    """
    it = open_interpreter(path, num_threads=num_threads)
    ops = it._get_ops_details()
    original = [o for o in ops if o["op_name"] != "DELEGATE"]
    delegates = [o for o in ops if o["op_name"] == "DELEGATE"]
    producer = {int(t): o["index"] for o in original for t in o["outputs"]}
    by_index = {o["index"]: o for o in original}
    delegated: set[int] = set()
    for d in delegates:
        stop = {int(t) for t in d["inputs"]}
        stack = [int(t) for t in d["outputs"]]
        seen: set[int] = set()
        while stack:
            t = stack.pop()
            if t in seen or t in stop or t not in producer:
                continue
            seen.add(t)
            op = producer[t]
            if op in delegated:
                continue
            delegated.add(op)
            stack.extend(int(i) for i in by_index[op]["inputs"] if i >= 0)
    tensors = {d["index"]: d for d in it.get_tensor_details()}
    rest = []
    for o in original:
        if o["index"] in delegated:
            continue
        dtypes = sorted(
            {np.dtype(tensors[int(t)]["dtype"]).name for t in list(o["inputs"]) + list(o["outputs"]) if t >= 0 and int(t) in tensors}
        )
        rest.append({"index": o["index"], "op": o["op_name"], "dtypes": dtypes, "output": tensors[int(o["outputs"][0])]["name"]})
    counts: dict[str, int] = {}
    for o in original:
        counts[o["op_name"]] = counts.get(o["op_name"], 0) + 1
    return {
        "num_ops": len(original),
        "num_partitions": len(delegates),
        "num_delegated": len(delegated),
        "num_not_delegated": len(rest),
        "not_delegated": rest,
        "op_counts": dict(sorted(counts.items(), key=lambda kv: -kv[1])),
    }
