"""Real photographs available offline, split once into calibration and held-out sets.

scikit-image ships a handful of real photographs. They are split here by photo (never by crop),
so nothing a model is calibrated on is ever used to verify it. ``motorcycle_left`` and
``motorcycle_right`` are a stereo pair of one scene and stay together in the held-out set.
"""

from __future__ import annotations

from pathlib import Path

HELDOUT_PHOTOS: tuple[str, ...] = (
    "astronaut.png",
    "coffee.png",
    "rocket.jpg",
    "motorcycle_left.png",
    "motorcycle_right.png",
    "camera.png",
    "coins.png",
)
CALIBRATION_PHOTOS: tuple[str, ...] = (
    "chelsea.png",
    "hubble_deep_field.jpg",
    "ihc.png",
    "retina.jpg",
    "brick.png",
    "cell.png",
    "clock_motion.png",
    "grass.png",
    "gravel.png",
    "moon.png",
    "page.png",
    "text.png",
)


def skimage_data_dir() -> Path:
    import skimage

    return Path(skimage.__file__).resolve().parent / "data"


def heldout_paths() -> list[Path]:
    d = skimage_data_dir()
    return [d / name for name in HELDOUT_PHOTOS]


def calibration_photo_paths() -> list[Path]:
    d = skimage_data_dir()
    return [d / name for name in CALIBRATION_PHOTOS]
