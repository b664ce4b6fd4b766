"""Shared fixtures: the reference vectors, and each mini converted (and quantized) once per test run.

Converting a mini is most of what a test costs, so ``pipeline`` converts each mini at most once per
run into one folder, through the command line as a user would; tests that only read reuse it,
tests that change files work on ``pipeline.copy(...)``. The demo also runs once, in a fresh process
as a user would type it (``demo_run``): its terminal output, reports and artifacts serve every test
that needs them.

``make test`` runs the tests in two worker processes (pytest-xdist), one CPU thread each (two
processes of two threads each on two cores slow each other several times over). The workers share
the converted minis and the demo: the first to need one builds it under a file lock, the other waits
and reuses it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = Path(os.environ.get("VIDEOSEAL_REFERENCE", ROOT.parent / "shared" / "reference"))
MINIS = ("videoseal_1.0-mini", "chunkyseal-mini", "videoseal_0.0-mini")
# The reference minis are official checkpoints with random weights: the flag that says so to every stage.
UNTRAINED = ("--untrained",)
EMBEDDER_MINIS = ("videoseal_1.0-embedder-mini", "pixelseal-embedder-mini", "chunkyseal-embedder-mini", "videoseal_0.0-embedder-mini")


def pytest_configure(config) -> None:
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ["VIDEOSEAL_THREADS"] = os.environ["OMP_NUM_THREADS"] = "1"  # children inherit it
        import torch

        torch.set_num_threads(1)


# Files whose slow tests need no shared mini: collected first, so that one worker starts on them while
# the other builds the first mini most other files need (instead of both waiting on its lock).
INDEPENDENT_FIRST = ("test_train_tiny.py", "test_sam.py")


# The longest tests of their group (measured: 45-85 s each on 2 cores), started first within it so that no worker
# is left with one of them at the end while the other has nothing to do.
LONGEST_FIRST = (
    "test_embedder_files_and_contract",
    "test_embedder_converted_and_quantized_in_pieces",
    "test_partitioned_quantize_is_judged_by_the_rule",
    "test_ray_engine_survives_a_killed_worker_with_the_same_rows",
    "test_int4_rows_on_the_trained_pair",
    "test_tiny_pair_on_arm64",
    "test_tiny_pair_in_chromium_and_firefox",
)


# Fixtures that convert a model (a mini, the demo's pair, pieces) or train one: a test that uses one, even
# through another fixture, is `slow`, so `-m "not slow"` (make test-quick) runs no conversion at all.
CONVERTING_FIXTURES = {"pipeline", "demo_run", "part_files", "embedder_pieces", "runs"}


def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        if CONVERTING_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
    # Stable: the order within stays. The tests that need the demo come last: it starts at once in the background
    # (``_demo_starts_early``) and is done by then, where a worker reaching one early would wait on its lock.
    items.sort(
        key=lambda item: (
            item.path.name not in INDEPENDENT_FIRST,
            "demo_run" in getattr(item, "fixturenames", ()),
            item.originalname not in LONGEST_FIRST,
        )
    )


def shared_dir(tmp_path_factory, name: str) -> Path:
    """A folder every worker of this run sees (the run's base temp; a worker's own is one level down)."""
    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / name
    root.mkdir(parents=True, exist_ok=True)
    return root


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (waiting for another worker that holds it)."""
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def reference() -> Path:
    if not (REFERENCE / "official_layouts.json").is_file():
        pytest.fail(
            f"reference vectors not found at {REFERENCE}: ../shared/reference must sit beside the repo (or set VIDEOSEAL_REFERENCE)"
        )
    return REFERENCE


def mini_opts(card: Path | str, out: Path, **kw):
    """RunOptions for a reference mini (its checkpoint's weights are random: ``untrained``)."""
    from videoseal_litert.convert.options import RunOptions
    from videoseal_litert.models.registry import resolve

    return RunOptions(spec=resolve(str(card)), out=out, untrained=True, **kw)


def cli(*args: str) -> int:
    from videoseal_litert.cli import main

    return main([str(a) for a in args])


# On these random weights int8's fallback keeps every op float: it runs on the VideoSeal 1.0 mini here, and on the
# ChunkySeal mini in pieces in tests/test_partition.py; the other minis' other variants are enough (30 s saved).
MINI_VARIANTS = {"chunkyseal-mini": "fp16,int8-dynamic,int8-full", "videoseal_0.0-mini": "fp16,int8-dynamic,int8-full"}


