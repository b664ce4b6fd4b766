"""Host-side image handling: read any photo as RGB float in [0, 1], resize as official detect().

Official ``detect()`` resizes any other size to the model's size with bilinear interpolation,
``align_corners=False`` and ``antialias=True``, without keeping the aspect ratio. The same
preprocessing feeds PyTorch and TFLite, so verification compares the models, not two resizers.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)


def resize_like_detect(img: np.ndarray | torch.Tensor, size: int = 256) -> torch.Tensor:
    """(3, H, W) or (B, 3, H, W) in [0, 1] -> (B, 3, size, size), as official detect() resizes."""
    t = torch.as_tensor(img, dtype=torch.float32)
    if t.ndim == 3:
        t = t[None]
    if t.shape[-2:] == (size, size):
        return t
    return F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
