"""Run a ``.tflite`` file by the names in its signature, with the LiteRT interpreter. Needs only numpy and ai-edge-litert.

:class:`NativeRunner` runs the same file through the LiteRT C library instead (``native/litert_run.c``,
the route an Android or Linux app links), one process per call, with the same names and float arrays.

The one place an interpreter is built: the pipeline's runner seam (``runtime/runners.py``) and the
bundle's torch-free scripts (``run_extractor.py``, ``run_embedder.py``, which ship this file beside
them) both use :class:`LiteRTRunner`. Inputs and outputs are found by their signature names, never
by position; an integer input or output is quantized and dequantized with the scale and zero point
the file records, so every variant takes and returns the same float arrays.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

METADATA_NAME = "videoseal_extractor"  # the JSON description a bundle embeds in each file


class ModelFileError(ValueError):
    """The file does not exist or is not a LiteRT model the interpreter can read."""


def _io_name(detail: dict[str, Any]) -> str:
    """A tensor name as a signature name, for a file without signatures (``serving_default_image:0`` -> ``image``)."""
    return detail["name"].removeprefix("serving_default_").split(":")[0]


class LiteRTRunner:
    """One interpreter over one file; ``runner({"image": x, ...})`` returns ``{"mask_logit": ..., ...}``."""

    def __init__(self, path: str | Path, num_threads: int = 2, use_xnnpack: bool = True, keep_all_tensors: bool = False) -> None:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        self.path = Path(path)
        if not self.path.is_file():
            raise ModelFileError(f"{self.path} does not exist")
        resolver = OpResolverType.AUTO if use_xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        try:
            self.interpreter = Interpreter(
                model_path=str(self.path),
                num_threads=num_threads,
                experimental_op_resolver_type=resolver,
                experimental_preserve_all_tensors=keep_all_tensors,
            )
            self.interpreter.allocate_tensors()
            signatures = self.interpreter.get_signature_list()
        except (ValueError, RuntimeError) as e:
            raise ModelFileError(f"{self.path} is not a readable LiteRT model ({str(e).strip().splitlines()[0][:200]})") from e
        if signatures:
            # The signature gives the names; tensors are set and read on the interpreter itself (the
            # signature runner resizes and re-allocates on every call).
            sig = self.interpreter.get_signature_runner("serving_default" if "serving_default" in signatures else next(iter(signatures)))
            self.inputs = sig.get_input_details()
            self.outputs = sig.get_output_details()
        else:
            self.inputs = {_io_name(d): d for d in self.interpreter.get_input_details()}
            self.outputs = {_io_name(d): d for d in self.interpreter.get_output_details()}

    def op_outputs(self) -> dict[str, np.ndarray]:
        """After a call: every op's output tensor by name, as float (integer tensors dequantized); needs
        ``keep_all_tensors`` (and no XNNPACK, which keeps only its partitions' outputs)."""
        names = {d["index"]: d for d in self.interpreter.get_tensor_details()}
        out = {}
        for o in self.interpreter._get_ops_details():
            for t in o["outputs"]:
                d = names.get(int(t))
                if d is not None and np.dtype(d["dtype"]) in (np.float32, np.int8, np.int16, np.uint8):
                    out[d["name"]] = dequantize(d, self.interpreter.get_tensor(int(t)))
        return out

    @property
    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        return {n: tuple(int(s) for s in d["shape"]) for n, d in self.inputs.items()}

    @property
    def output_shapes(self) -> dict[str, tuple[int, ...]]:
        return {n: tuple(int(s) for s in d["shape"]) for n, d in self.outputs.items()}

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if set(inputs) != set(self.inputs):
            raise ValueError(f"{self.path.name} takes inputs {sorted(self.inputs)}, got {sorted(inputs)}")
        for name, x in inputs.items():
            self.interpreter.set_tensor(self.inputs[name]["index"], quantize(self.inputs[name], np.asarray(x)))
        self.interpreter.invoke()
        return {n: dequantize(d, self.interpreter.get_tensor(d["index"])) for n, d in self.outputs.items()}

    def io(self) -> dict[str, list[dict[str, Any]]]:
        """Each input's and output's name, dtype, and scale and zero point when it is an integer tensor."""

        def one(name: str, d: dict[str, Any]) -> dict[str, Any]:
            out: dict[str, Any] = {"name": name, "dtype": np.dtype(d["dtype"]).name}
            scale, zp = d["quantization"]
            if scale:
                out.update(scale=float(scale), zero_point=int(zp))
            return out

        return {"inputs": [one(n, d) for n, d in self.inputs.items()], "outputs": [one(n, d) for n, d in self.outputs.items()]}

    def delegation(self) -> dict[str, Any]:
        """Which ops XNNPACK takes and which run on the interpreter's own kernels.

        The interpreter lists the model's original ops followed by one DELEGATE node per partition.
        An op belongs to a partition when it lies between that partition's inputs and outputs:
        walking back from the DELEGATE node's outputs through producers, stopping at its inputs.
        Ops in no partition run on the builtin kernels (often single-threaded, slow for INT8).
        """
        ops = self.interpreter._get_ops_details()
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
        tensors = {d["index"]: d for d in self.interpreter.get_tensor_details()}
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

    def op_of_tensor(self) -> dict[str, str]:
        """Each op output tensor's name -> the op that writes it (for per-op error reports)."""
        names = {d["index"]: d["name"] for d in self.interpreter.get_tensor_details()}
        return {names[int(t)]: o["op_name"] for o in self.interpreter._get_ops_details() for t in o["outputs"] if int(t) in names}


class NativeRunnerError(RuntimeError):
    """The native runner refused the file or its inputs (its own message), or could not be started."""


class NativeRunner:
    """``runner({"image": x, ...})`` through the ``litert_run`` C program (``native/litert_run.c``).

    ``command`` starts it (its path, or an emulator line before it); ``env`` is added to the environment
    (``LD_LIBRARY_PATH`` and ``QEMU_CPU`` for an emulated ARM64 run). Tensors travel as float32 files;
    integer inputs and outputs are quantized by the C program with the file's own scale and zero point.
    ``last_run_ms`` holds the milliseconds of each run of the last call (``runs`` > 1 repeats the run)."""

    def __init__(self, path: str | Path, command: Sequence[str], env: Mapping[str, str] | None = None) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise ModelFileError(f"{self.path} does not exist")
        self.command, self.env = list(command), {**os.environ, **(env or {})}
        info = self._run([str(self.path.resolve()), "--info"])
        self.inputs = {d["name"]: d for d in info["inputs"]}
        self.outputs = {d["name"]: d for d in info["outputs"]}
        self.last_run_ms: list[float] = []

    def _run(self, args: list[str]) -> dict[str, Any]:
        try:
            r = subprocess.run([*self.command, *args], capture_output=True, text=True, env=self.env, timeout=1800)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise NativeRunnerError(f"cannot run {' '.join(self.command)}: {e}") from e
        if r.returncode != 0:
            why = [ln for ln in r.stderr.splitlines() if ln.startswith("litert_run:")] or r.stderr.strip().splitlines()[-1:]
            if r.returncode == 3 and "--info" in args:
                raise ModelFileError(f"{self.path} is not a model the LiteRT C library can run ({' '.join(why)[:300]})")
            raise NativeRunnerError(f"{self.path.name}: the native runner exited with {r.returncode}: {' '.join(why)[:300]}")
        return json.loads(r.stdout.strip().splitlines()[-1])

    @property
    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        return {n: tuple(d["shape"]) for n, d in self.inputs.items()}

    @property
    def output_shapes(self) -> dict[str, tuple[int, ...]]:
        return {n: tuple(d["shape"]) for n, d in self.outputs.items()}

    def __call__(self, inputs: Mapping[str, np.ndarray], runs: int = 1) -> dict[str, np.ndarray]:
        if set(inputs) != set(self.inputs):
            raise ValueError(f"{self.path.name} takes inputs {sorted(self.inputs)}, got {sorted(inputs)}")
        with tempfile.TemporaryDirectory(prefix="litert-run-") as tmp:
            for name, x in inputs.items():
                np.ascontiguousarray(x, dtype="<f4").tofile(os.path.join(tmp, f"{name}.f32"))
            info = self._run([str(self.path.resolve()), tmp, tmp, str(runs)])
            self.last_run_ms = [float(t) for t in info["run_ms"]]
            return {
                n: np.fromfile(os.path.join(tmp, f"{n}.f32"), dtype="<f4").reshape(self.output_shapes[n]).astype(np.float32)
                for n in self.outputs
            }


def open_file(path: str | Path, num_threads: int = 2, native: Sequence[str] | None = None) -> LiteRTRunner | NativeRunner:
    """The Python interpreter's runner, or with ``native`` (the command that starts ``litert_run``) the C library's."""
    return NativeRunner(path, native) if native else LiteRTRunner(path, num_threads)


def quantize(detail: dict[str, Any], x: np.ndarray) -> np.ndarray:
    """``x`` as the tensor's dtype: float as is, integers with the tensor's scale and zero point."""
    dtype = np.dtype(detail["dtype"])
    if dtype == np.float32:
        return x.astype(np.float32, copy=False)
    scale, zp = detail["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale + zp), info.min, info.max).astype(dtype)


def dequantize(detail: dict[str, Any], y: np.ndarray) -> np.ndarray:
    if np.dtype(detail["dtype"]) == np.float32:
        return y.astype(np.float32, copy=True)
    scale, zp = detail["quantization"]
    return ((y.astype(np.float32) - zp) * scale).astype(np.float32)


def unverified_files(bundle: str | Path, part: str) -> list[str]:
    """The ``part``'s files a bundle's ``model.json`` marks as not verified (shipped with --allow-unverified): a
    self-test refuses them, as every command of the pipeline refuses a file whose sha256 is not the verified one."""
    model = json.loads((Path(bundle) / "model.json").read_text())
    files = model["variants"] if part == "extractor" else (model.get("embedder") or {}).get("variants", {})
    return [
        f"{v['file']}: not verified ({v.get('UNVERIFIED', 'no verified sha256')})" for v in files.values() if not v.get("verified_sha256")
    ]


def read_metadata(path: str | Path, name: str = METADATA_NAME) -> dict | None:
    """The JSON description embedded in a ``.tflite`` under ``name``, or None."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(Path(path).read_bytes(), 0)
    for i in range(model.MetadataLength()):
        m = model.Metadata(i)
        if m.Name() is not None and m.Name().decode() == name:
            return json.loads(bytes(model.Buffers(m.Buffer()).DataAsNumpy()).decode("utf-8"))
    return None
