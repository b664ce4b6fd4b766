"""The runner seam: what verification, calibration checks, the demo and the benchmark run a model through.

A runner opens one model and maps named inputs to named outputs (the part's contract,
``models/contracts.py``), and reports how its ops were delegated when that means something. Two
implementations here: :func:`open_runner` (a ``.tflite`` in this process on LiteRT's CPU kernels)
and :class:`TorchRunner` (the PyTorch reference, the official module behind the same names).
Another interpreter, another CPU architecture (``runtime/arm.py``: ARM64 kernels under emulation) or
ONNX Runtime is one more class with these methods and one more opener; the stages take an opener and
never build an interpreter themselves.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from videoseal_litert.core.errors import ArtifactCorruptError
from videoseal_litert.runtime.litert_runner import LiteRTRunner, ModelFileError

Inputs = Mapping[str, np.ndarray]
Outputs = dict[str, np.ndarray]


class Runner(Protocol):
    """One opened model: ``runner(inputs)`` -> outputs, both by name."""

    label: str

    @property
    def input_shapes(self) -> dict[str, tuple[int, ...]]: ...

    def __call__(self, inputs: Inputs) -> Outputs: ...

    def delegation(self) -> dict[str, Any] | None:
        """How the ops were placed (XNNPACK partitions, ops left on builtin kernels); None where not applicable."""

    def io(self) -> dict[str, list[dict[str, Any]]] | None:
        """Each input's and output's name and dtype (scale and zero point for integers); None where not applicable."""


Opener = Callable[[Path, int], Runner]


class LiteRT(LiteRTRunner):
    """A ``.tflite`` in this process, on LiteRT's CPU kernels (XNNPACK where it takes an op)."""

    @property
    def label(self) -> str:
        return f"LiteRT {self.path.name}"


# Files above this size run through LiteRT's CompiledModel with XNNPACK's weight cache (the packed
# weights in a file, mapped) instead of the Interpreter, where XNNPACK packs a second copy of the float
# weights in memory beside the file's mapped pages. ChunkySeal's 4.1 GB FP32 embedder, one image,
# measured: Interpreter 8.27 GB peak RSS, CompiledModel with the cache 4.52 GB (building the cache) and
# 4.29 GB (reusing it). Smaller files keep the Interpreter, whose delegation the reports count.
WEIGHT_CACHE_ABOVE_BYTES = 3_000_000_000


class CompiledLiteRT:
    """A large ``.tflite`` through LiteRT's CompiledModel on XNNPACK with a weight cache file.

    The cache (as large as the float weights) is written to a private folder beside the model and
    removed when the runner is closed or collected. Float inputs and outputs only (what the large
    files have); reports get no delegation count for it (``delegation()`` is None, the label says how it ran).
    """

    def __init__(self, path: str | Path, num_threads: int = 2, cache: str | Path | None = None) -> None:
        """``cache``: the weight cache file to build or reuse (kept); by default a private one, removed with the runner."""
        import shutil
        import tempfile
        import weakref

        from ai_edge_litert.compiled_model import CompiledModel, CpuOptions, HardwareAccelerator, Options

        self.path = Path(path)
        self.label = f"LiteRT CompiledModel {self.path.name} (XNNPACK, weight cache)"
        self._dir = tempfile.mkdtemp(prefix=".xnnpack-cache-", dir=self.path.parent)
        self._cleanup = weakref.finalize(self, shutil.rmtree, self._dir, True)
        try:
            weights = str(cache) if cache else str(Path(self._dir) / "weights.bin")
            cpu = CpuOptions(num_threads=num_threads, xnnpack_weight_cache_path=weights)
            self.model = CompiledModel.from_file(
                str(self.path), options=Options(hardware_accelerators=HardwareAccelerator.CPU, cpu_options=cpu)
            )
            self.sig = next(iter(self.model.get_signature_list()))
            self.inputs = self.model.get_input_tensor_details(self.sig)
            self.outputs = self.model.get_output_tensor_details(self.sig)
        except (RuntimeError, ValueError) as e:
            self._cleanup()
            raise ModelFileError(f"{self.path} is not a readable LiteRT model ({str(e).strip().splitlines()[0][:200]})") from e
        if any(d["dtype"] != "float32" for d in (*self.inputs.values(), *self.outputs.values())):
            self._cleanup()
            raise ModelFileError(f"{self.path}: CompiledLiteRT runs float32 inputs and outputs only")

    @property
    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        return {n: tuple(int(s) for s in d["shape"]) for n, d in self.inputs.items()}

    def __call__(self, inputs: Inputs) -> Outputs:
        if set(inputs) != set(self.inputs):
            raise ValueError(f"{self.path.name} takes inputs {sorted(self.inputs)}, got {sorted(inputs)}")
        ins = {}
        for name, x in inputs.items():
            ins[name] = self.model.create_input_buffer_by_name(self.sig, name)
            ins[name].write(np.ascontiguousarray(x, dtype=np.float32))
        outs = {name: self.model.create_output_buffer_by_name(self.sig, name) for name in self.outputs}
        self.model.run_by_name(self.sig, ins, outs)
        return {
            n: outs[n].read(int(np.prod(d["shape"])), np.float32).reshape([int(s) for s in d["shape"]]).copy()
            for n, d in self.outputs.items()
        }

    def delegation(self) -> None:
        return None

    def io(self) -> None:
        return None

    def close(self) -> None:
        self.model = None
        self._cleanup()


