"""Artifact bookkeeping shared by every stage: atomic writes, the model directory, stage records.

Each stage writes its files under a temporary name and renames them when complete, so a failed
or interrupted stage leaves nothing half-written. ``stages.json`` in the model directory records,
for each stage, the fingerprint of its inputs and the sha256 of its outputs: a stage whose inputs
are unchanged and whose outputs are intact is skipped (``make`` targets rerun only what changed).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import resource
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from convert.load import sha256_file

log = logging.getLogger(__name__)

TOOL_PACKAGES = ("torch", "litert-torch", "ai-edge-litert", "ai-edge-quantizer", "onnx", "onnxruntime", "numpy")


def tool_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in TOOL_PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    return out


def machine_description() -> str:
    """CPU model, cores, OS and the vector ISA that decides INT8 speed ratios (same model name, other ISA, other ratios)."""
    cpu = platform.processor() or platform.machine()
    flags: set[str] = set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and cpu in (platform.processor(), platform.machine()):
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.machine()}" + (f", {isa_summary(flags)}" if flags else "")


def isa_summary(flags: set[str]) -> str:
    """x86 vector ISA in words: XNNPACK's INT8 GEMM has dot-product instructions only with VNNI."""
    width = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "SSE"
    vnni = {"avx512_vnni", "avx_vnni"} & flags
    return f"{width}, {'VNNI (int8 dot products)' if vnni else 'no VNNI'}"


@contextlib.contextmanager
def atomic_path(final: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename onto it only if the block succeeds."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o644)
        os.replace(tmp_path, final)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_json(path: str | Path, data: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def peak_rss_mb() -> float:
    """Peak resident set size of this process (and waited-for children), in MB, from the OS."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, kids) / 1024.0


@dataclass
class StageRecord:
    """What one stage consumed and produced, for skipping and for tracing artifacts."""

    inputs: dict[str, Any]
    outputs: dict[str, str] = field(default_factory=dict)
    wall_s: float = 0.0
    peak_rss_mb: float = 0.0


class ModelDir:
    """The artifact directory of one model: ``$(OUT)/<model id>/``."""

    def __init__(self, out: str | Path, model_id: str) -> None:
        self.path = Path(out) / model_id
        self.path.mkdir(parents=True, exist_ok=True)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    @property
    def _stages_file(self) -> Path:
        return self.path / "stages.json"

    def stages(self) -> dict[str, Any]:
        return read_json(self._stages_file) if self._stages_file.exists() else {}

    def up_to_date(self, stage: str, inputs: dict[str, Any]) -> bool:
        rec = self.stages().get(stage)
        if not rec or rec.get("inputs") != json.loads(json.dumps(inputs, default=str)):
            return False
        for name, digest in rec.get("outputs", {}).items():
            f = self.path / name
            if not f.exists() or sha256_file(f) != digest:
                return False
        return True

    def record(self, stage: str, inputs: dict[str, Any], outputs: list[str], started: float) -> StageRecord:
        rec = StageRecord(
            inputs=inputs,
            outputs={name: sha256_file(self.path / name) for name in outputs},
            wall_s=round(time.time() - started, 2),
            peak_rss_mb=round(peak_rss_mb(), 1),
        )
        all_stages = self.stages()
        all_stages[stage] = rec.__dict__
        write_json(self._stages_file, all_stages)
        return rec
