"""The photo pool: enough distinct real photos, split by photo, each the file its manifest names."""

from __future__ import annotations

import hashlib
import shutil

import pytest

from videoseal_litert.calibration_data import pool
from videoseal_litert.calibration_data.build import MANIFEST, split_items
from videoseal_litert.calibration_data.photos import HELDOUT_PHOTOS, TRAINING_PHOTOS
from videoseal_litert.core.errors import PhotoPoolError


def test_pool_has_enough_distinct_photos_split_by_photo():
    photos = pool.photos()
    assert len(photos) >= 60
    assert len({p["name"] for p in photos}) == len({p["sha256"] for p in photos}) == len(photos)
    by_split = {s: {p["name"] for p in pool.photos(s)} for s in pool.SPLITS}
    assert sum(len(v) for v in by_split.values()) == len(photos)  # every photo in exactly one split
    assert set(HELDOUT_PHOTOS) <= by_split["evaluation"]  # stage verification reports on evaluation photos
    assert set(TRAINING_PHOTOS) <= by_split["calibration"]  # the tiny pair never trained on a photo it is judged on
    assert len(by_split["validation"]) >= 12 and len(by_split["evaluation"]) >= 30
    # What the issue asks the pool to cover, each in more than one photo.
    tags = [t for p in photos for t in p["tags"]]
    for tag in ("people", "indoor", "outdoor", "low-light", "macro", "text"):
        assert tags.count(tag) >= 2, tag
    sides = [max(p["size"]) for p in photos]
    assert min(sides) <= 400 and max(sides) >= 4000  # small and large
    assert sum(p["name"].lower().endswith((".jpg", ".jpeg")) for p in photos) >= 30  # JPEG-compressed


def test_installed_pool_matches_the_manifest():
    for split in pool.SPLITS:
        paths = pool.split_paths(split, check=True)  # sha256 of every file
        assert [p.name for p in paths] == [e["name"] for e in pool.photos(split)]
    # The calibration manifest lists crops of calibration photos only.
    import json

    sources = {i["source"] for i in json.loads(MANIFEST.read_text())["items"]}
    assert sources == {p["name"] for p in pool.photos("calibration")}


def test_missing_pool_is_a_named_error(tmp_path, monkeypatch):
    monkeypatch.setenv("VIDEOSEAL_PHOTO_POOL", str(tmp_path / "empty"))
    with pytest.raises(PhotoPoolError, match="make photos"):
        list(split_items("validation"))


def test_changed_photo_is_refused(tmp_path, monkeypatch):
    copy = tmp_path / "pool"
    shutil.copytree(pool.pool_dir(), copy)
    victim = copy / pool.photos("evaluation")[0]["name"]
    victim.write_bytes(victim.read_bytes()[:-100] + b"\0" * 100)
    monkeypatch.setenv("VIDEOSEAL_PHOTO_POOL", str(copy))
    with pytest.raises(PhotoPoolError, match="sha256 differs"):
        pool.split_paths("evaluation", check=True)
    # install() puts a damaged photo back from its package (here the evaluation photo, a Debian one, is left
    # damaged on purpose: only PyPI photos are repaired in this test, so it needs no package registry).
    sk = next(p for p in pool.photos() if "pypi" in p["package"])
    (copy / sk["name"]).write_bytes(b"not the photo")
    monkeypatch.setattr(pool, "photos", lambda split=None: [sk])
    pool.install(copy)
    assert hashlib.sha256((copy / sk["name"]).read_bytes()).hexdigest() == sk["sha256"]


def test_a_photo_read_again_is_the_same_item_and_a_changed_one_is_read_anew(tmp_path):
    """Stages read the same photos many times: the second read comes from the process's view cache, the very
    same pixels as a fresh decode; a file changed on disk (new bytes, new mtime) is decoded again, never served old."""
    import os

    import numpy as np
    from PIL import Image

    from videoseal_litert.calibration_data import build

    rng = np.random.default_rng(0)
    path = tmp_path / "p.png"
    Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)).save(path)
    views = build.HELDOUT_VIEWS
    first = [i.pixels for i in build._items([path], views, 256, build.Tally())]
    again = [i.pixels for i in build._items([path], views, 256, build.Tally())]
    fresh = [build.view(build.read_rgb(path), s, w, 256) for s, w in views]
    assert all(np.array_equal(a, b) and np.array_equal(a, c) and a.dtype == c.dtype for a, b, c in zip(first, again, fresh, strict=True))
    Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)).save(path)
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    changed = [i.pixels for i in build._items([path], views, 256, build.Tally())]
    assert not np.array_equal(changed[0], first[0])
    assert np.array_equal(changed[0], build.view(build.read_rgb(path), *views[0], 256))
