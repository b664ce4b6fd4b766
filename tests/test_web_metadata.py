"""Photos kept as they were on the page (issue 41): ``web/metadata.js`` carries a photo's EXIF and ICC profile into the
page's saved PNG or JPEG, as the bundle's ``run_embedder.py`` does with Pillow; Pillow reads them back. Run in Node
(the module uses only what browsers and Node share: Blob, Response, CompressionStream)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms

WEB = Path(__file__).resolve().parent.parent / "web"

SCRIPT = """
import {readFileSync, writeFileSync} from 'node:fs';
import {readMetadata, withMetadata} from '%s';
const [src, out, type, dst] = process.argv.slice(2);
const meta = await readMetadata(new Blob([readFileSync(src)]));
const saved = await withMetadata(new Blob([readFileSync(out)], {type}), meta);
writeFileSync(dst, new Uint8Array(await saved.arrayBuffer()));
console.log(JSON.stringify({exif: meta.exif ? meta.exif.length : 0, icc: meta.icc ? meta.icc.length : 0}));
"""


def _carry(tmp_path: Path, src: Path, out: Path, type_: str) -> tuple[Path, dict]:
    script = tmp_path / "carry.mjs"
    script.write_text(SCRIPT % (WEB / "metadata.js").as_uri())
    dst = tmp_path / f"carried-{src.stem}{out.suffix}"
    r = subprocess.run(["node", str(script), str(src), str(out), type_, str(dst)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return dst, json.loads(r.stdout)


def test_exif_and_icc_carried_into_png_and_jpeg(tmp_path):
    rng = np.random.default_rng(0)
    pixels = Image.fromarray(rng.integers(0, 256, (40, 60, 3), np.uint8))
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes()  # not sRGB: a profile that matters
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways
    exif[0x010F] = "VideoSeal Test Camera"  # Make
    exif[0x0131] = "issue 41"  # Software
    sources = {"phone.jpg": "JPEG", "scan.png": "PNG"}
    for name, fmt in sources.items():
        pixels.save(tmp_path / name, format=fmt, exif=exif.tobytes(), icc_profile=icc)
    # What a canvas encoder gives: the page's pixels, no metadata at all.
    upright = pixels.transpose(Image.Transpose.ROTATE_270)
    upright.save(tmp_path / "canvas.png")
    upright.save(tmp_path / "canvas.jpg", quality=95)
    for name in sources:
        for out, type_ in ((tmp_path / "canvas.png", "image/png"), (tmp_path / "canvas.jpg", "image/jpeg")):
            dst, seen = _carry(tmp_path, tmp_path / name, out, type_)
            assert seen["icc"] == len(icc) and seen["exif"] > 0, (name, seen)
            with Image.open(dst) as im:
                im.load()
                assert im.info.get("icc_profile") == icc, (name, out.name)
                got = im.getexif()
                assert got.get(0x010F) == "VideoSeal Test Camera" and got.get(0x0131) == "issue 41", (name, out.name, dict(got))
                assert got.get(0x0112) == 1, "the saved pixels are upright: the carried EXIF must say so"
                # The pixels are the encoder's, untouched.
                with Image.open(out) as plain:
                    assert np.array_equal(np.asarray(im.convert("RGB")), np.asarray(plain.convert("RGB")))


def test_a_photo_without_metadata_is_saved_as_encoded(tmp_path):
    Image.new("RGB", (8, 8), (10, 20, 30)).save(tmp_path / "plain.png")
    dst, seen = _carry(tmp_path, tmp_path / "plain.png", tmp_path / "plain.png", "image/png")
    assert seen == {"exif": 0, "icc": 0} and dst.read_bytes() == (tmp_path / "plain.png").read_bytes()
