"""Image files in and out, for every floor: the readable image files of a folder, one read as float RGB in [0, 1], pixels
as 8 bits. numpy and Pillow only (no torch): the bottom layer, so reading a photo needs no model code."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from videoseal_litert.core.errors import ImageError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
MIN_SIDE = 32


@dataclass
class Tally:
    """What a pass over image files took and left: readable sources, items made, and every file
    rejected with the reason (stages name each on the terminal and count them in their summary)."""

    sources: int = 0
    items: int = 0
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (file, why)
    used: int = 0

    def as_dict(self) -> dict[str, object]:
        return {
            "sources": self.sources,
            "items": self.items,
            "used": self.used,
            "rejected": [{"file": f, "why": w} for f, w in self.rejected],
        }


def read_rgb(path: str | Path) -> np.ndarray:
    """Read an image as float32 (3, H, W) RGB in [0, 1].

    EXIF orientation is applied (the photo as a browser, a phone's gallery and the page show it: the project's one
    choice, made the same way by the bundle's runners and the page). Grayscale is repeated to three channels, alpha is
    dropped (the pixels are used as stored), CMYK and palette images are converted to RGB, 16-bit images are scaled by
    65535. Files that are not images, or are smaller than MIN_SIDE pixels on a side, raise ImageError.
    """
    path = Path(path)
    if path.is_file() and path.stat().st_size == 0:
        raise ImageError(f"{path}: empty file (0 bytes), not an image")
    try:
        with Image.open(path) as opened:
            im = ImageOps.exif_transpose(opened)
            im.load()
            mode = im.mode
            if mode in ("I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(im, dtype=np.float32)
                arr = arr / (65535.0 if arr.max() > 255 or mode.startswith("I;16") else 255.0)
                arr = np.repeat(arr[..., None], 3, axis=-1)
            elif mode == "F":
                raise ImageError(f"{path}: floating-point images (mode F) have no defined range; convert to 8 or 16 bits")
            else:
                arr = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    except Image.DecompressionBombError as e:
        raise ImageError(
            f"{path}: refused as a possible decompression bomb: {e} (an image that large is not a photo to watermark; resize it first)"
        ) from e
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"{path}: not a readable image ({e})") from e
    h, w = arr.shape[:2]
    if min(h, w) < MIN_SIDE:
        raise ImageError(f"{path}: image is {w}x{h}, smaller than {MIN_SIDE} px on a side")
    return np.ascontiguousarray(np.clip(arr, 0.0, 1.0).transpose(2, 0, 1))


def to_uint8(x: np.ndarray) -> np.ndarray:
    """Float pixels in [0, 1] as 8 bits (rounded, clipped)."""
    return np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)


def list_images(directory: str | Path, tally: Tally | None = None) -> list[Path]:
    """Image files of a directory, sorted; other files are skipped, named in the log and in ``tally``."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ImageError(f"image directory not found: {directory}")
    files = sorted(p for p in directory.iterdir() if p.is_file())
    images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    for p in files:
        if p not in images:
            log.warning("skipping %s: not an image file (%s)", p.name, p.suffix or "no suffix")
            if tally is not None:
                tally.rejected.append((p.name, f"not an image file ({p.suffix or 'no suffix'})"))
    if not images:
        raise ImageError(f"no image files in {directory} (looked for {', '.join(IMAGE_SUFFIXES)})")
    return images
