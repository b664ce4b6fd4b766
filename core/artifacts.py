"""Artifact bookkeeping shared by every stage: atomic writes, the model directory, stage records.

Each stage writes its files under a temporary name and renames them when complete, so a failed
or interrupted stage leaves nothing half-written. ``records/<stage>.json`` in the model directory
records, for each stage, the fingerprint of its inputs and the sha256 of its outputs: a stage whose
inputs are unchanged and whose outputs are intact is skipped (``make`` targets rerun only what
changed), and a later stage refuses an artifact whose bytes are not the ones recorded. A stage holds
the directory's lock (``.lock``, ``fcntl.flock``) while it runs: a second run on the same ``OUT``
is refused by name, and whoever holds the lock removes temporary files a killed run left behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import gc
import hashlib
import json
import logging
import os
import platform
import resource
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from videoseal_litert.core.errors import ArtifactCorruptError, ArtifactMissingError, ArtifactsLockedError, OutputDirError
from videoseal_litert.core.exit import raise_if_signalled

log = logging.getLogger(__name__)

TOOL_PACKAGES = ("torch", "litert-torch", "ai-edge-litert", "ai-edge-quantizer", "onnx", "onnxruntime", "numpy")


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """The file's sha256, read in chunks (a 4 GB model never sits in memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


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


# Test hook (tests/test_bad_inputs.py): how long to wait, written but not yet renamed, so that a
# test can kill a real stage in the middle of writing an artifact: seconds, or "until:<path>" (until
# that file exists, at most HOLD_MAX_S).
HOLD_ENV = "VIDEOSEAL_TEST_HOLD_WRITE_S"
HOLD_MAX_S = 300.0


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
        if hold := os.environ.get(HOLD_ENV):  # tests: a window in which the write is in progress
            _hold(hold, tmp_path)
        raise_if_signalled()
        os.replace(tmp_path, final)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _hold(hold: str, tmp_path: Path) -> None:
    from videoseal_litert.core.console import err_stream

    print(f"[test hold] {tmp_path} written; renaming after {hold}", file=err_stream(), flush=True)
    if hold.startswith("until:"):
        release, t0 = Path(hold.removeprefix("until:")), time.time()
        while not release.exists() and time.time() - t0 < HOLD_MAX_S:
            time.sleep(0.05)
    else:
        time.sleep(float(hold))


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


# What was just dropped counts as large above this: collect reference cycles at once (ChunkySeal's pieces,
# files and modules: its stages' peaks were measured with these collections).
LARGE_BYTES = 256 * 2**20


def collect_if_large(nbytes: int) -> None:
    """``gc.collect()`` after dropping ``nbytes`` of model, file or runner when that is large. A small model's
    cycles wait for the collector's own turn: once torch and jax are loaded a full collection costs about
    0.25 s (35 s of one mini's 135 s test, 135 collections, measured with cProfile)."""
    if nbytes >= LARGE_BYTES:
        gc.collect()


def release_memory() -> None:
    """Hand freed memory back to the OS (garbage collection, then glibc's ``malloc_trim``), so that a
    stage run after another in the same process (``videoseal-litert embedder``) peaks at its own
    figure, not at that plus what the previous stage's freed allocations left in the heap."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


@dataclass
class StageRecord:
    """What one stage consumed and produced, for skipping and for tracing artifacts."""

    inputs: dict[str, Any]
    outputs: dict[str, str] = field(default_factory=dict)
    wall_s: float = 0.0
    peak_rss_mb: float = 0.0


def writable_dir(path: str | Path) -> Path:
    """Create ``path`` (and parents) and check that a file can be written there, or raise OutputDirError."""
    path = Path(path)
    for p in (path, *path.parents):
        if p.exists() and not p.is_dir():
            raise OutputDirError(f"{p} is a file, not a directory: choose another OUT= (or move the file away)")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(prefix=".write-probe.", suffix=".tmp", dir=path):
            pass
    except OSError as e:
        raise OutputDirError(f"cannot write to {path} ({e.strerror or e}): choose a writable OUT=") from e
    return path


_HELD: dict[str, list[int]] = {}  # resolved directory -> [lock fd, depth]: the lock is re-entrant within a process


class ModelDir:
    """The artifact directory of one model: ``$(OUT)/<model id>/``."""

    def __init__(self, out: str | Path, model_id: str) -> None:
        self.path = writable_dir(Path(out) / model_id)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    @property
    def _records(self) -> Path:
        return self.path / "records"

    def stages(self) -> dict[str, Any]:
        """Every stage's record (``records/<stage>.json``; each stage writes only its own)."""
        if not self._records.is_dir():
            return {}
        out = {}
        for p in sorted(self._records.glob("*.json")):
            with contextlib.suppress(ValueError, OSError):
                out[p.stem] = read_json(p)
        return out

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
        write_json(self._records / f"{stage}.json", rec.__dict__)
        return rec

    def require(self, name: str, make_target: str) -> Path:
        """``name`` as the stage that wrote it left it, or a named error saying which make target redoes it."""
        p = self.path / name
        if not p.is_file():
            raise ArtifactMissingError(f"{p} does not exist: run `make {make_target}` first")
        for stage, rec in self.stages().items():
            digest = rec.get("outputs", {}).get(name)
            if digest is not None and sha256_file(p) != digest:
                raise ArtifactCorruptError(
                    f"{p} is not the file the {stage} stage wrote (sha256 differs: truncated, corrupted or replaced since); "
                    f"run `make {make_target}` to redo it"
                )
        return p

    @contextlib.contextmanager
    def exclusive(self, what: str) -> Iterator[None]:
        """Hold this directory's lock for the block; refuse by name if another process holds it."""
        key = str(self.path.resolve())
        if key in _HELD:
            _HELD[key][1] += 1
            try:
                yield
            finally:
                _HELD[key][1] -= 1
            return
        fd = os.open(self.path / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 300, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise ArtifactsLockedError(
                f"{self.path} is in use by another run ({holder}); wait for it to finish, or give this run another OUT="
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}, {what}, since {time.strftime('%H:%M:%S')}".encode(), 0)
        _HELD[key] = [fd, 1]
        try:
            self._remove_stale_temporaries()
            yield
        finally:
            del _HELD[key]
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _remove_stale_temporaries(self) -> None:
        """With the lock held nobody else writes here: ``atomic_path`` files left by a killed run are debris."""
        for p in sorted({*self.path.rglob(".*.tmp"), *self.path.rglob(".*.tmp.*")}):
            with contextlib.suppress(OSError):
                if p.is_dir():  # a scratch folder (convert.split.scratch_dir)
                    shutil.rmtree(p)
                else:
                    p.unlink()
                log.info("removed %s, left by an interrupted run", p)
