"""The runner seam: what verification, calibration checks, the demo and the benchmark run a model through.

A runner opens one model and maps named inputs to named outputs (the part's contract,
``models/parts.py``), and reports how its ops were delegated when that means something. Two
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

from videoseal_litert.models.errors import ArtifactCorruptError
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


def open_runner(path: str | Path, num_threads: int = 2, use_xnnpack: bool = True) -> LiteRT:
    """The in-process LiteRT runner of ``path``, or ArtifactCorruptError naming the file and what redoes it."""
    try:
        return LiteRT(path, num_threads, use_xnnpack)
    except ModelFileError as e:
        raise ArtifactCorruptError(
            f"{e}; truncated or corrupted? Rerun the stage that writes it (`make convert` or `make quantize`)"
        ) from e


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
