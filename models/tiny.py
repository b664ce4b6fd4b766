"""The project's own small watermark pair: a tile embedder and the ``tiny`` ConvNeXt-V2 extractor.

A demo and test fixture for the conversion pipeline (trained on 2 CPU cores by
``demo/train_tiny.py``), not a production watermarker and not an official VideoSeal model.

- **Extractor**: built from ``models/cards/tiny.yaml`` by the same card reader, ConvNeXt-V2 code and
  pixel decoder as the released extractors (``models/convnext.py``), so it converts and quantizes
  like them. Its weights live under ``detector.`` in the shipped checkpoint, as in an official one.
- **Embedder** (:class:`TileEmbedder`): each bit ``k`` selects one of two learned 3 x T x T tiles,
  ``pattern = sum_k m_k A_k + (1 - m_k) B_k``; the pattern is low-passed (frequencies up to
  ``max_frequency`` cycles per tile, no DC), normalised to unit RMS, and repeated over the image
  from its top-left corner. The residual does not depend on the image, only on the message.

Why this design (measured, ``demo/train_tiny.py`` and docs/tiny-pair.md): the extractor ends in a global
mean, so it cannot read a pattern at an arbitrary offset except through texture statistics, and
training from scratch sits at chance for thousands of steps. With the tile period T = 32 equal to
the extractor's total stride (stem 4 x three 2x downsamplings) and the pattern anchored at the
image's corner, every final-stage location sees the same phase of the pattern, the read-out can be
linear, and the pair learns in a few hundred steps. The price: the watermark survives JPEG,
resizing, brightness changes and blur, but not crops or shifts that move the 32-pixel grid.

Blend, as the official models: ``clamp(scaling_i * image + scaling_w * residual, 0, 1)``; with a
unit-RMS residual, ``scaling_w`` sets the PSNR (about ``-20 log10(scaling_w)`` dB before clamping).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
import yaml
from torch import nn

from videoseal_litert.core.errors import CardError
from videoseal_litert.models.embedders import EmbedderFamily, register_embedder_family, registered_embedder_families
from videoseal_litert.models.families import QuantPolicy

EMBEDDER_MODEL = "tile_tiny"


@dataclass(frozen=True)
class EmbedderConfig:
    """The embedder section and blend factors of the tiny card."""

    family: ClassVar[str] = "tile"
    nbits: int
    tile_size: int = 32
    max_frequency: float = 6.0
    scaling_w: float = 0.0126
    scaling_i: float = 1.0
    img_size: int = 256


def read_embedder_config(card_path: str | Path) -> EmbedderConfig:
    """The ``embedder`` section of a tiny-pair card; CardError when absent or of another model."""
    path = Path(card_path)
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise CardError(f"card {path}: cannot read it ({e})") from e
    emb = raw.get("embedder") if isinstance(raw, dict) else None
    if not isinstance(emb, dict) or emb.get("model") != EMBEDDER_MODEL:
        raise CardError(f"card {path}: no 'embedder' section with model '{EMBEDDER_MODEL}' (this card has no tiny-pair embedder)")
    args = raw.get("args") or {}
    try:
        nbits = int(args["nbits"])
    except (KeyError, TypeError, ValueError) as e:
        raise CardError(f"card {path}: bad embedder values ({e})") from e
    return parse_tile_card(emb, args, nbits, int(args.get("img_size_proc", 256)), f"card {path}")


def parse_tile_card(section: dict, args: dict, nbits: int, img_size: int, where: str) -> EmbedderConfig:
    params = section.get("params") or {}
    try:
        cfg = EmbedderConfig(
            nbits=nbits,
            tile_size=int(params.get("tile_size", 32)),
            max_frequency=float(params.get("max_frequency", 6.0)),
            scaling_w=float(args.get("scaling_w", 0.0126)),
            scaling_i=float(args.get("scaling_i", 1.0)),
            img_size=img_size,
        )
    except (KeyError, TypeError, ValueError) as e:
        raise CardError(f"{where}: bad embedder values ({e})") from e
    if cfg.nbits <= 0 or cfg.tile_size <= 1 or cfg.max_frequency <= 0 or not 0 < cfg.scaling_w < 1 or cfg.img_size % cfg.tile_size:
        raise CardError(f"{where}: embedder values out of range: {cfg}")
    return cfg


def lowpass_mask(tile: int, max_frequency: float) -> torch.Tensor:
    """(tile, tile // 2 + 1) mask of the rfft2 bins with 0 < |k| <= max_frequency cycles per tile."""
    ky = torch.fft.fftfreq(tile) * tile
    kx = torch.fft.rfftfreq(tile) * tile
    r2 = ky[:, None] ** 2 + kx[None, :] ** 2
    return ((r2 <= max_frequency**2) & (r2 > 0)).float()


class TileEmbedder(nn.Module):
    """Message bits (B, nbits) -> unit-RMS residual (B, 3, H, W), a tile repeated from the top-left corner."""

    def __init__(self, cfg: EmbedderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.nbits = cfg.nbits
        t = cfg.tile_size
        self.tiles = nn.Parameter(torch.randn(cfg.nbits, 2, 3, t, t))  # [k, 0] for bit 0, [k, 1] for bit 1
        self.register_buffer("mask", lowpass_mask(t, cfg.max_frequency), persistent=False)

    def pattern(self, msgs: torch.Tensor) -> torch.Tensor:
        """(B, nbits) of 0/1 -> (B, 3, T, T): selected tiles summed, low-passed, zero-mean, unit RMS."""
        m = msgs.to(self.tiles.dtype)
        p = torch.einsum("bk,kchw->bchw", m, self.tiles[:, 1]) + torch.einsum("bk,kchw->bchw", 1.0 - m, self.tiles[:, 0])
        t = self.cfg.tile_size
        p = torch.fft.irfft2(torch.fft.rfft2(p) * self.mask, s=(t, t))
        return p / (p.pow(2).mean(dim=(1, 2, 3), keepdim=True) + 1e-12).sqrt()

    def forward(self, msgs: torch.Tensor, height: int, width: int) -> torch.Tensor:
        p = self.pattern(msgs)
        t = self.cfg.tile_size
        reps = (-(-height // t), -(-width // t))
        return p.repeat(1, 1, *reps)[:, :, :height, :width]


def blend(imgs: torch.Tensor, residual: torch.Tensor, cfg: EmbedderConfig) -> torch.Tensor:
    """The official blend: ``clamp(scaling_i * image + scaling_w * residual, 0, 1)``."""
    return (cfg.scaling_i * imgs + cfg.scaling_w * residual).clamp(0.0, 1.0)


@torch.no_grad()
def embed(embedder: TileEmbedder, imgs: torch.Tensor, msgs: torch.Tensor) -> torch.Tensor:
    """Watermark images of any size, as the official embed path does.

    The residual is made at the processing size (256x256), resized to the image's own size
    (bilinear, antialias), and blended there; ``detect()`` resizes the image back to 256x256, which
    brings the pattern back onto the extractor's grid. At 256x256 this is exactly ``blend``.
    """
    cfg = embedder.cfg
    h, w = imgs.shape[-2:]
    res = embedder(msgs, cfg.img_size, cfg.img_size)
    if (h, w) != (cfg.img_size, cfg.img_size):
        res = F.interpolate(res, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
    return blend(imgs, res, cfg)


def embedder_description(cfg: EmbedderConfig) -> dict[str, Any]:
    return {
        "model": EMBEDDER_MODEL,
        "nbits": cfg.nbits,
        "tile_size": cfg.tile_size,
        "max_frequency_cycles_per_tile": cfg.max_frequency,
        "scaling_w": cfg.scaling_w,
        "scaling_i": cfg.scaling_i,
    }


# ---- on the embedder seam (models/embedders.py) ----------------------------------------------------


class TileEmbedModel(nn.Module):
    """The tiny embed path with the checkpoint's names (``embedder.tiles``): images of any size."""

    def __init__(self, cfg: EmbedderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embedder = TileEmbedder(cfg)

    @property
    def nbits(self) -> int:
        return self.cfg.nbits

    def residual(self, imgs: torch.Tensor, msgs: torch.Tensor) -> torch.Tensor:
        return self.embedder(msgs, imgs.shape[-2], imgs.shape[-1]).expand(imgs.shape[0], -1, -1, -1)

    def forward(self, imgs: torch.Tensor, msgs: torch.Tensor) -> torch.Tensor:
        return embed(self.embedder, imgs, msgs)


class DeployTileEmbedder(nn.Module):
    """The tile embedder without FFTs, for the converter: the low-pass is linear, so it is applied
    to the tiles once, ``pattern = LP(sum_k B_k) + m @ LP(A_k - B_k)`` (one fully-connected layer),
    then unit RMS, the tile repeated over the image by a product with ones, blend and clamp.
    Equal to :func:`embed` in float (tests/test_embedders.py)."""

    def __init__(self, model: TileEmbedModel) -> None:
        super().__init__()
        cfg = model.cfg
        t, s = cfg.tile_size, cfg.img_size
        self.cfg, self.reps = cfg, s // t
        emb = model.embedder
        with torch.no_grad():
            lp = lambda x: torch.fft.irfft2(torch.fft.rfft2(x) * emb.mask, s=(t, t))  # noqa: E731
            base = lp(emb.tiles[:, 0].sum(0))
            diff = lp(emb.tiles[:, 1] - emb.tiles[:, 0])
        self.pattern = nn.Linear(cfg.nbits, 3 * t * t)
        with torch.no_grad():
            self.pattern.weight.copy_(diff.reshape(cfg.nbits, -1).t())
            self.pattern.bias.copy_(base.reshape(-1))

    def forward(self, image: torch.Tensor, message: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t, r = self.cfg.tile_size, self.reps
        p = self.pattern(message)  # (1, 3*t*t)
        p = p * torch.rsqrt(p.pow(2).mean(dim=1, keepdim=True) + 1e-12)
        p = p.reshape(-1, 3, 1, t, 1, t) * torch.ones(1, 1, r, 1, r, 1, dtype=p.dtype)
        res = p.reshape(-1, 3, r * t, r * t).permute(0, 2, 3, 1)  # NHWC
        wm = torch.clamp(self.cfg.scaling_i * image + self.cfg.scaling_w * res, 0, 1)
        return wm, res


@register_embedder_family
class TileFamily(EmbedderFamily):
    """The project's tile embedder on the seam."""

    name = "tile"
    model_pattern = EMBEDDER_MODEL
    quant = QuantPolicy(
        static=("FULLY_CONNECTED",), dynamic=("FULLY_CONNECTED",), why="one FC layer makes the pattern; the rest is elementwise float"
    )

    def accepts(self, model: str) -> bool:
        return model == EMBEDDER_MODEL

    def parse_card(self, model: str, section: dict, args: dict, nbits: int, img_size: int, where: str) -> EmbedderConfig:
        return parse_tile_card(section, args, nbits, img_size, where)

    def build(self, cfg: EmbedderConfig) -> TileEmbedModel:
        return TileEmbedModel(cfg).eval()

    def deploy_form(self, module: TileEmbedModel) -> DeployTileEmbedder:
        return DeployTileEmbedder(module).eval()

    def owns(self, key: str) -> bool:
        return key.startswith("embedder.")

    def route(self, cfg: EmbedderConfig) -> dict[str, Any]:
        from videoseal_litert.models.unet import route_description

        return route_description(cfg.img_size, cfg.scaling_w, cfg.scaling_i, None, "RGB")

    def describe(self, cfg: EmbedderConfig) -> dict[str, Any]:
        return embedder_description(cfg)


FAMILY = registered_embedder_families()[TileFamily.name]  # the instance its decorator registered
