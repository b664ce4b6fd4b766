"""`pip install .` adds one top-level package (videoseal_litert) and the `videoseal-litert` command.

The project keeps its folders at the root (convert/, quantize/, models/, ...); installed, they must
not become top-level `models` or `convert` modules that collide with a user's own.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SKIP = shutil.ignore_patterns(".git", ".venv", "artifacts", "dist", "runs", "build", "*.egg-info", "__pycache__", ".*_cache", ".cache")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    # Build from a copy: setuptools writes build/ and *.egg-info beside the sources.
    src = tmp_path_factory.mktemp("src") / "project"
    shutil.copytree(ROOT, src, ignore=SKIP)
    out = src.parent / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out), str(src)],
        check=True,
        capture_output=True,
    )
    return next(out.glob("videoseal_litert-*.whl"))


def test_wheel_has_one_top_level_package_and_its_data(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"videoseal_litert"}
    for needed in (
        "videoseal_litert/cli.py",
        "videoseal_litert/convert/stages.py",
        "videoseal_litert/quantize/quantize_stage.py",
        "videoseal_litert/models/cards/videoseal.yaml",
        "videoseal_litert/models/tiny/checkpoint.safetensors",
        "videoseal_litert/calibration_data/manifest.json",
        "videoseal_litert/runtime/run_extractor.py",
        "videoseal_litert/runtime/litert_runner.py",
        "videoseal_litert/runtime/route.py",
        "videoseal_litert/package/android/EmbedWatermark.kt",
    ):
        assert needed in names, needed
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "videoseal-litert = videoseal_litert.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_fresh_venv_gets_no_top_level_models_or_convert(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True, capture_output=True)
    probe = (
        "import importlib.util as u; "
        "print([n for n in ('models', 'convert', 'quantize', 'calibration_data', 'runtime', 'package', 'demo') if u.find_spec(n)]); "
        "print(u.find_spec('videoseal_litert.convert') is not None)"
    )
    r = subprocess.run([str(py), "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert r.stdout.split("\n")[:2] == ["[]", "True"]
    # The console script runs (its help needs none of the heavy dependencies).
    r = subprocess.run([str(venv / "bin" / "videoseal-litert"), "--help"], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0 and "quantize" in r.stdout and "package" in r.stdout
