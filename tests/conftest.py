from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = Path(os.environ.get("VIDEOSEAL_REFERENCE", ROOT.parent / "shared" / "reference"))
MINIS = ("videoseal_1.0-mini", "chunkyseal-mini", "videoseal_0.0-mini")


@pytest.fixture(scope="session")
def reference() -> Path:
    if not (REFERENCE / "official_layouts.json").is_file():
        pytest.fail(
            f"reference vectors not found at {REFERENCE}: ../shared/reference must sit beside the repo (or set VIDEOSEAL_REFERENCE)"
        )
    return REFERENCE
