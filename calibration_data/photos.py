"""Which real photographs each use reads: all from the photo pool (``pool.py``, split by photo).

Calibration reads the pool's calibration split, the accuracy control its validation split, the
demo its evaluation split. Stage verification reads seven photos of the evaluation split that
scikit-image ships (so it needs no pool install): ``HELDOUT_PHOTOS``, three views each.
``motorcycle_left`` and ``motorcycle_right`` are a stereo pair of one scene and stay together.
"""

from __future__ import annotations

from pathlib import Path

from videoseal_litert.calibration_data.pool import split_paths

HELDOUT_PHOTOS: tuple[str, ...] = (
    "astronaut.png",
    "coffee.png",
    "rocket.jpg",
    "motorcycle_left.png",
    "motorcycle_right.png",
    "camera.png",
    "coins.png",
)
# The photos the tiny pair was trained on (``make train-tiny``): all in the calibration split.
TRAINING_PHOTOS: tuple[str, ...] = (
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


def training_photo_paths() -> list[Path]:
    d = skimage_data_dir()
    return [d / name for name in TRAINING_PHOTOS]


def calibration_photo_paths() -> list[Path]:
    return split_paths("calibration")
