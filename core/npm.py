"""``npm ci`` from a committed lock file, once per lock file: the page's LiteRT.js and browser driver (``web/``) and
the Kotlin compiler that checks the bundle's Kotlin (``package/android/jvm``) are installed the same way."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from videoseal_litert.core.artifacts import sha256_file
from videoseal_litert.core.errors import PipelineError


def npm_ci(folder: Path, installed: Path, error: type[PipelineError], what: str) -> Path:
    """``npm ci`` in ``folder`` (its package.json and package-lock.json) unless ``installed`` exists and the lock is the
    one last installed (a stamp in node_modules); ``error`` naming ``what`` when node/npm are missing or npm fails."""
    lock = folder / "package-lock.json"
    stamp = folder / "node_modules" / ".lock-sha256"
    digest = sha256_file(lock)
    if installed.exists() and stamp.is_file() and stamp.read_text() == digest:
        return folder / "node_modules"
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        raise error(f"node and npm are needed for {what} (Debian packages nodejs, npm; node 20)")
    r = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=folder, capture_output=True, text=True)
    if r.returncode != 0 or not installed.exists():
        raise error(f"npm ci in {folder} failed: {(r.stderr or r.stdout).strip()[-400:]}")
    stamp.write_text(digest)
    return folder / "node_modules"
