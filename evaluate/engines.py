"""Where the per-batch functions run: in this process (``local``) or on a Ray cluster (``ray``).

Both engines take the same image list and :class:`~videoseal_litert.evaluate.batches.EvalConfig`, call
the same functions (``batches.py``) on the same images, and write the result rows as Parquet files in
one folder (``rows/``); :func:`read_rows` reads them back in a fixed order, so the same inputs and
seed give identical tables from either engine.

- ``local``: chunks of ``CHUNK_IMAGES`` images through :class:`~videoseal_litert.evaluate.batches.Pipeline`;
  each chunk's rows are one Parquet file, written under a temporary name and renamed when complete,
  so memory stays flat in the number of images and an interrupted run resumes from the images whose
  rows are there (never writing an image's rows twice).
- ``ray``: Ray Data reads the image list, ``map_batches`` runs the marker, the PyTorch reference and
  each ``.tflite`` in its own actor pool (the interpreter built inside the actor, ``num_cpus`` = its
  threads), and Ray Data's Parquet writer writes the rows. Actors are restarted and their tasks
  retried when a worker dies (``max_restarts``/``max_task_retries``), so the rows of every image
  come out exactly once. ``RAY_ADDRESS`` (or ``--ray-address``) joins an existing cluster; otherwise a
  local one is started. Ray's own logging, its workers' included (``log_to_driver``), goes to the log file.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from videoseal_litert.core.artifacts import atomic_path
from videoseal_litert.core.console import working
from videoseal_litert.core.errors import ImageError, UsageError
from videoseal_litert.core.images import IMAGE_SUFFIXES
from videoseal_litert.evaluate.batches import SORT_KEYS, Decoder, EvalConfig, Marker, Pipeline, label, to_rows
from videoseal_litert.evaluate.video_pass import VIDEO_SUFFIXES, VideoMarker

log = logging.getLogger(__name__)

CHUNK_IMAGES = 2
ENGINES = ("local", "ray")
SCALE_INSTALL = "pip install 'videoseal-litert[scale]'  (from a checkout: .venv/bin/pip install -e '.[scale]')"


class MissingDependencyError(UsageError):
    """An optional dependency a chosen option needs is not installed."""


# ---- the image list ------------------------------------------------------------------------------


def list_inputs(
    spec: str | Path, suffixes: tuple[str, ...] = IMAGE_SUFFIXES, kind: str = "images", error: type[Exception] = ImageError
) -> list[str]:
    """A folder (its image files, sorted), a glob (``photos/*.jpg``, ``**`` recurses) or a text file of
    paths (one per line, relative to the file's folder; ``#`` comments). Any number of images: files
    that are not images by suffix are left out of a folder or glob; a listed file that cannot be read
    becomes a row with its error. (``suffixes``, ``kind``, ``error``: the same for videos.)"""
    s = str(spec)
    p = Path(s)
    if p.is_dir():
        paths = sorted(str(q) for q in p.iterdir() if q.is_file() and q.suffix.lower() in suffixes)
    elif any(c in s for c in "*?["):
        paths = sorted(q for q in glob.glob(s, recursive=True) if Path(q).suffix.lower() in suffixes and Path(q).is_file())
    elif p.is_file() and p.suffix.lower() in suffixes:
        paths = [s]
    elif p.is_file():
        paths = []
        for line in p.read_text(errors="replace").splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                q = Path(line)
                paths.append(str(q if q.is_absolute() else p.parent / q))
    else:
        raise error(f"{kind} not found: {s} (a folder, a glob such as 'photos/*.jpg', or a text file listing paths)")
    if not paths:
        raise error(f"no {kind} in {s} (looked for {', '.join(suffixes)})")
    return paths


def list_videos(spec: str) -> list[str]:
    """``clips``: the real clips of ``video/clips.json``; else a folder, glob, file or list of videos, as images."""
    if spec == "clips":
        from videoseal_litert.video.clips import clip_path, clips

        return [str(clip_path(c["name"])) for c in clips()]
    return list_inputs(spec, VIDEO_SUFFIXES, "videos", UsageError)


# ---- rows on disk ----------------------------------------------------------------------------------


def done_images(rows_dir: Path) -> set[int]:
    """Indices of the images whose rows are already in ``rows_dir`` (complete files only)."""
    import pyarrow.parquet as pq

    done: set[int] = set()
    for f in sorted(rows_dir.glob("*.parquet")) if rows_dir.is_dir() else []:
        done.update(pq.read_table(f, columns=["image_index"]).column(0).to_pylist())
    return done


def _table(batch: dict[str, np.ndarray]) -> Any:
    import pyarrow as pa

    return pa.table({k: pa.array(v.tolist() if v.dtype == object else v) for k, v in batch.items()})


def read_rows(rows_dir: Path) -> Any:
    """Every row in ``rows_dir`` as one pyarrow Table, sorted by image, message, embedder, attack, variant."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = sorted(rows_dir.glob("*.parquet")) if rows_dir.is_dir() else []
    if not files:
        raise UsageError(f"no rows in {rows_dir}")
    t = pa.concat_tables([pq.read_table(f) for f in files], promote_options="permissive")
    return t.sort_by([(k, "ascending") for k in SORT_KEYS])


# ---- local -----------------------------------------------------------------------------------------


def _todo(paths: list[str], rows_dir: Path) -> tuple[set[int], list[tuple[int, str]]]:
    """(indices already in ``rows_dir``, the (index, path) pairs still to evaluate); creates the folder."""
    rows_dir.mkdir(parents=True, exist_ok=True)
    done = done_images(rows_dir)
    return done, [(i, p) for i, p in enumerate(paths) if i not in done]


def _chunks(items: list[tuple[int, str]], n: int) -> Iterator[list[tuple[int, str]]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def run_local(cfg: EvalConfig, paths: list[str], rows_dir: Path, progress: Callable[..., Any], video: bool = False) -> dict[str, Any]:
    """Chunks of images (``video``: clips, through :class:`VideoMarker`) through one in-process pipeline;
    each chunk's rows a Parquet file (atomic)."""
    import pyarrow.parquet as pq

    done, todo = _todo(paths, rows_dir)
    t0 = time.time()
    pipe = Pipeline(cfg, VideoMarker if video else Marker)
    t_ready = time.time()
    seconds: dict[str, float] = {}
    rows = 0
    for chunk in progress(
        list(_chunks(todo, 1 if video else CHUNK_IMAGES)),
        desc=f"evaluate{' video' if video else ''} (local)",
        unit="clips" if video else "batches of images",
    ):
        batch = {"image": np.array([p for _, p in chunk], dtype=object), "image_index": np.array([i for i, _ in chunk], np.int64)}
        out = pipe(batch, seconds)
        rows += len(out["image"])
        with atomic_path(rows_dir / f"local-{chunk[0][0]:09d}.parquet") as tmp:
            pq.write_table(_table(out), tmp)
    wall = time.time() - t0
    return {
        "engine": "local",
        "images": len(todo),
        "resumed_past": len(done),
        "rows": rows,
        "wall_s": round(wall, 2),
        "startup_s": round(t_ready - t0, 2),
        "images_per_s": round(len(todo) / (wall - (t_ready - t0)), 4) if todo and wall > t_ready - t0 else None,
        "seconds": {k: round(v, 2) for k, v in seconds.items()},
    }


# ---- ray -------------------------------------------------------------------------------------------


def import_ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as e:
        raise MissingDependencyError(f"ENGINE=ray needs Ray Data, which is not installed: {SCALE_INSTALL}") from e
    return ray


def _quiet_ray(ray: Any) -> None:
    """Ray Data's progress bars and per-operator lines off; what Ray logs goes to the log file."""
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    ctx.verbose_stats_logs = False
    for name in ("ray", "ray.data"):
        logging.getLogger(name).propagate = True


def start_ray(address: str | None, cpus: int) -> tuple[Any, bool]:
    """Join ``address`` (or ``RAY_ADDRESS``), else start a local cluster with ``cpus`` logical CPUs;
    returns (ray, whether this call started it)."""
    ray = import_ray()
    if ray.is_initialized():
        return ray, False
    address = address or os.environ.get("RAY_ADDRESS") or None
    kw: dict[str, Any] = {"log_to_driver": True, "logging_level": logging.WARNING, "include_dashboard": False}
    if address:
        ray.init(address=address, **kw)
    else:
        ray.init(num_cpus=cpus, **kw)
    _quiet_ray(ray)
    return ray, True


def cluster_cpus(cfg: EvalConfig) -> int:
    """A local cluster's logical CPUs: one per actor when the machine has fewer (each actor still uses
    ``threads`` OS threads; on this 2-core machine the pools share the cores)."""
    return max(os.cpu_count() or 1, (1 + len(cfg.decoders)) * cfg.threads)


# Actors come back after a worker dies and their tasks run again (Ray's defaults are no restart).
RETRY = {"max_restarts": -1, "max_task_retries": -1}


def _rows_written(rows_dir: Path, before: set[str], expected: int) -> Callable[[], str]:
    """How many rows Ray Data has written to new files so far (for ``working``'s progress line)."""
    import pyarrow.parquet as pq

    def count() -> str:
        n = 0
        for f in rows_dir.glob("*.parquet"):
            if f.name not in before:
                with contextlib.suppress(Exception):  # a file Ray is still writing
                    n += pq.ParquetFile(f).metadata.num_rows
        return f"{n} of about {expected} rows written"

    return count


def run_ray(
    cfg: EvalConfig,
    paths: list[str],
    rows_dir: Path,
    address: str | None,
    workers: int | None,
    expected_rows: int = 0,
    video: bool = False,
) -> dict[str, Any]:
    """The same functions on Ray Data: one actor pool per stage, rows by Ray Data's Parquet writer
    (``video``: clips through :class:`VideoMarker`, a row of frames per decoder call)."""
    done, todo = _todo(paths, rows_dir)
    pools = 1 + len(cfg.decoders)
    ray, started = start_ray(address, cluster_cpus(cfg))
    t0 = time.time()
    try:
        if not todo:
            return {"engine": "ray", "images": 0, "resumed_past": len(done), "rows": 0, "wall_s": 0.0}
        cpus = int(ray.cluster_resources().get("CPU", 1))
        n = workers or max(1, cpus // (pools * cfg.threads))
        ds = ray.data.from_items([{"image": p, "image_index": i} for i, p in todo], override_num_blocks=max(1, min(len(todo), 4 * n)))
        ds = ds.map_batches(
            VideoMarker if video else Marker,
            fn_constructor_args=(cfg,),
            batch_size=1,
            concurrency=(1, n),
            num_cpus=cfg.threads,
            batch_format="numpy",
            **RETRY,
        )
        for v in cfg.decoders:
            ds = ds.map_batches(
                Decoder,
                fn_constructor_args=(cfg, v),
                batch_size=1 if video else 64,  # a video row holds its frames (16 x 0.8 MB by default)
                concurrency=(1, n),
                num_cpus=cfg.threads,
                batch_format="numpy",
                **RETRY,
            )
        ds = ds.map_batches(to_rows, fn_kwargs={"variants": cfg.decoders}, batch_size=None, batch_format="numpy", num_cpus=0.25)
        before = {f.name for f in rows_dir.glob("*.parquet")}
        with working(f"evaluate{' video' if video else ''} (ray)", _rows_written(rows_dir, before, expected_rows)):
            ds.write_parquet(str(rows_dir))
        wall = time.time() - t0
        import pyarrow.parquet as pq

        rows = sum(pq.ParquetFile(f).metadata.num_rows for f in rows_dir.glob("*.parquet"))
        return {
            "engine": "ray",
            "images": len(todo),
            "resumed_past": len(done),
            "rows_in_folder": rows,
            "wall_s": round(wall, 2),
            "images_per_s": round(len(todo) / wall, 4) if wall > 0 else None,
            "cluster": {"address": address or os.environ.get("RAY_ADDRESS") or "local", "cpus": cpus, "workers_per_pool": n},
            "pools": ["marker", *(label(v) for v in cfg.decoders)],
        }
    finally:
        if started:
            ray.shutdown()
