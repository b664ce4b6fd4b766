"""SAM-style ViT watermark extractor of the VideoSeal family (VideoSeal 0.0, ``sam_small``).

Papers: Fernandez et al., "Video Seal: Open and Efficient Video Watermarking" (2024); Kirillov et
al., "Segment Anything" (ICCV 2023) for the image encoder; Li et al., "Exploring Plain Vision
Transformer Backbones for Object Detection" (ViTDet, ECCV 2022) for windowed attention with
decomposed relative positions. Official code: github.com/facebookresearch/videoseal
(``videoseal/modules/vit.py``, ``videoseal/modules/common.py``, ``videoseal/models/extractor.py``).

Module and parameter names follow the official code (``image_encoder.patch_embed.proj``,
``image_encoder.blocks.N.attn.rel_pos_h``, ``image_encoder.neck.0``, ``pixel_decoder.linear``, ...),
so an official state dict (prefix ``detector.`` stripped) loads strictly without renaming. The
official builder sets the encoder's ``img_size`` to the card's ``args.img_size_extractor`` and the
pixel decoder's ``nbits`` to ``args.nbits``; the blocks use ``nn.LayerNorm`` (eps 1e-5), the neck
the channels-first LayerNorm (eps 1e-6), GELU is exact.

Deploy form (``fold_for_deploy_``, proved equal in float in tests/test_sam.py): each attention's
relative-position tables are gathered once into constants, and the decomposed relative-position
products are written as matmuls with the constant on the **right**. The official
``einsum("bhwc,hkc->bhwk", q, R)`` lowers with the constant table as the left operand of
BATCH_MATMUL; a dynamic-range INT8 recipe then quantizes it, and the kernel refuses an int8 left
operand with a float right one ("BATCH_MATMUL failed to prepare").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from videoseal_litert.core.errors import CardError
from videoseal_litert.models.common import LayerNorm2d
from videoseal_litert.models.families import (
    Family,
    QuantPolicy,
    card_value,
    flag,
    known_keys,
    positive_int,
    register_family,
    registered_families,
)
from videoseal_litert.models.pixel_decoder import PixelDecoder, decoder_options


@dataclass(frozen=True)
class SamConfig:
    """Architecture of one SAM-style ViT extractor, as the official card builds it."""

    family: ClassVar[str] = "sam"
    nbits: int
    embed_dim: int
    depth: int
    num_heads: int
    out_chans: int
    patch_size: int = 16
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    use_abs_pos: bool = True
    use_rel_pos: bool = False
    window_size: int = 0
    global_attn_indexes: tuple[int, ...] = ()
    upscale_stages: tuple[int, ...] = (1,)
    upscale_type: str = "bilinear"
    sigmoid_output: bool = False
    img_size: int = 256

    @property
    def grid(self) -> int:
        return self.img_size // self.patch_size


# ---- building blocks (official names) ------------------------------------------------------------


def get_rel_pos(q_size: int, k_size: int, rel_pos: torch.Tensor) -> torch.Tensor:
    """Relative positional embeddings (q_size, k_size, C) for the query/key sizes, as the official code."""
    max_rel_dist = int(2 * max(q_size, k_size) - 1)
    if rel_pos.shape[0] != max_rel_dist:
        resized = F.interpolate(rel_pos.reshape(1, rel_pos.shape[0], -1).permute(0, 2, 1), size=max_rel_dist, mode="linear")
        resized = resized.reshape(-1, max_rel_dist).permute(1, 0)
    else:
        resized = rel_pos
    q_coords = torch.arange(q_size)[:, None] * max(k_size / q_size, 1.0)
    k_coords = torch.arange(k_size)[None, :] * max(q_size / k_size, 1.0)
    relative_coords = (q_coords - k_coords) + (k_size - 1) * max(q_size / k_size, 1.0)
    return resized[relative_coords.long()]


def add_decomposed_rel_pos_official(
    attn: torch.Tensor,
    q: torch.Tensor,
    rel_pos_h: torch.Tensor,
    rel_pos_w: torch.Tensor,
    q_size: tuple[int, int],
    k_size: tuple[int, int],
) -> torch.Tensor:
    """The official decomposed relative positions (einsum form), kept as the reference for tests."""
    q_h, q_w = q_size
    k_h, k_w = k_size
    rh = get_rel_pos(q_h, k_h, rel_pos_h)
    rw = get_rel_pos(q_w, k_w, rel_pos_w)
    b, _, dim = q.shape
    r_q = q.reshape(b, q_h, q_w, dim)
    rel_h = torch.einsum("bhwc,hkc->bhwk", r_q, rh)
    rel_w = torch.einsum("bhwc,wkc->bhwk", r_q, rw)
    return (attn.view(b, q_h, q_w, k_h, k_w) + rel_h[:, :, :, :, None] + rel_w[:, :, :, None, :]).view(b, q_h * q_w, k_h * k_w)


class Attention(nn.Module):
    """Multi-head attention with decomposed relative positions (official ``Attention``)."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool, use_rel_pos: bool, input_size: tuple[int, int]) -> None:
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.use_rel_pos = use_rel_pos
        self.input_size = input_size
        if use_rel_pos:
            self.rel_pos_h = nn.Parameter(torch.zeros(2 * input_size[0] - 1, head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(2 * input_size[1] - 1, head_dim))
        # Deploy form: (q_h, C, k_h) and (q_w, C, k_w) constants; not in the state dict.
        self.register_buffer("rel_h_t", None, persistent=False)
        self.register_buffer("rel_w_t", None, persistent=False)

    @torch.no_grad()
    def fold_rel_pos_(self) -> None:
        """Gather the relative-position tables once, transposed for a constant-on-the-right matmul."""
        if not self.use_rel_pos or self.rel_h_t is not None:
            return
        h, w = self.input_size
        self.rel_h_t = get_rel_pos(h, h, self.rel_pos_h).transpose(1, 2).contiguous()
        self.rel_w_t = get_rel_pos(w, w, self.rel_pos_w).transpose(1, 2).contiguous()
        del self.rel_pos_h, self.rel_pos_w

    def _rel_pos_deploy(self, attn: torch.Tensor, q: torch.Tensor, h: int, w: int) -> torch.Tensor:
        # rel_h[b, y, x, k] = sum_c q[b, y, x, c] * Rh[y, k, c], as one batched matmul over y with the
        # constant table on the right (and likewise over x for rel_w): equal to the official einsum.
        b, _, c = q.shape
        r_q = q.reshape(b, h, w, c)
        rel_h = torch.matmul(r_q.permute(1, 0, 2, 3).reshape(h, b * w, c), self.rel_h_t).reshape(h, b, w, h).permute(1, 0, 2, 3)
        rel_w = torch.matmul(r_q.permute(2, 0, 1, 3).reshape(w, b * h, c), self.rel_w_t).reshape(w, b, h, w).permute(1, 2, 0, 3)
        return (attn.view(b, h, w, h, w) + rel_h[:, :, :, :, None] + rel_w[:, :, :, None, :]).view(b, h * w, h * w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, _ = x.shape
        qkv = self.qkv(x).reshape(b, h * w, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.reshape(3, b * self.num_heads, h * w, -1).unbind(0)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        if self.use_rel_pos:
            if self.rel_h_t is not None:
                attn = self._rel_pos_deploy(attn, q, h, w)
            else:
                attn = add_decomposed_rel_pos_official(attn, q, self.rel_pos_h, self.rel_pos_w, (h, w), (h, w))
        attn = attn.softmax(dim=-1)
        x = (attn @ v).view(b, self.num_heads, h, w, -1).permute(0, 2, 3, 1, 4).reshape(b, h, w, -1)
        return self.proj(x)


def window_partition(x: torch.Tensor, window_size: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """(B, H, W, C) -> (B * windows, ws, ws, C), zero-padding H and W up to multiples of ``window_size``."""
    b, h, w, c = x.shape
    pad_h = (window_size - h % window_size) % window_size
    pad_w = (window_size - w % window_size) % window_size
    if pad_h > 0 or pad_w > 0:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    hp, wp = h + pad_h, w + pad_w
    x = x.view(b, hp // window_size, window_size, wp // window_size, window_size, c)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, window_size, window_size, c), (hp, wp)


def window_unpartition(windows: torch.Tensor, window_size: int, pad_hw: tuple[int, int], hw: tuple[int, int]) -> torch.Tensor:
    hp, wp = pad_hw
    h, w = hw
    b = windows.shape[0] // (hp * wp // window_size // window_size)
    x = windows.view(b, hp // window_size, wp // window_size, window_size, window_size, -1)
    x = x.permute(0, 1, 3, 2, 4, 5).contiguous().view(b, hp, wp, -1)
    return x[:, :h, :w, :].contiguous() if hp > h or wp > w else x


class MLPBlock(nn.Module):
    def __init__(self, embedding_dim: int, mlp_dim: int) -> None:
        super().__init__()
        self.lin1 = nn.Linear(embedding_dim, mlp_dim)
        self.lin2 = nn.Linear(mlp_dim, embedding_dim)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(self.act(self.lin1(x)))


class Block(nn.Module):
    """Transformer block, windowed (``window_size > 0``) or global attention (official ``Block``)."""

    def __init__(self, cfg: SamConfig, window_size: int) -> None:
        super().__init__()
        dim = cfg.embed_dim
        self.norm1 = nn.LayerNorm(dim)
        size = (window_size, window_size) if window_size > 0 else (cfg.grid, cfg.grid)
        self.attn = Attention(dim, cfg.num_heads, cfg.qkv_bias, cfg.use_rel_pos, size)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLPBlock(dim, int(dim * cfg.mlp_ratio))
        self.window_size = window_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.norm1(x)
        if self.window_size > 0:
            h, w = x.shape[1], x.shape[2]
            x, pad_hw = window_partition(x, self.window_size)
        x = self.attn(x)
        if self.window_size > 0:
            x = window_unpartition(x, self.window_size, pad_hw, (h, w))
        x = shortcut + x
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, embed_dim: int, in_chans: int = 3) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)  # B C H W -> B H W C


class ImageEncoderViT(nn.Module):
    """Official ``ImageEncoderViT``: patches, absolute positions, blocks, conv neck; (B, out_chans, H/16, W/16)."""

    def __init__(self, cfg: SamConfig) -> None:
        super().__init__()
        self.patch_embed = PatchEmbed(cfg.patch_size, cfg.embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.grid, cfg.grid, cfg.embed_dim)) if cfg.use_abs_pos else None
        self.blocks = nn.ModuleList(Block(cfg, cfg.window_size if i not in cfg.global_attn_indexes else 0) for i in range(cfg.depth))
        self.neck = nn.Sequential(
            nn.Conv2d(cfg.embed_dim, cfg.out_chans, kernel_size=1, bias=False),
            LayerNorm2d(cfg.out_chans),
            nn.Conv2d(cfg.out_chans, cfg.out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(cfg.out_chans),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        if self.pos_embed is not None:
            x = x + self.pos_embed
        for blk in self.blocks:
            x = blk(x)
        return self.neck(x.permute(0, 3, 1, 2))


class SamExtractor(nn.Module):
    """Image in [0, 1], (B, 3, H, W) -> (B, 1 + nbits) logits; column 0 is the mask logit."""

    def __init__(self, cfg: SamConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.image_encoder = ImageEncoderViT(cfg)
        self.pixel_decoder = PixelDecoder(cfg.upscale_stages, cfg.out_chans, cfg.nbits, cfg.upscale_type, cfg.sigmoid_output)

    def forward(self, imgs: torch.Tensor) -> torch.Tensor:
        return self.pixel_decoder(self.image_encoder(imgs * 2.0 - 1.0))


def fold_for_deploy_(extractor: SamExtractor) -> SamExtractor:
    """Relative-position tables gathered once, products as constant-on-the-right matmuls; in place."""
    for blk in extractor.image_encoder.blocks:
        blk.attn.fold_rel_pos_()
    return extractor


# ---- units for quantizing in parts (token grids between units, NHWC) ------------------------------


class _Embed(nn.Module):
    """Patch embedding + absolute positions; holds only those weights (a part frees its units' weights)."""

    def __init__(self, encoder: ImageEncoderViT) -> None:
        super().__init__()
        self.patch_embed, self.pos_embed = encoder.patch_embed, encoder.pos_embed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        return x + self.pos_embed if self.pos_embed is not None else x


class _Head(nn.Module):
    def __init__(self, encoder: ImageEncoderViT, decoder: PixelDecoder) -> None:
        super().__init__()
        self.neck, self.decoder = encoder.neck, decoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.neck(x.permute(0, 3, 1, 2)))


# ---- the family ----------------------------------------------------------------------------------

ENCODER_KEYS = {
    "img_size",
    "patch_size",
    "in_chans",
    "embed_dim",
    "depth",
    "num_heads",
    "mlp_ratio",
    "out_chans",
    "qkv_bias",
    "use_abs_pos",
    "use_rel_pos",
    "rel_pos_zero_init",
    "window_size",
    "global_attn_indexes",
}


def _positive_number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise CardError(f"card value {what} = {value!r} must be a positive number")
    return float(value)


def _indexes(value: Any, depth: int, where: str) -> tuple[int, ...]:
    what = "extractor.params.encoder.global_attn_indexes"
    if not isinstance(value, list | tuple) or any(isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < depth for i in value):
        raise CardError(f"{where}: {what} = {value!r} must list block indexes, none outside 0..{depth - 1}")
    return tuple(value)


@register_family
class SamFamily(Family):
    """VideoSeal 0.0 (``sam_small``) and other ``sam_*`` cards."""

    name = "sam"
    model_prefixes = ("sam",)
    chain_layout = "NHWC"
    quant = QuantPolicy(
        static=("CONV_2D", "FULLY_CONNECTED"),
        dynamic=("CONV_2D", "FULLY_CONNECTED"),
        weight_only=(),
        int4=("FULLY_CONNECTED",),
        why="measured at full size (random weights, 21 held-out views; AVX-512 VNNI CPU, 1/2 threads): INT8 for the "
        "linear layers (qkv, proj, MLP) and the patch/neck/decoder convs only: bits 98.76%, 25.2 dB, one XNNPACK "
        "partition, 0.37x/0.39x of FP32. Adding the attention matmuls: 97.27%, 20.5 dB, 24 partitions, "
        "0.86x/1.41x; softmax too: 0.93x/1.53x; GELU: same accuracy, 14 partitions, 0.39x/0.42x; residual adds: "
        "97.62%, 0.41x/0.43x. LayerNorm, GELU, softmax and the attention matmuls stay float",
    )

    def parse_card(self, params: dict[str, Any], nbits: int, img_size: int, where: str) -> SamConfig:
        params = known_keys(params, {"encoder", "pixel_decoder"}, "extractor.params", where)
        enc = known_keys(card_value(params, "encoder", "extractor.params."), ENCODER_KEYS, "extractor.params.encoder", where)
        if int(enc.get("in_chans", 3)) != 3:
            raise CardError(f"{where}: extractor.params.encoder.in_chans must be 3 (RGB)")
        dec, dec_fields = decoder_options(params.get("pixel_decoder"), where)

        def p(key: str) -> int:
            return positive_int(card_value(enc, key, "extractor.params.encoder."), f"extractor.params.encoder.{key}")

        cfg = SamConfig(
            nbits=nbits,
            embed_dim=p("embed_dim"),
            depth=p("depth"),
            num_heads=p("num_heads"),
            out_chans=p("out_chans"),
            patch_size=positive_int(enc.get("patch_size", 16), "extractor.params.encoder.patch_size"),
            mlp_ratio=_positive_number(enc.get("mlp_ratio", 4.0), "extractor.params.encoder.mlp_ratio"),
            qkv_bias=flag(enc.get("qkv_bias", True), "extractor.params.encoder.qkv_bias"),
            use_abs_pos=flag(enc.get("use_abs_pos", True), "extractor.params.encoder.use_abs_pos"),
            use_rel_pos=flag(enc.get("use_rel_pos", False), "extractor.params.encoder.use_rel_pos"),
            window_size=0 if enc.get("window_size", 0) == 0 else positive_int(enc["window_size"], "extractor.params.encoder.window_size"),
            global_attn_indexes=_indexes(enc.get("global_attn_indexes", []), p("depth"), where),
            img_size=img_size,
            **dec_fields,  # the official builder overwrites encoder.img_size with args.img_size_extractor
        )
        if cfg.embed_dim % cfg.num_heads:
            raise CardError(f"{where}: embed_dim {cfg.embed_dim} is not divisible by num_heads {cfg.num_heads}")
        if cfg.img_size % cfg.patch_size:
            raise CardError(f"{where}: image size {cfg.img_size} is not a multiple of patch_size {cfg.patch_size}")
        if "embed_dim" in dec and int(dec["embed_dim"]) != cfg.out_chans:
            raise CardError(f"{where}: pixel_decoder.embed_dim {dec['embed_dim']} != encoder.out_chans {cfg.out_chans}")
        if any(not 0 <= i < cfg.depth for i in cfg.global_attn_indexes):
            raise CardError(f"{where}: global_attn_indexes {list(cfg.global_attn_indexes)} outside 0..{cfg.depth - 1}")
        return cfg

    def build(self, cfg: SamConfig) -> SamExtractor:
        return SamExtractor(cfg)

    def deploy_form(self, module: SamExtractor) -> SamExtractor:
        return fold_for_deploy_(module)

    def units(self, module: SamExtractor) -> list[nn.Module]:
        """Patch embedding (+ positions), each block, neck + pixel decoder."""
        enc = module.image_encoder
        return [_Embed(enc), *enc.blocks, _Head(enc, module.pixel_decoder)]

    def activation_factor(self, unit: nn.Module) -> int:
        # qkv (3x), the attention matrices of every head, the 4x-wide MLP: about 12 times a block's output.
        return 12 if isinstance(unit, Block) else 4

    def group(self, param_name: str) -> str:
        parts = param_name.split(".")
        if parts[0] == "image_encoder":
            if parts[1] == "blocks":
                return f"block {parts[2]}"
            return "patch_embed + pos_embed" if parts[1] in ("patch_embed", "pos_embed") else parts[1]
        return parts[0]

    def describe(self, cfg: SamConfig) -> dict[str, Any]:
        return {
            "embed_dim": cfg.embed_dim,
            "depth": cfg.depth,
            "num_heads": cfg.num_heads,
            "patch_size": cfg.patch_size,
            "window_size": cfg.window_size,
            "global_attn_indexes": list(cfg.global_attn_indexes),
            "out_chans": cfg.out_chans,
        }


FAMILY = registered_families()[SamFamily.name]  # the instance its decorator registered