class Pipeline:
    """Each mini through the command line once per session; ``copy`` for a test that changes files."""

    def __init__(self, root: Path, reference: Path) -> None:
        self.root, self.reference, self.done = root, reference, set()

    def card(self, name: str) -> Path:
        return self.reference / f"{name}.yaml"

    def _once(self, key: tuple[str, ...], *args: str, ok: tuple[int, ...] = (0,)) -> int:
        """Run a command once per test run, whichever worker asks first (a marker file says it is done and holds
        its exit code, one of ``ok``)."""
        marker = self.root / (".done-" + "-".join(key).replace("/", "_"))
        if key not in self.done:
            with locked(self.root / f".lock-{key[0]}"):  # one lock per model folder: workers build different minis at once
                if not marker.exists():
                    rc = cli(*args)
                    assert rc in ok, f"{' '.join(map(str, args))} failed"
                    marker.write_text(str(rc))
            self.done.add(key)
        return int(marker.read_text() or 0)

    def converted(self, name: str) -> Path:
        """``make convert`` of an extractor mini: its artifact folder. The minis' official checkpoints hold random
        weights: every stage is told so (``--untrained``, ``UNTRAINED``), as a user would be."""
        self._once((name, "convert"), "convert", "--model", self.card(name), "--out", self.root, *UNTRAINED)
        return self.root / name

    def quantized(self, name: str) -> Path:
        """``make convert`` and ``make quantize`` (every variant) of an extractor mini. Its weights are random: some
        variants fail the rule there (a random network puts many decisions near zero, where all-integer noise flips
        more of them than the rule allows), the honest verdict, kept under their failed names (the exit code 2 of a
        failed stage is expected; ``tests/test_quantize.py`` checks every verdict against its figures)."""
        self.converted(name)
        only = ("--variants", MINI_VARIANTS[name]) if name in MINI_VARIANTS else ()
        self._once((name, "quantize"), "quantize", "--model", self.card(name), "--out", self.root, *only, *UNTRAINED, ok=(0, 2))
        return self.root / name

    def embedder(self, name: str, variants: str = "fp32,fp16,int8") -> Path:
        """``make embedder`` of an embedder mini, verified on the set's own photos (three: fast) unless it is the
        VideoSeal 1.0 mini, which is verified on the held-out photos like any model."""
        # The embedder's accuracy control (16 quantizations of a mini) runs on the VideoSeal 1.0 mini only; the
        # other minis are measured by `make embedder` in the closing notes.
        images = (
            () if name == "videoseal_1.0-embedder-mini" else ("--images", self.reference / f"{name}-images", "--target-watermark-snr", "0")
        )
        self._once(
            (name, "embedder", variants),
            "embedder",
            "--model",
            self.card(name),
            "--out",
            self.root,
            "--variants",
            variants,
            *images,
            *UNTRAINED,
        )
        return self.root / name

    def copy(self, model_dir: Path, dest: Path) -> tuple[Path, Path]:
        """A private copy of a model folder: (its OUT, the copied model folder). Taken under the lock, so
        never in the middle of another worker's stage."""
        with locked(self.root / f".lock-{model_dir.name}"):
            shutil.copytree(model_dir, dest / model_dir.name)
        return dest, dest / model_dir.name


@pytest.fixture(scope="session")
def pipeline(reference, tmp_path_factory) -> Pipeline:
    return Pipeline(shared_dir(tmp_path_factory, "pipeline"), reference)


def _run_demo_once(root: Path) -> None:
    """``videoseal-litert demo`` into ``root`` unless a worker already ran it: under the lock, its result kept."""
    out, result = root / "artifacts", root / "terminal.json"
    with locked(root / ".lock"):
        if not result.exists():
            env = {k: v for k, v in os.environ.items() if k not in ("VIDEOSEAL_VERBOSE", "VIDEOSEAL_DEBUG")}
            r = subprocess.run(
                [sys.executable, "-m", "videoseal_litert", "demo", "--out", str(out)],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=env,
                text=True,
                timeout=900,
            )
            result.write_text(json.dumps({"rc": r.returncode, "lines": [ln for ln in r.stdout.splitlines() if ln.strip()]}))


@pytest.fixture(scope="session", autouse=True)
def _demo_starts_early(request, tmp_path_factory) -> None:
    """The demo (a fresh process, 1-2 minutes) is started at once, in the background of the first worker, when the
    run holds a test that needs it: the workers go on with other tests meanwhile instead of one of them waiting on
    its lock when the first such test comes."""
    import threading

    if os.environ.get("PYTEST_XDIST_WORKER", "gw0") != "gw0":
        return
    if not any("demo_run" in getattr(item, "fixturenames", ()) for item in request.session.items):
        return
    threading.Thread(target=_run_demo_once, args=(shared_dir(tmp_path_factory, "demo"),), daemon=True).start()


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> tuple[Path, int, list[str]]:
    """``videoseal-litert demo`` in a fresh process and a fresh OUT, once per run: (OUT, exit code, terminal lines)."""
    root = shared_dir(tmp_path_factory, "demo")
    _run_demo_once(root)
    saved = json.loads((root / "terminal.json").read_text())
    return root / "artifacts", saved["rc"], saved["lines"]


def copy_code(root: Path, dest: Path) -> None:
    """The project's code (every folder of ``core.layers.LAYERS``, Python files only: not the photo pool, node_modules
    or caches) from ``root`` into ``dest``: what the stage fingerprint hashes."""
    from videoseal_litert.core.layers import LAYERS

    def not_code(folder: str, names: list[str]) -> list[str]:
        return [n for n in names if n in ("__pycache__", "node_modules") or not (n.endswith(".py") or (Path(folder) / n).is_dir())]

    for d in LAYERS:
        shutil.copytree(root / d, dest / d, ignore=not_code)
