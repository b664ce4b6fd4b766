"""Deterministic calibration and held-out image sets from real photographs.

Fixed rule, no randomness: each photo of the pool's calibration split (``pool.py``) gives three
square crops of its short side (1.0 centred, 0.75 top-left, 0.5 bottom-right), each resized to
256x256 as official ``detect()`` resizes (bilinear, antialias). Held-out photos give three views (full, centre crop 0.6, flip). Items are streamed,
one at a time, so memory stays flat in their number. ``manifest.json`` (committed) lists every
calibration item with its source and the sha256 of its 256x256x3 uint8 pixels.
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from videoseal_litert.calibration_data.detect_resize import resize_like_detect
from videoseal_litert.calibration_data.photos import calibration_photo_paths, heldout_paths
from videoseal_litert.core.errors import ImageError
from videoseal_litert.core.images import Tally, list_images, read_rgb, to_uint8

log = logging.getLogger(__name__)

MANIFEST = Path(__file__).resolve().parent / "manifest.json"
CALIB_VIEWS: tuple[tuple[float, str], ...] = (
    (1.0, "center"),
    (0.75, "top-left"),
    (0.5, "bottom-right"),
)
HELDOUT_VIEWS: tuple[tuple[float, str], ...] = ((0.0, "full"), (0.6, "center"), (0.0, "full-flip"))
# The embedder's validation split (what its accuracy control chooses on, by a continuous figure: the watermark's SNR
# against the file's error): the full view and the centre crop of each photo; the flip, a mirror of the same photo,
# would add a third more covers to every candidate for little. The extractor keeps all three views there, each
# watermarked and attacked: with two, its control stopped a group short of what H.264'd frames needed.
VALIDATION_VIEWS: tuple[tuple[float, str], ...] = HELDOUT_VIEWS[:2]


@dataclass(frozen=True)
class Item:
    """One 256x256 input: where it came from and its pixels as float32 (1, 3, 256, 256) in [0, 1]."""

    name: str
    source: str
    view: str
    pixels: np.ndarray

    @property
    def sha256(self) -> str:
        return hashlib.sha256(to_uint8(self.pixels).tobytes()).hexdigest()


def view(img: np.ndarray, scale: float, where: str, size: int) -> np.ndarray:
    """One view of a (3, H, W) image: a square crop at `scale` of the short side, or the full image (scale 0)."""
    return view_u8(img, scale, where, size).astype(np.float32) / 255.0


def view_u8(img: np.ndarray, scale: float, where: str, size: int) -> np.ndarray:
    """:func:`view`'s 8-bit pixels."""
    if where.endswith("flip"):
        img = img[:, :, ::-1]
    if scale > 0:
        _, h, w = img.shape
        s = max(1, int(round(min(h, w) * scale)))
        if where.startswith("top-left"):
            y, x = 0, 0
        elif where.startswith("bottom-right"):
            y, x = h - s, w - s
        else:
            y, x = (h - s) // 2, (w - s) // 2
        img = img[:, y : y + s, x : x + s]
    # Quantize to 8 bits like a stored image, so an item is fully described by its uint8 pixels.
    return to_uint8(resize_like_detect(np.ascontiguousarray(img), size).numpy())


# Views already made in this process, as their 8-bit pixels, by (file, its mtime and size, view, size): every
# stage, variant and check reads the same photos again (the demo made 438 item sets from 193 decodes of about
# 50 ms each); an item is its 8-bit pixels, so a cached one is the very same array. At most VIEW_CACHE views
# (197 KB each at 256 x 256: 100 MB).
VIEW_CACHE = 512
_views: OrderedDict[tuple[Any, ...], np.ndarray] = OrderedDict()


def _cached_views(p: Path, views: tuple[tuple[float, str], ...], size: int) -> list[np.ndarray]:
    """The 8-bit (3, size, size) pixels of each view of ``p``, decoding it only when one is not cached."""
    if not p.is_file():
        read_rgb(p)  # the ImageError that names it
    st = p.stat()
    keys = [(str(p.resolve()), st.st_mtime_ns, st.st_size, size, scale, where) for scale, where in views]
    if not all(k in _views for k in keys):
        img = read_rgb(p)  # ImageError names a file that is not a photo (never cached)
        for k, (scale, where) in zip(keys, views, strict=True):
            _views[k] = view_u8(img, scale, where, size)
    out = []
    for k in keys:
        _views.move_to_end(k)
        out.append(_views[k])
    while len(_views) > VIEW_CACHE:
        _views.popitem(last=False)
    return out


def _items(paths: list[Path], views: tuple[tuple[float, str], ...], size: int, tally: Tally) -> Iterator[Item]:
    for p in paths:
        try:
            pixels = _cached_views(p, views, size)
        except ImageError as e:
            log.warning("rejected %s", e)
            tally.rejected.append((p.name, str(e).removeprefix(f"{p}: ")))
            continue
        tally.sources += 1
        for (scale, where), u8 in zip(views, pixels, strict=True):
            tag = f"{where}" if scale in (0.0, 1.0) else f"{where}@{scale:g}"
            tally.items += 1
            yield Item(f"{p.stem}:{tag}", p.name, tag, u8.astype(np.float32) / 255.0)


