"""Photos kept as they were (issue 41): one choice for EXIF orientation (applied, as browsers and phone galleries show a
photo) in the pipeline's reader and the bundle's runners; the bundle's embedder carries alpha, EXIF and the ICC
profile through untouched and says when a grayscale photo comes back RGB."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image, ImageCms

from videoseal_litert.core.images import read_rgb
from videoseal_litert.runtime import run_embedder, run_extractor

ORIENTATION = 0x0112


def _photo(h: int = 200, w: int = 300) -> np.ndarray:
    """A smooth photo-like picture with an asymmetric feature (a bright corner), so a rotation shows."""
    y, x = np.mgrid[0:h, 0:w]
    rgb = np.stack([x / w, y / h, 0.5 + 0.3 * np.sin(x / 17.0) * np.cos(y / 11.0)], -1)
    rgb[:20, :30] = 1.0
    return (np.clip(rgb, 0, 1) * 255).astype(np.uint8)


def _rotated_jpeg(path) -> None:
    """Stored 300 wide and 200 high, with EXIF orientation 6 (show rotated 90 degrees clockwise) and an sRGB profile."""
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    Image.fromarray(_photo()).save(path, quality=95, exif=exif.tobytes(), icc_profile=icc)


def test_exif_orientation_is_applied_by_every_python_reader(tmp_path):
    src = tmp_path / "phone.jpg"
    _rotated_jpeg(src)
    upright = np.asarray(Image.open(src).rotate(-90, expand=True).convert("RGB"), np.float32) / 255  # rotated by hand
    assert upright.shape == (300, 200, 3)
    got = read_rgb(src).transpose(1, 2, 0)  # the pipeline's reader (demo, evaluate, verification on your photos)
    assert got.shape == upright.shape and np.abs(got - upright).max() == 0
    small = run_extractor.load_image(src, 256)[0]  # the bundle's extractor runner
    want = np.asarray(Image.fromarray((upright * 255).round().astype(np.uint8)).resize((256, 256), Image.BILINEAR), np.float32) / 255
    assert np.array_equal(small, want)


@pytest.fixture(scope="module")
def embedder(demo_run, tmp_path_factory):
    """The tiny pair's INT8 embedder with a model.json beside it, as a bundle holds them."""
    out, rc, _ = demo_run
    assert rc == 0
    d = tmp_path_factory.mktemp("emb")
    route = json.loads((out / "tiny" / "embedder.json").read_text())["route"]
    (d / "model.json").write_text(json.dumps({"embedder": {"route": route}}))
    (d / "embedder-int8.tflite").write_bytes((out / "tiny" / "embedder-int8.tflite").read_bytes())
    return d


def _embed(embedder, src, dst, capsys) -> str:
    assert run_embedder.main([str(embedder / "embedder-int8.tflite"), str(src), "--bits", "e07ff66e5007", "--out", str(dst)]) == 0
    return capsys.readouterr().out


def test_the_embedder_keeps_orientation_exif_and_colour_profile(embedder, tmp_path, capsys):
    src, dst = tmp_path / "phone.jpg", tmp_path / "phone-watermarked.png"
    _rotated_jpeg(src)
    line = _embed(embedder, src, dst, capsys)
    assert "(200x300, kept EXIF, ICC profile)" in line, line
    with Image.open(dst) as im, Image.open(src) as orig:
        assert im.size == (200, 300) and im.mode == "RGB"  # upright, as the page shows it
        assert im.getexif()[ORIENTATION] == 1 and im.info["icc_profile"] == orig.info["icc_profile"]
        marked = np.asarray(im, np.float32) / 255
    upright = read_rgb(src).transpose(1, 2, 0)
    assert 30 < 10 * np.log10(1 / np.mean((marked - upright) ** 2)) < 60  # watermarked, and the same picture


def test_the_embedder_keeps_transparency_and_says_grayscale_comes_back_rgb(embedder, tmp_path, capsys):
    rgba = np.dstack([_photo(), np.full((200, 300), 255, np.uint8)])
    rgba[:, :100, 3] = 0  # a clear left third
    rgba[50:60, :, 3] = 128  # a half-transparent band
    src, dst = tmp_path / "logo.png", tmp_path / "logo-watermarked.png"
    Image.fromarray(rgba, "RGBA").save(src)
    assert "kept transparency" in _embed(embedder, src, dst, capsys)
    with Image.open(dst) as im:
        assert im.mode == "RGBA" and np.array_equal(np.asarray(im)[..., 3], rgba[..., 3])  # the alpha channel untouched
        assert not np.array_equal(np.asarray(im)[..., :3], rgba[..., :3])  # the colour is watermarked
    gray = tmp_path / "gray.png"
    Image.fromarray(_photo()[..., 1], "L").save(gray)
    line = _embed(embedder, gray, tmp_path / "gray-watermarked.png", capsys)
    assert "saved as RGB" in line and Image.open(tmp_path / "gray-watermarked.png").mode == "RGB"
