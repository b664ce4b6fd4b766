"""The official image attack suite (``videoseal/augmentation``, ``get_validation_augs``), on one image.

Used by ``make evaluate`` (any attack of the suite) and by verification: the held-out and validation sets
carry the watermarked views under ``VERIFY_ATTACKS`` (``calibration_data/build.attacked_items``), each judged
against PyTorch on the same attacked input.

Each attack takes a (3, H, W) float tensor in [0, 1] at the image's own size and a seeded
``torch.Generator`` (crop position and perspective corners are random in the official code, drawn with
the same formulas here from the generator instead of the global RNG, so a run is reproducible and two
engines draw the same numbers), and returns the attacked image, which the evaluation then stores as
8 bits (what a platform scanning uploads receives).

Written here rather than imported: the official classes call ``torchvision.transforms.functional``,
and torchvision cannot be installed beside this project's pinned CPU torch without pulling another
torch. Each function below computes what the torchvision function the official class calls computes
(the formulas are in the docstrings; ``tests/test_evaluate.py`` checks them on fixed inputs against
independent implementations: PIL's JPEG, ``colorsys``, ``np.rot90``, a direct convolution, a direct
median).
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from videoseal_litert.core.errors import UsageError

AttackFn = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


@dataclass(frozen=True)
class Attack:
    """One attack at one strength: ``name`` is what rows and tables show (``jpeg_40``, ``crop_0.71``)."""

    name: str
    family: str
    strength: float | None
    fn: AttackFn

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return self.fn(x, gen)


# ---- geometric (official geometric.py) -------------------------------------------------------------


def hflip(x: torch.Tensor) -> torch.Tensor:
    return x.flip(-1)


def rotate(x: torch.Tensor, angle: float) -> torch.Tensor:
    """torchvision ``F.rotate(img, angle)`` on a tensor: counter-clockwise by ``angle`` degrees about the
    centre, nearest neighbour, same size, zeros outside. The inverse map of an output pixel centre
    (x, y), taken from the centre, is (cos a x - sin a y, sin a x + cos a y)."""
    _, h, w = x.shape
    a = math.radians(angle)
    theta = torch.tensor([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0]], dtype=torch.float64)
    return _sample(x, _affine_grid(theta, w, h), "nearest")


def _affine_grid(theta: torch.Tensor, w: int, h: int) -> torch.Tensor:
    """torchvision's ``_gen_affine_grid``: pixel centres from the image centre, mapped by ``theta``, to
    ``grid_sample``'s [-1, 1] coordinates (align_corners=False)."""
    xs = torch.linspace(-w * 0.5 + 0.5, w * 0.5 - 0.5, w, dtype=torch.float64)
    ys = torch.linspace(-h * 0.5 + 0.5, h * 0.5 - 0.5, h, dtype=torch.float64)
    base = torch.stack([xs.expand(h, w), ys[:, None].expand(h, w), torch.ones(h, w, dtype=torch.float64)], -1)
    grid = base.reshape(-1, 3) @ (theta.T / torch.tensor([0.5 * w, 0.5 * h], dtype=torch.float64))
    return grid.reshape(1, h, w, 2)


def _sample(x: torch.Tensor, grid: torch.Tensor, mode: str) -> torch.Tensor:
    return F.grid_sample(x[None], grid.to(x.dtype), mode=mode, padding_mode="zeros", align_corners=False)[0]