def calibration_items(user_dir: Path | None = None, size: int = 256, tally: Tally | None = None) -> Iterator[Item]:
    """The built-in calibration items, then every image of `user_dir` (full view), streamed."""
    tally = Tally() if tally is None else tally
    yield from _items(calibration_photo_paths(), CALIB_VIEWS, size, tally)
    if user_dir is not None:
        yield from _items(list_images(user_dir, tally), ((0.0, "full"),), size, tally)


def heldout_items(user_dir: Path | None = None, size: int = 256, tally: Tally | None = None) -> Iterator[Item]:
    """Verification items: never calibration photos. `user_dir` replaces the built-in held-out set."""
    tally = Tally() if tally is None else tally
    if user_dir is not None:
        yield from _items(list_images(user_dir, tally), ((0.0, "full"),), size, tally)
    else:
        yield from _items(heldout_paths(), HELDOUT_VIEWS, size, tally)


def split_items(
    split: str, size: int = 256, tally: Tally | None = None, views: tuple[tuple[float, str], ...] = ((0.0, "full"),)
) -> Iterator[Item]:
    """Every photo of one split of the pool in ``views`` (default: the full view), resized to ``size`` as detect() does, streamed."""
    from videoseal_litert.calibration_data.pool import split_paths

    yield from _items(split_paths(split), views, size, Tally() if tally is None else tally)


WATERMARK_SUFFIX = "+wm"


def watermarked_items(items: Iterable[Item], embed: Callable[[np.ndarray, int], np.ndarray]) -> Iterator[Item]:
    """Each item, then the same item watermarked (``embed(pixels, index)`` gives its pixels), streamed.

    For a model with an embedder, what it meets in deployment is watermarked images: they join
    calibration (the bit-carrying activations are larger on them; calibrated on clean photos only,
    static INT8 clipped them) and verification (bits are compared where a message was embedded).
    Watermarked pixels are rounded to 8 bits, as a stored image is; ``embed`` owns its (seeded) messages.
    """
    for i, it in enumerate(items):
        yield it
        px = to_uint8(embed(it.pixels, i)).astype(np.float32) / 255.0
        yield Item(it.name + WATERMARK_SUFFIX, it.source, it.view + WATERMARK_SUFFIX, px)


ATTACK_MARK = WATERMARK_SUFFIX + "/"  # "astronaut:full+wm/jpeg_50": the watermarked view under an attack


def is_watermarked(name: str) -> bool:
    """The item carries a message: a watermarked view, or one under an attack."""
    return name.endswith(WATERMARK_SUFFIX) or ATTACK_MARK in name


def attack_of(name: str) -> str | None:
    """The attack that made an item (None: a clean or watermarked view)."""
    return name.split(ATTACK_MARK, 1)[1] if ATTACK_MARK in name else None


def attacked_items(items: Iterable[Item], attacks: Iterable[str], seed: int = 0) -> Iterator[Item]:
    """Each item, then after each watermarked view the same view under each attack (``calibration_data/attacks.py``
    names), streamed: what a shared photo meets. An attack that changes the size is undone as ``detect()`` does
    (bilinear, antialias, back to the item's size), and the result is rounded to 8 bits as a stored image is."""
    from videoseal_litert.calibration_data.attacks import resolve_attacks

    chosen = resolve_attacks(",".join(attacks)) if attacks else []
    for it in items:
        yield it
        if not chosen or not it.name.endswith(WATERMARK_SUFFIX):
            continue
        for a in chosen:
            yield Item(f"{it.name}/{a.name}", it.source, f"{it.view}/{a.name}", attacked(it.pixels, a, seed))


def attacked(pixels: np.ndarray, attack: object, seed: int = 0) -> np.ndarray:
    """(1, 3, S, S) pixels in [0, 1] after one attack of ``calibration_data/attacks.py``, back at S x S as ``detect()``
    resizes, rounded to 8 bits as a stored image is."""
    import torch

    size = pixels.shape[-1]
    y = attack(torch.from_numpy(np.ascontiguousarray(pixels[0], dtype=np.float32)), torch.Generator().manual_seed(seed))  # type: ignore[operator]
    if tuple(y.shape[-2:]) != (size, size):
        y = resize_like_detect(y[None], size)[0]
    return to_uint8(y.numpy()[None]).astype(np.float32) / 255.0


def build_manifest(size: int = 256) -> dict:
    items = [{"name": it.name, "source": it.source, "view": it.view, "sha256": it.sha256} for it in calibration_items(size=size)]
    return {
        "rule": "per photo of the pool's calibration split: square crops of the short side at 1.0 (centre), 0.75 (top-left) "
        "and 0.5 (bottom-right); each resized to 256x256 (bilinear, antialias) and rounded to uint8",
        "sha256_of": "the 256x256x3 uint8 pixels, C-order (channels, rows, columns)",
        "size": size,
        "heldout_photos": [p.name for p in heldout_paths()],
        "num_items": len(items),
        "items": items,
    }


def write_manifest() -> None:
    """Rewrite ``manifest.json`` from the fixed rule (``videoseal-litert calibration-manifest``)."""
    import json

    m = build_manifest()
    MANIFEST.write_text(json.dumps(m, indent=1) + "\n")
    log.info("wrote %s: %d items", MANIFEST, m["num_items"])
