"""The photo pool: real photographs from Debian and PyPI packages, split by photo, checked by sha256.

``pool.json`` (committed) names each photo: the package that ships it (Debian package and version,
or a PyPI package the project already installs), its path there, the sha256 of the file, its size,
a few descriptive tags, and its split:

- ``calibration``: what static INT8's activation ranges are computed on;
- ``validation``: what any automatic choice is made on (the accuracy control's op ranking and target);
- ``evaluation``: reporting only (the demo, verification's held-out views); never calibrates or chooses.

``make photos`` (part of ``make setup``; ``videoseal-litert photos``) installs the pool into
``calibration_data/pool/`` (ignored by git; ``VIDEOSEAL_PHOTO_POOL`` names another folder): Debian
packages are fetched with ``apt-get download`` and unpacked with ``dpkg-deb`` into a temporary folder
(nothing is installed system-wide), PyPI photos are copied from the installed package, and every file
is checked against its sha256 before it is renamed into place. Nothing is downloaded at run time: a
missing or changed photo is a named ``PhotoPoolError`` that says how to install the pool.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import tempfile
from functools import cache
from pathlib import Path

from videoseal_litert.core.artifacts import sha256_file
from videoseal_litert.core.errors import PhotoPoolError

log = logging.getLogger(__name__)

POOL_JSON = Path(__file__).resolve().parent / "pool.json"
SPLITS = ("calibration", "validation", "evaluation")
FIX = "run `make photos` (or `videoseal-litert photos`) to install it"


def pool_dir() -> Path:
    env = os.environ.get("VIDEOSEAL_PHOTO_POOL")
    return Path(env) if env else Path(__file__).resolve().parent / "pool"


@cache
def manifest() -> dict:
    return json.loads(POOL_JSON.read_text())


def photos(split: str | None = None) -> list[dict]:
    """The manifest's photo entries, in manifest order, of one split (or all)."""
    if split is not None and split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; one of {SPLITS}")
    return [p for p in manifest()["photos"] if split is None or p["split"] == split]


def split_paths(split: str, check: bool = False) -> list[Path]:
    """Paths of one split's photos in the installed pool; a missing one is a PhotoPoolError.

    ``check`` also verifies each file's sha256 (``make photos`` always does; reading a photo is
    otherwise trusted to the install)."""
    d = pool_dir()
    out = []
    for p in photos(split):
        f = d / p["name"]
        if not f.is_file():
            raise PhotoPoolError(f"photo pool: {p['name']} ({split} split) is not in {d}; {FIX}")
        if check and sha256_file(f) != p["sha256"]:
            raise PhotoPoolError(f"photo pool: {f} is not the photo the manifest names (sha256 differs); {FIX}")
        out.append(f)
    return out


def _pypi_file(entry: dict) -> Path:
    import importlib.util

    top, _, rest = entry["package"]["path"].partition("/")
    spec = importlib.util.find_spec(top)
    if spec is None or spec.origin is None:
        raise PhotoPoolError(f"photo pool: {entry['name']} comes with the PyPI package {entry['package']['pypi']}, which is not installed")
    return Path(spec.origin).parent / rest


def _apt_download(pkg: str, version: str, dest: Path) -> Path:
    def download() -> subprocess.CompletedProcess:
        return subprocess.run(["apt-get", "download", f"{pkg}={version}"], cwd=dest, capture_output=True, text=True)

    r = download()
    if r.returncode != 0:
        # A fresh machine has no package lists yet: read them once and retry.
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, text=True)
        r = download()
    debs = sorted(dest.glob(f"{pkg}_*.deb"))
    if r.returncode != 0 or not debs:
        raise PhotoPoolError(
            f"photo pool: `apt-get download {pkg}={version}` failed ({(r.stderr or r.stdout).strip()[-300:]}); "
            "the pool needs Debian's package registry once (as root: `apt-get update`, then `make photos` again)"
        )
    return debs[0]


def install(dest: Path | None = None) -> Path:
    """Install every photo of the manifest into ``dest`` (default ``pool_dir()``); present and intact ones are kept."""
    dest = dest or pool_dir()
    dest.mkdir(parents=True, exist_ok=True)
    todo = [p for p in photos() if not ((dest / p["name"]).is_file() and sha256_file(dest / p["name"]) == p["sha256"])]
    by_deb: dict[tuple[str, str], list[dict]] = {}
    for p in todo:
        pkg = p["package"]
        if "debian" in pkg:
            by_deb.setdefault((pkg["debian"], pkg["version"]), []).append(p)
        else:
            _place(_pypi_file(p), p, dest)
    if by_deb and shutil.which("apt-get") is None:
        raise PhotoPoolError("photo pool: apt-get not found; the pool's Debian photos need a Debian-based machine")
    for (pkg, version), entries in by_deb.items():
        log.info("photo pool: %d photo(s) from the Debian package %s %s", len(entries), pkg, version)
        with tempfile.TemporaryDirectory(prefix="photo-pool-") as tmp:
            deb = _apt_download(pkg, version, Path(tmp))
            root = Path(tmp) / "x"
            r = subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], capture_output=True, text=True)
            if r.returncode != 0:
                raise PhotoPoolError(f"photo pool: could not unpack {deb.name}: {r.stderr.strip()[-300:]}")
            for p in entries:
                _place(root / p["package"]["path"].lstrip("/"), p, dest)
    log.info("photo pool: %d photos in %s (%d installed now)", len(photos()), dest, len(todo))
    return dest


def _place(src: Path, entry: dict, dest: Path) -> None:
    if not src.is_file():
        raise PhotoPoolError(f"photo pool: {entry['name']} is not at {entry['package']['path']} in its package")
    if sha256_file(src) != entry["sha256"]:
        raise PhotoPoolError(f"photo pool: {entry['name']} in its package is not the photo the manifest names (sha256 differs)")
    tmp = dest / f".{entry['name']}.tmp"
    shutil.copyfile(src, tmp)
    os.replace(tmp, dest / entry["name"])