def resize(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Official ``Resize`` at a fixed ratio: (int(s h), int(s w)), bilinear with antialias (torchvision's tensor resize)."""
    _, h, w = x.shape
    return F.interpolate(x[None], size=(int(scale * h), int(scale * w)), mode="bilinear", align_corners=False, antialias=True)[0]


def crop(x: torch.Tensor, scale: float, gen: torch.Generator) -> torch.Tensor:
    """Official ``Crop``: an (int(s h), int(s w)) window at a random position (``RandomCrop.get_params``)."""
    _, h, w = x.shape
    th, tw = int(scale * h), int(scale * w)
    i = int(torch.randint(0, h - th + 1, (1,), generator=gen)) if h > th else 0
    j = int(torch.randint(0, w - tw + 1, (1,), generator=gen)) if w > tw else 0
    return x[:, i : i + th, j : j + tw]


def perspective_points(width: int, height: int, d: float, gen: torch.Generator) -> tuple[list[list[int]], list[list[int]]]:
    """Official ``Perspective.get_perspective_params``: each corner moved inwards by a random amount up to d x half the side."""

    def r(lo: int, hi: int) -> int:
        return int(torch.randint(lo, hi, (1,), generator=gen))

    hw, hh = width // 2, height // 2
    dx, dy = int(d * hw), int(d * hh)
    tl = [r(0, dx + 1), r(0, dy + 1)]
    tr = [r(width - dx - 1, width), r(0, dy + 1)]
    br = [r(width - dx - 1, width), r(height - dy - 1, height)]
    bl = [r(0, dx + 1), r(height - dy - 1, height)]
    start = [[0, 0], [width - 1, 0], [width - 1, height - 1], [0, height - 1]]
    return start, [tl, tr, br, bl]


def perspective_coeffs(start: list[list[int]], end: list[list[int]]) -> torch.Tensor:
    """torchvision's ``_get_perspective_coeffs``: the 8 homography coefficients mapping output (end) points to input (start) points."""
    a = torch.zeros(8, 8, dtype=torch.float64)
    for i, (p1, p2) in enumerate(zip(end, start, strict=True)):
        a[2 * i] = torch.tensor([p1[0], p1[1], 1, 0, 0, 0, -p2[0] * p1[0], -p2[0] * p1[1]], dtype=torch.float64)
        a[2 * i + 1] = torch.tensor([0, 0, 0, p1[0], p1[1], 1, -p2[1] * p1[0], -p2[1] * p1[1]], dtype=torch.float64)
    b = torch.tensor(start, dtype=torch.float64).reshape(8)
    return torch.linalg.lstsq(a, b[:, None]).solution[:, 0]


def perspective(x: torch.Tensor, d: float, gen: torch.Generator) -> torch.Tensor:
    """Official ``Perspective`` at distortion scale d: torchvision ``F.perspective`` (bilinear, zeros outside)."""
    _, h, w = x.shape
    start, end = perspective_points(w, h, d, gen)
    c = perspective_coeffs(start, end)
    xs = torch.linspace(0.5, w - 0.5, w, dtype=torch.float64)
    ys = torch.linspace(0.5, h - 0.5, h, dtype=torch.float64)
    base = torch.stack([xs.expand(h, w), ys[:, None].expand(h, w), torch.ones(h, w, dtype=torch.float64)], -1).reshape(-1, 3)
    theta1 = torch.stack([c[0:3], c[3:6]])
    theta2 = torch.stack([torch.cat([c[6:8], c.new_ones(1)])] * 2)
    num = base @ (theta1.T / torch.tensor([0.5 * w, 0.5 * h], dtype=torch.float64))
    grid = num / (base @ theta2.T) - 1.0
    return _sample(x, grid.reshape(1, h, w, 2), "bilinear")


# ---- valuemetric (official valuemetric.py) ---------------------------------------------------------


def brightness(x: torch.Tensor, f: float) -> torch.Tensor:
    """torchvision ``adjust_brightness``: clamp(f x, 0, 1)."""
    return (x * f).clamp(0, 1)


def luma(x: torch.Tensor) -> torch.Tensor:
    """torchvision ``rgb_to_grayscale``: 0.2989 R + 0.587 G + 0.114 B."""
    return 0.2989 * x[0] + 0.587 * x[1] + 0.114 * x[2]


def contrast(x: torch.Tensor, f: float) -> torch.Tensor:
    """torchvision ``adjust_contrast``: blend with the mean of the image's grayscale, clamp(f x + (1 - f) mean, 0, 1)."""
    return (f * x + (1 - f) * luma(x).mean()).clamp(0, 1)


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """Official ``Grayscale``: ITU-R BT.601 luma 0.299 R + 0.587 G + 0.114 B on every channel."""
    return (0.299 * x[0:1] + 0.587 * x[1:2] + 0.114 * x[2:3]).expand_as(x).contiguous()


def hue(x: torch.Tensor, f: float) -> torch.Tensor:
    """torchvision ``adjust_hue``: RGB -> HSV, hue shifted by f (mod 1), back to RGB."""
    r, g, b = x[0], x[1], x[2]
    maxc, minc = x.max(0).values, x.min(0).values
    eqc = maxc == minc
    cr = maxc - minc
    ones = torch.ones_like(maxc)
    s = cr / torch.where(eqc, ones, maxc)
    crd = torch.where(eqc, ones, cr)
    rc, gc, bc = (maxc - r) / crd, (maxc - g) / crd, (maxc - b) / crd
    hr = (maxc == r) * (bc - gc)
    hg = ((maxc == g) & (maxc != r)) * (2.0 + rc - bc)
    hb = ((maxc != g) & (maxc != r)) * (4.0 + gc - rc)
    h = torch.fmod((hr + hg + hb) / 6.0 + 1.0, 1.0)
    h = torch.remainder(h + f, 1.0)
    v = maxc
    i = torch.floor(h * 6.0)
    fr = h * 6.0 - i
    i = i.to(torch.int64) % 6
    p = (v * (1.0 - s)).clamp(0, 1)
    q = (v * (1.0 - s * fr)).clamp(0, 1)
    t = (v * (1.0 - s * (1.0 - fr))).clamp(0, 1)
    mask = i[None] == torch.arange(6)[:, None, None]
    a1 = torch.stack((v, q, p, p, t, v))
    a2 = torch.stack((t, v, v, q, p, p))
    a3 = torch.stack((p, p, t, v, v, q))
    return torch.stack([(mask * a).sum(0) for a in (a1, a2, a3)])


def jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    """Official ``jpeg_compress``: clamp, round to 8 bits, PIL JPEG at ``quality``, decoded back to [0, 1]."""
    u8 = (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    buf = io.BytesIO()
    Image.fromarray(u8).save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    with Image.open(buf) as im:
        return torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()


def gaussian_kernel(k: int) -> torch.Tensor:
    """torchvision's 1-D kernel for ``gaussian_blur(img, k)``: sigma = 0.3 ((k - 1) / 2 - 1) + 0.8, normalised."""
    sigma = 0.3 * ((k - 1) * 0.5 - 1) + 0.8
    xs = torch.linspace(-(k - 1) * 0.5, (k - 1) * 0.5, k)
    pdf = torch.exp(-0.5 * (xs / sigma).pow(2))
    return pdf / pdf.sum()


def gaussian_blur(x: torch.Tensor, k: int) -> torch.Tensor:
    """torchvision ``gaussian_blur(img, k)``: the separable kernel above as one k x k kernel, reflect padding."""
    k1 = gaussian_kernel(k)
    k2 = (k1[:, None] * k1[None, :]).expand(3, 1, k, k)
    p = k // 2
    return F.conv2d(F.pad(x[None], (p, p, p, p), mode="reflect"), k2, groups=3)[0]


# Rows per strip of the median filter: about this many bytes of windows at a time (a 20-megapixel photo
# at k = 17 would otherwise hold 17 copies of itself, 4 GB).
MEDIAN_STRIP_BYTES = 64 << 20


def median_filter(x: torch.Tensor, k: int) -> torch.Tensor:
    """Official ``median_filter``: zero padding, then for each window the median over its rows of the
    medians along each row (the official code's two successive medians, not the 2-D median).

    Computed as two 1-D medians: the median along a window's row is the horizontal 1-D median filter
    of the padded image at that row, shared by the k windows that contain the row, so the work is
    2k per pixel instead of the official unfold's k * k (a 1024 x 576 photo at k = 17: 0.5 s, not
    5.5 s); the values are the same."""
    if k % 2 == 0:
        raise UsageError(f"median filter kernel size {k} is even; it must be odd")
    p = k // 2
    xp = F.pad(x[None], (p, p, p, p))[0]
    h, w = x.shape[1:]
    rows = max(1, MEDIAN_STRIP_BYTES // (x.shape[0] * w * k * x.element_size()))
    out = []
    for r in range(0, h, rows):
        strip = xp[:, r : min(r + rows, h) + 2 * p]
        along = strip.unfold(2, k, 1).median(dim=-1).values  # C, rows + 2p, W: each row's medians
        out.append(along.unfold(1, k, 1).median(dim=-1).values)  # then over the k rows of each window
    return torch.cat(out, 1)


def sequential_jpeg_crop_brightness(x: torch.Tensor, q: int, s: float, f: float, gen: torch.Generator) -> torch.Tensor:
    """Official ``Sequential(JPEG(), Crop(), Brightness())`` at (q, s, f)."""
    return brightness(crop(jpeg(x, q), s, gen), f)


# ---- the suites ------------------------------------------------------------------------------------


def _fmt(v: float) -> str:
    return f"{v:g}"


def _family(family: str, strengths: list[float], fn: Callable[[torch.Tensor, float, torch.Generator], torch.Tensor]) -> list[Attack]:
    return [Attack(f"{family}_{_fmt(s)}", family, float(s), lambda x, g, s=s: fn(x, s, g)) for s in strengths]


def official_suite() -> list[Attack]:
    """``get_validation_augs(is_video=False)`` of the official code, strengths as listed there, plus
    grayscale (the official ``Grayscale`` class, which the issue names)."""
    suite = [
        Attack("identity", "identity", None, lambda x, g: x),
        Attack("hflip", "hflip", None, lambda x, g: hflip(x)),
        *_family("rotate", [5, 10, 30, 45, 90], lambda x, s, g: rotate(x, s)),
        *_family("resize", [0.32, 0.45, 0.55, 0.63, 0.71, 0.77, 0.84, 0.89, 0.95, 1.00], lambda x, s, g: resize(x, s)),
        *_family("crop", [0.32, 0.45, 0.55, 0.63, 0.71, 0.77, 0.84, 0.89, 0.95, 1.00], crop),
        *_family("perspective", [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8], perspective),
        *_family("brightness", [0.1, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0], lambda x, s, g: brightness(x, s)),
        *_family("contrast", [0.1, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0], lambda x, s, g: contrast(x, s)),
        *_family("hue", [-0.4, -0.3, -0.2, -0.1, 0.0, 0.1, 0.2, 0.3, 0.4, 0.5], lambda x, s, g: hue(x, s)),
        Attack("grayscale", "grayscale", None, lambda x, g: grayscale(x)),
        *_family("jpeg", [40, 50, 60, 70, 80, 90], lambda x, s, g: jpeg(x, int(s))),
        *_family("gaussian_blur", [3, 5, 9, 13, 17], lambda x, s, g: gaussian_blur(x, int(s))),
        *_family("median_filter", [3, 5, 9, 13, 17], lambda x, s, g: median_filter(x, int(s))),
    ]
    for q in (40, 60, 80):
        suite.append(
            Attack(
                f"jpeg_crop_brightness_{q}_0.71_0.5",
                "jpeg_crop_brightness",
                float(q),
                lambda x, g, q=q: sequential_jpeg_crop_brightness(x, q, 0.71, 0.5, g),
            )
        )
    return suite


# What a shared photo meets (issue 38): the watermarked views of the verification and validation sets under
# these, at the strengths users meet, are judged against PyTorch on the same attacked inputs.
VERIFY_ATTACKS = ("jpeg_80", "jpeg_50", "brightness_1.5", "gaussian_blur_5", "resize_0.5")

# ``quick``: one strength of the common edits; ``robustness``: the edits `make robustness` has always shown.
PRESETS = {
    "quick": ("identity", "jpeg_50", "resize_0.5", "crop_0.71", "brightness_1.5", "gaussian_blur_9", "jpeg_crop_brightness_60_0.71_0.5"),
    "robustness": ("identity", "jpeg_80", "jpeg_50", "resize_0.5", "crop_0.5", "brightness_1.5", "gaussian_blur_5"),
}


def _by_name(name: str) -> Attack | None:
    """An attack of the suite by name, or one at a strength the suite does not list (``resize_0.5``)."""
    for a in official_suite():
        if a.name == name:
            return a
    makers: dict[str, Callable[[float], AttackFn]] = {
        "rotate": lambda s: lambda x, g: rotate(x, s),
        "resize": lambda s: lambda x, g: resize(x, s),
        "crop": lambda s: lambda x, g: crop(x, s, g),
        "perspective": lambda s: lambda x, g: perspective(x, s, g),
        "brightness": lambda s: lambda x, g: brightness(x, s),
        "contrast": lambda s: lambda x, g: contrast(x, s),
        "hue": lambda s: lambda x, g: hue(x, s),
        "jpeg": lambda s: lambda x, g: jpeg(x, int(s)),
        "gaussian_blur": lambda s: lambda x, g: gaussian_blur(x, int(s)),
        "median_filter": lambda s: lambda x, g: median_filter(x, int(s)),
    }
    family, _, value = name.rpartition("_")
    try:
        s = float(value)
    except ValueError:
        return None
    if family not in makers:
        return None
    return Attack(f"{family}_{_fmt(s)}", family, s, makers[family](s))


def resolve_attacks(spec: str | None) -> list[Attack]:
    """``None``/``official``: the official suite; a preset (``quick``, ``robustness``); or a comma list of
    attack names (``jpeg_40``, ``resize_0.5``) and families (``jpeg``: every strength of the suite)."""
    spec = (spec or "official").strip()
    if spec == "official":
        return official_suite()
    names = list(PRESETS[spec]) if spec in PRESETS else [s.strip() for s in spec.split(",") if s.strip()]
    suite = official_suite()
    families = {a.family for a in suite}
    out: list[Attack] = []
    for n in names:
        if n in families and not any(a.name == n for a in suite):
            out += [a for a in suite if a.family == n]
            continue
        a = _by_name(n)
        if a is None:
            raise UsageError(
                f"unknown attack {n!r}: use official, {', '.join(PRESETS)}, a family ({', '.join(sorted(families))}) "
                "or family_strength (jpeg_40, resize_0.5)"
            )
        out.append(a)
    if len({a.name for a in out}) != len(out):
        raise UsageError(f"attack list {spec!r} names an attack twice")
    return out