def _corrupt(e: ModelFileError) -> ArtifactCorruptError:
    return ArtifactCorruptError(f"{e}; truncated or corrupted? Rerun the stage that writes it (`make convert` or `make quantize`)")


def open_runner(path: str | Path, num_threads: int = 2, use_xnnpack: bool = True) -> LiteRT:
    """The in-process LiteRT Interpreter runner of ``path``, or ArtifactCorruptError naming the file and what redoes it."""
    try:
        return LiteRT(path, num_threads, use_xnnpack)
    except ModelFileError as e:
        raise _corrupt(e) from e


def open_file(path: str | Path, num_threads: int = 2) -> Runner:
    """The stages' opener: :func:`open_runner`, or :class:`CompiledLiteRT` for a file over
    WEIGHT_CACHE_ABOVE_BYTES (ChunkySeal's FP32 files) so that checking it stays within 8 GB."""
    p = Path(path)
    if not (p.is_file() and p.stat().st_size > WEIGHT_CACHE_ABOVE_BYTES):
        return open_runner(p, num_threads)
    try:
        return CompiledLiteRT(p, num_threads)
    except ModelFileError as e:
        raise _corrupt(e) from e


def kernels(runner: Runner) -> str:
    """Which CPU kernels ran the file: XNNPACK (with how many ops left to the builtin ones) or builtin only."""
    d = runner.delegation()
    if d is None:
        return runner.label
    if not d.get("num_partitions"):
        return "LiteRT builtin kernels"
    return f"XNNPACK ({d['num_partitions']} partition(s), {d['num_not_delegated']} op(s) on builtin kernels)"


class TorchRunner:
    """The PyTorch reference behind a part's names: ``fn(**inputs as tensors) -> {name: tensor}``, no grad."""

    def __init__(self, fn: Callable[..., Mapping[str, Any]], input_shapes: dict[str, tuple[int, ...]], label: str = "PyTorch") -> None:
        self.fn, self._shapes, self.label = fn, input_shapes, label

    @property
    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        return dict(self._shapes)

    def __call__(self, inputs: Inputs) -> Outputs:
        import torch

        with torch.no_grad():
            out = self.fn(**{k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in inputs.items()})
        return {k: v.detach().numpy().astype(np.float32, copy=True) for k, v in out.items()}

    def delegation(self) -> None:
        return None

    def io(self) -> None:
        return None


def run_all(runner: Runner, inputs: Iterable[Inputs], names: Iterable[str] | None = None) -> dict[str, np.ndarray]:
    """Each (batch-of-one) input through ``runner``; each output's single row stacked, (N, *shape[1:]), by name.

    A runner with ``run_many`` (one process for a whole batch: the ARM64 runner, ``runtime/arm.py``) gets
    every input at once."""
    rows: dict[str, list[np.ndarray]] = {}
    many = getattr(runner, "run_many", None)
    outs = many(list(inputs)) if many is not None else map(runner, inputs)
    for out in outs:
        for k in names or out:
            rows.setdefault(k, []).append(out[k][0])
    return {k: np.stack(v) for k, v in rows.items()}
