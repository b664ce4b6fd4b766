"""The official U-Net watermark embedders (VideoSeal 1.0, PixelSeal, ChunkySeal, VideoSeal 0.0).

Written from the official ``videoseal/modules/{unet,common,msg_processor,jnd}.py`` and the embed
path of ``Wam.embed`` (``is_video=False``), with the official module and parameter names, so an
official checkpoint's ``embedder.``, ``rgb2yuv.`` and ``attenuation.`` keys load strictly:

1. images of another size are resized to ``img_size`` (bilinear, antialias, aspect not kept);
2. ``yuv`` models embed into Y = M[0] . RGB (BT.601 row of ``rgb2yuv.M``), the others into RGB;
3. the embedder maps x to 2x - 1, runs the U-Net (message concatenated at the bottleneck), tanh;
4. the residual is resized back to the image's size;
5. JND models multiply it by the JND heatmap of the full-size original (``jnd_1_1``);
6. ``clamp(scaling_i * image + scaling_w * residual, 0, 1)``, a 1-channel residual on R, G and B.

:class:`DeployEmbedder` is the converter-friendly form of that path at ``img_size`` (each rewrite
proved equal in float by tests/test_embedders.py): the message embedding lookup as a
fully-connected layer on float bits, the repeat over the bottleneck as a product with ones, JND's
boolean-mask assignment as ``torch.where``, Y as a 1x1 convolution, NHWC in and out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from videoseal_litert.core.errors import CardError, UnsupportedModelError
from videoseal_litert.models.common import LayerNorm2d, ReflectionPad2d
from videoseal_litert.models.contracts import EMBEDDER_CONTRACT, Unit, UnitChain
from videoseal_litert.models.embedders import EmbedderFamily, register_embedder_family, registered_embedder_families
from videoseal_litert.models.families import QuantPolicy, card_value, flag, known_keys, positive_int

INTERPOLATION = {"mode": "bilinear", "align_corners": False, "antialias": True}  # Wam.embed's default

ACTIVATIONS = {"relu": nn.ReLU, "silu": nn.SiLU, "gelu": nn.GELU}
NORMALIZATIONS = ("batch", "rms")
# configs/attenuation.yaml: JND in/out channels; only the ones the official cards use.
ATTENUATIONS = {"jnd_1_1": (1, 1), "jnd_1_3": (1, 3)}
UNET_KEYS = {"in_channels", "out_channels", "z_channels", "num_blocks", "activation", "normalization", "z_channels_mults", "last_tanh"}
UNET_OPTIONAL = {"upsampling_type", "downsampling_type", "zero_init", "id_init", "conv_layer", "time_pooling"}
MSG_KEYS = {"nbits", "hidden_size", "msg_processor_type", "msg_mult"}
# Official default of args.hidden_size_multiplier when a card has none (the VideoSeal 0.0 card).
DEFAULT_HIDDEN_SIZE_MULTIPLIER = 2.0


@dataclass(frozen=True)
class UNetEmbedderConfig:
    family: ClassVar[str] = "unet"
    model: str
    nbits: int
    hidden_size: int
    in_channels: int
    out_channels: int
    z_channels: int
    z_channels_mults: tuple[int, ...]
    num_blocks: int
    activation: str
    normalization: str
    last_tanh: bool
    yuv: bool
    img_size: int
    attenuation: str | None
    scaling_w: float
    scaling_i: float
    msg_mult: float = 1.0

    @property
    def levels(self) -> list[int]:
        return [self.z_channels * m for m in self.z_channels_mults]


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CardError(f"card value {what} = {value!r} is not a number")
    return float(value)


def parse_unet_card(model: str, section: dict, args: dict, nbits: int, img_size: int, where: str) -> UNetEmbedderConfig:
    """The card's ``embedder`` section and ``args`` into a config, as the official ``build_embedder``
    reads them: ``args.nbits`` and ``int(nbits * args.hidden_size_multiplier)`` overwrite the
    placeholders under ``msg_processor``."""
    params = known_keys(section.get("params"), {"msg_processor", "unet"}, "embedder.params", where)
    msg = known_keys(params.get("msg_processor"), MSG_KEYS, "embedder.params.msg_processor", where)
    unet = known_keys(card_value(params, "unet", "embedder.params."), UNET_KEYS | UNET_OPTIONAL, "embedder.params.unet", where)
    mtype = msg.get("msg_processor_type", "binary+concat")
    if mtype != "binary+concat":
        raise UnsupportedModelError(f"{where}: msg_processor_type {mtype!r} is not supported (the released embedders use 'binary+concat')")
    for key, ok in (("upsampling_type", "bilinear"), ("downsampling_type", "bilinear"), ("conv_layer", "conv2d")):
        if unet.get(key, ok) != ok:
            raise UnsupportedModelError(f"{where}: embedder.params.unet.{key} = {unet[key]!r} is not supported (only {ok!r})")
    if unet.get("time_pooling"):
        raise UnsupportedModelError(f"{where}: embedder time pooling (video models) is not supported")
    p = "embedder.params.unet."
    act = str(card_value(unet, "activation", p))
    norm = str(card_value(unet, "normalization", p))
    if act not in ACTIVATIONS:
        raise UnsupportedModelError(f"{where}: {p}activation {act!r} is not supported ({', '.join(ACTIVATIONS)})")
    if not norm.startswith(NORMALIZATIONS):
        raise UnsupportedModelError(f"{where}: {p}normalization {norm!r} is not supported ({', '.join(NORMALIZATIONS)})")
    mults = card_value(unet, "z_channels_mults", p)
    if not isinstance(mults, list) or len(mults) < 2:
        raise CardError(f"{where}: {p}z_channels_mults = {mults!r} must be a list of at least two positive integers")
    multiplier = _number(args.get("hidden_size_multiplier", DEFAULT_HIDDEN_SIZE_MULTIPLIER), "args.hidden_size_multiplier")
    hidden = int(nbits * multiplier)
    if hidden <= 0:
        raise CardError(f"{where}: args.hidden_size_multiplier = {multiplier} gives no message embedding")
    yuv = "yuv" in model
    in_ch = positive_int(card_value(unet, "in_channels", p), p + "in_channels")
    out_ch = positive_int(card_value(unet, "out_channels", p), p + "out_channels")
    if in_ch != (1 if yuv else 3) or out_ch not in (1, 3):
        raise CardError(f"{where}: {p}in_channels = {in_ch}, out_channels = {out_ch} do not fit a {'Y' if yuv else 'RGB'}-input embedder")
    att = args.get("attenuation")
    att = None if att in (None, "None", "none") else str(att)
    if att is not None and att not in ATTENUATIONS:
        raise UnsupportedModelError(f"{where}: args.attenuation {att!r} is not supported ({', '.join(ATTENUATIONS)} or None)")
    if args.get("blending_method", "additive") != "additive":
        raise UnsupportedModelError(f"{where}: args.blending_method {args['blending_method']!r} is not supported (only 'additive')")
    return UNetEmbedderConfig(
        model=model,
        nbits=nbits,
        hidden_size=hidden,
        in_channels=in_ch,
        out_channels=out_ch,
        z_channels=positive_int(card_value(unet, "z_channels", p), p + "z_channels"),
        z_channels_mults=tuple(positive_int(m, p + "z_channels_mults") for m in mults),
        num_blocks=positive_int(card_value(unet, "num_blocks", p), p + "num_blocks"),
        activation=act,
        normalization="batch" if norm.startswith("batch") else "rms",
        last_tanh=flag(unet.get("last_tanh", True), p + "last_tanh"),
        yuv=yuv,
        img_size=img_size,
        attenuation=att,
        scaling_w=_number(args.get("scaling_w", 1.0), "args.scaling_w"),
        scaling_i=_number(args.get("scaling_i", 1.0), "args.scaling_i"),
        msg_mult=_number(msg.get("msg_mult", 1.0), "embedder.params.msg_processor.msg_mult"),
    )


# ---- the official modules (official names) --------------------------------------------------------


class ChanRMSNorm(nn.Module):
    """Official ``ChanRMSNorm``: x / ||x||_channels * sqrt(C) * gamma (F.normalize's eps 1e-12)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.scale = dim**0.5
        self.gamma = nn.Parameter(torch.ones(dim, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x * rsqrt(max(sum x^2, eps^2)) is F.normalize(x, dim=1) (which divides by max(||x||, eps))
        # written with ops every converter has (tests: test_rms_norm_form_agrees).
        inv = torch.rsqrt(torch.clamp_min(x.pow(2).sum(dim=1, keepdim=True), 1e-24))
        return x * inv * (self.scale * self.gamma)


def _norm(kind: str, dim: int) -> nn.Module:
    return nn.BatchNorm2d(dim) if kind == "batch" else ChanRMSNorm(dim)


class ResnetBlock(nn.Module):
    """(conv 3x3 no bias, norm, act) x 2, plus a 1x1 conv shortcut."""

    def __init__(self, cin: int, cout: int, act: type[nn.Module], norm: str) -> None:
        super().__init__()
        self.double_conv = nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False),
            _norm(norm, cout),
            act(),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False),
            _norm(norm, cout),
            act(),
        )
        self.res_conv = nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.double_conv(x) + self.res_conv(x)


class Upsample(nn.Module):
    """Official bilinear ``Upsample`` block: x2 bilinear, reflection pad 1, 3x3 conv, channels-first LN (eps 1e-6), act."""

    def __init__(self, cin: int, cout: int, act: type[nn.Module]) -> None:
        super().__init__()
        self.upsample_block = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            ReflectionPad2d(1),
            nn.Conv2d(cin, cout, 3, padding=0, bias=False),
            LayerNorm2d(cout, eps=1e-6),
            act(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.upsample_block(x)


class UBlock(nn.Module):
    def __init__(self, cin: int, cout: int, act: type[nn.Module], norm: str) -> None:
        super().__init__()
        self.up = Upsample(cin, cout, act)
        self.conv = ResnetBlock(cout, cout, act, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.up(x))


class DBlock(nn.Module):
    def __init__(self, cin: int, cout: int, act: type[nn.Module], norm: str) -> None:
        super().__init__()
        self.down = nn.Conv2d(cin, cout, 3, stride=2, padding=1)
        self.conv = ResnetBlock(cout, cout, act, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.down(x))


class BottleNeck(nn.Module):
    def __init__(self, num_blocks: int, dim: int, act: type[nn.Module], norm: str) -> None:
        super().__init__()
        self.model = nn.Sequential(*[ResnetBlock(dim, dim, act, norm) for _ in range(num_blocks)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class MsgProcessor(nn.Module):
    """Official ``binary+concat`` message processor: bit k selects row 2k + bit of ``msg_embeddings``;
    the rows are summed, repeated over the latent grid and concatenated after the latents.

    ``deploy()`` switches to the converter-friendly form (docs/toolchain.md: the lookup and repeat fail in
    litert-torch): ``sum_k E[2k] + bits @ (E[2k+1] - E[2k])`` as one fully-connected layer on float
    bits, and the repeat as a product with ones.
    """

    def __init__(self, nbits: int, hidden_size: int, msg_mult: float = 1.0) -> None:
        super().__init__()
        self.nbits = nbits
        self.hidden_size = hidden_size
        self.msg_mult = msg_mult
        self.msg_embeddings = nn.Embedding(2 * nbits, hidden_size)
        self.fc: nn.Linear | None = None

    def deploy(self) -> None:
        e = self.msg_embeddings.weight.detach()
        fc = nn.Linear(self.nbits, self.hidden_size)
        with torch.no_grad():
            fc.weight.copy_((e[1::2] - e[0::2]).t() * self.msg_mult)
            fc.bias.copy_(e[0::2].sum(0) * self.msg_mult)
        self.fc = fc.to(e.device)

    def embedding(self, msgs: torch.Tensor) -> torch.Tensor:
        """(B, nbits) of 0/1 -> (B, hidden)."""
        if self.fc is not None:
            return self.fc(msgs.to(self.fc.weight.dtype))
        idx = 2 * torch.arange(msgs.shape[-1], device=msgs.device).repeat(msgs.shape[0], 1) + msgs.long()
        return self.msg_mult * self.msg_embeddings(idx).sum(dim=-2)

    def forward(self, latents: torch.Tensor, msgs: torch.Tensor) -> torch.Tensor:
        emb = self.embedding(msgs)[:, :, None, None]
        h, w = latents.shape[-2:]
        if self.fc is not None:
            grid = emb * torch.ones(1, 1, h, w, dtype=latents.dtype, device=latents.device)
        else:
            grid = emb.repeat(1, 1, h, w)
        return torch.cat([latents, grid], dim=1)


class UNetMsg(nn.Module):
    """Official ``UNetMsg``: inc, downs, message at the bottleneck, ups with scaled skips, outc, tanh."""

    def __init__(self, cfg: UNetEmbedderConfig, msg_processor: MsgProcessor) -> None:
        super().__init__()
        act, norm = ACTIVATIONS[cfg.activation], cfg.normalization
        z = cfg.levels
        self.msg_processor = msg_processor
        self.last_tanh = cfg.last_tanh
        self.connect_scale = 2**-0.5
        self.inc = ResnetBlock(cfg.in_channels, z[0], act, norm)
        self.downs = nn.ModuleList([DBlock(z[i], z[i + 1], act, norm) for i in range(len(z) - 1)])
        z[-1] = z[-1] + cfg.hidden_size
        self.bottleneck = BottleNeck(cfg.num_blocks, z[-1], act, norm)
        self.ups = nn.ModuleList([UBlock(2 * z[i + 1], z[i], act, norm) for i in reversed(range(len(z) - 1))])
        self.outc = nn.Conv2d(z[0], cfg.out_channels, 1)

    def forward(self, x: torch.Tensor, msgs: torch.Tensor) -> torch.Tensor:
        hiddens = [self.inc(x)]
        for d in self.downs:
            hiddens.append(d(hiddens[-1]))
        hiddens.append(self.msg_processor(hiddens.pop(), msgs))
        x = self.bottleneck(hiddens[-1])
        for u in self.ups:
            x = u(torch.cat((x, hiddens.pop() * self.connect_scale), dim=1))
        x = self.outc(x)
        return torch.tanh(x) if self.last_tanh else x


class UnetEmbedder(nn.Module):
    """Official ``UnetEmbedder``: x in [0, 1] -> 2x - 1 -> U-Net. The message processor is shared
    with the U-Net (both names are in official checkpoints, one tensor)."""

    def __init__(self, cfg: UNetEmbedderConfig) -> None:
        super().__init__()
        self.msg_processor = MsgProcessor(cfg.nbits, cfg.hidden_size, cfg.msg_mult)
        self.unet = UNetMsg(cfg, self.msg_processor)

    def forward(self, x: torch.Tensor, msgs: torch.Tensor) -> torch.Tensor:
        return self.unet(x * 2 - 1, msgs)


class RGB2YUV(nn.Module):
    """Official ``rgb2yuv`` (its 3x3 matrix ``M`` is in every official checkpoint); only row 0 (Y) is used."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("M", torch.tensor([[0.299, 0.587, 0.114], [-0.14713, -0.28886, 0.436], [0.615, -0.51499, -0.10001]]))

    def luma(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bchw,c->bhw", x, self.M[0]).unsqueeze(1)


class JND(nn.Module):
    """Official ``JND`` heatmap (https://ieeexplore.ieee.org/document/7885108), luminance and contrast masking.

    The official boolean-mask assignment in ``jnd_la`` is written with ``torch.where`` (both branches
    are finite for images in [0, 1]); same numbers (tests: test_jnd_forms_agree).
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 1) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        g = in_channels
        self.conv_x = nn.Conv2d(g, g, 3, padding=1, bias=False, groups=g)
        self.conv_y = nn.Conv2d(g, g, 3, padding=1, bias=False, groups=g)
        self.conv_lum = nn.Conv2d(g, g, 5, padding=2, bias=False, groups=g)
        kx = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]])
        lum = torch.ones(5, 5)
        lum[1:4, 1:4] = 2
        lum[2, 2] = 0
        with torch.no_grad():
            self.conv_x.weight.copy_(kx.expand(g, 1, 3, 3))
            self.conv_y.weight.copy_(kx.t().flip(0).expand(g, 1, 3, 3))
            self.conv_lum.weight.copy_(lum.expand(g, 1, 5, 5))
        for p in self.parameters():
            p.requires_grad_(False)

    def heatmaps(self, imgs: torch.Tensor, clc: float = 0.3) -> torch.Tensor:
        x = 255 * imgs
        if self.in_channels == 1:
            x = 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]
        la = self.conv_lum(x) / 32
        la = torch.where(la <= 127, 17 * (1 - torch.sqrt(la / 127 + 1e-5)), 3 / 128 * (la - 127) + 3)
        gx, gy = self.conv_x(x), self.conv_y(x)
        cm = torch.sqrt(gx**2 + gy**2)
        cm = 0.117 * (16 * cm**2.4 / (cm**2 + 26**2))
        h = torch.clamp_min(la + cm - clc * torch.minimum(la, cm), 0)
        if self.out_channels == 3 and self.in_channels == 1:
            h = h.repeat(1, 3, 1, 1)
        elif self.out_channels == 1 and self.in_channels == 3:
            h = torch.sum(h / 3, dim=1, keepdim=True)
        return h / 255


class WatermarkEmbedder(nn.Module):
    """The official embed path (``Videoseal.embed(imgs, msgs, is_video=False)``) with the official
    top-level names: ``embedder``, ``rgb2yuv``, ``attenuation``. Images of any size, in [0, 1]."""

    def __init__(self, cfg: UNetEmbedderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embedder = UnetEmbedder(cfg)
        self.rgb2yuv = RGB2YUV()
        self.attenuation = JND(*ATTENUATIONS[cfg.attenuation]) if cfg.attenuation else None

    @property
    def nbits(self) -> int:
        return self.cfg.nbits

    def residual(self, imgs: torch.Tensor, msgs: torch.Tensor) -> torch.Tensor:
        """The embedder's own output for images at the processing size: (B, out_channels, H, W) in (-1, 1)."""
        x = self.rgb2yuv.luma(imgs) if self.cfg.yuv else imgs
        return self.embedder(x, msgs)

    def attenuate(self, imgs: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return residual if self.attenuation is None else self.attenuation.heatmaps(imgs) * residual

    def blend(self, imgs: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return torch.clamp(self.cfg.scaling_i * imgs + self.cfg.scaling_w * residual, 0, 1)

    def forward(self, imgs: torch.Tensor, msgs: torch.Tensor) -> torch.Tensor:
        h, w = imgs.shape[-2:]
        s = self.cfg.img_size
        x = imgs if (h, w) == (s, s) else F.interpolate(imgs, size=(s, s), **INTERPOLATION)
        res = self.residual(x, msgs)
        if (h, w) != (s, s):
            res = F.interpolate(res, size=(h, w), **INTERPOLATION)
        return self.blend(imgs, self.attenuate(imgs, res))


@torch.no_grad()
def fold_batchnorms_(unet: nn.Module) -> int:
    """Fold each eval-mode BatchNorm into the convolution before it, in place (the weights are scaled
    where they lie: no second copy of a 4 GB ChunkySeal embedder), and replace it by Identity.

    The converter folds them too, but through LiteRT's runtime constant folding, which holds about
    three copies of the weights (13.5 GB peak for ChunkySeal's embedder). Equal in float up to rounding
    (tests: test_deploy_form_equals_official)."""
    n = 0
    for block in unet.modules():
        if not isinstance(block, ResnetBlock):
            continue
        seq = block.double_conv
        for i in (1, 4):
            bn = seq[i]
            if not isinstance(bn, nn.BatchNorm2d):
                continue
            conv = seq[i - 1]
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            conv.weight.mul_(scale.view(-1, 1, 1, 1))
            bias = bn.bias - bn.running_mean * scale
            conv.bias = nn.Parameter(bias.clone() if conv.bias is None else conv.bias * scale + bias)
            seq[i] = nn.Identity()
            n += 1
    return n


class OhwiConv2d(nn.Module):
    """A Conv2d whose weight is stored as (out, kh, kw, in), the TFLite layout, and permuted back in
    ``forward``. The converter's own OIHW -> OHWI transpose then cancels this permute instead of
    being folded into a new constant: without it, LiteRT's runtime constant folding holds about
    three copies of the weights (13.5 GB peak converting ChunkySeal's 4.1 GB embedder). Same numbers."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.stride, self.padding = conv.stride, conv.padding
        w = conv.weight
        w.data = w.data.permute(0, 2, 3, 1).contiguous()  # one tensor at a time: no second copy of the model
        self.weight = w
        self.bias = conv.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight.permute(0, 3, 1, 2), self.bias, self.stride, self.padding)


def to_ohwi_(module: nn.Module) -> None:
    """Every plain Conv2d under ``module`` as an :class:`OhwiConv2d`, in place."""
    for name, child in list(module.named_children()):
        if isinstance(child, nn.Conv2d) and child.groups == 1 and child.padding_mode == "zeros":
            setattr(module, name, OhwiConv2d(child))
        else:
            to_ohwi_(child)


class DeployUNetEmbedder(nn.Module):
    """What the .tflite holds: ``image`` (1, S, S, 3) NHWC in [0, 1] and ``message`` (1, nbits) float
    0/1 -> ``watermarked`` (1, S, S, 3) and ``residual`` (1, S, S, C), the embedder's raw output that
    the route for other image sizes resizes and blends on the host."""

    def __init__(self, model: WatermarkEmbedder) -> None:
        super().__init__()
        self.model = model
        model.embedder.msg_processor.deploy()
        fold_batchnorms_(model.embedder.unet)
        to_ohwi_(model.embedder.unet)
        if model.cfg.yuv:
            luma = nn.Conv2d(3, 1, 1, bias=False)
            with torch.no_grad():
                luma.weight.copy_(model.rgb2yuv.M[0].view(1, 3, 1, 1))
            self.luma = luma
        else:
            self.luma = None

    def forward(self, image: torch.Tensor, message: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m = self.model
        imgs = image.permute(0, 3, 1, 2)
        x = self.luma(imgs) if self.luma is not None else imgs
        res = m.embedder(x, message)
        wm = m.blend(imgs, m.attenuate(imgs, res))
        return wm.permute(0, 2, 3, 1), res.permute(0, 2, 3, 1)


class _Stem(nn.Module):
    """image (NCHW, [0, 1]) -> Y or RGB -> ``2x - 1`` -> ``inc``: the first skip."""

    def __init__(self, deploy: DeployUNetEmbedder) -> None:
        super().__init__()
        self.luma = deploy.luma
        self.inc = deploy.model.embedder.unet.inc

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.luma(image) if self.luma is not None else image
        return self.inc(x * 2 - 1)


class _Up(nn.Module):
    """One decoder level: the previous level and its skip, scaled, concatenated, through the ``UBlock``."""

    def __init__(self, up: nn.Module, scale: float) -> None:
        super().__init__()
        self.up, self.scale = up, scale

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.up(torch.cat((x, skip * self.scale), dim=1))


class _Finish(nn.Module):
    """``outc``, tanh, then attenuation and blend with the image: (watermarked, residual), NCHW."""

    def __init__(self, deploy: DeployUNetEmbedder) -> None:
        super().__init__()
        m = deploy.model  # not held: a piece owns only its own weights
        self.outc, self.attenuation, self.cfg = m.embedder.unet.outc, m.attenuation, m.cfg
        self.last_tanh = m.embedder.unet.last_tanh

    # The official steps, on this module's own attenuation and card values.
    attenuate = WatermarkEmbedder.attenuate
    blend = WatermarkEmbedder.blend

    def forward(self, x: torch.Tensor, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        res = self.outc(x)
        res = torch.tanh(res) if self.last_tanh else res
        return self.blend(image, self.attenuate(image, res)), res


def unet_units(deploy: DeployUNetEmbedder) -> UnitChain:
    """The deploy-form embedder as units joined by named tensors: stem, each down level, the message
    at the bottleneck, each bottleneck block, each up level (reading its skip), finish.
    Every 4-D tensor is NCHW in PyTorch (NHWC in the files)."""
    unet = deploy.model.embedder.unet
    image, message = EMBEDDER_CONTRACT.input_names
    levels = len(unet.downs)
    units = [Unit(_Stem(deploy), (image,), ("h0",))]
    units += [Unit(d, (f"h{i}",), (f"h{i + 1}",)) for i, d in enumerate(unet.downs)]
    units.append(Unit(unet.msg_processor, (f"h{levels}", message), ("b0",)))
    blocks = list(unet.bottleneck.model)
    units += [Unit(b, (f"b{j}",), (f"b{j + 1}",)) for j, b in enumerate(blocks)]
    x = f"b{len(blocks)}"
    # The official skips: the bottleneck's input, then each down level's output from the deepest up
    # (the message-concatenated tensor replaced h<levels> in the official list; h0 is never read).
    skips = ["b0", *[f"h{levels - i}" for i in range(1, len(unet.ups))]]
    for i, (u, skip) in enumerate(zip(unet.ups, skips, strict=True)):
        units.append(Unit(_Up(u, unet.connect_scale), (x, skip), (f"u{i}",)))
        x = f"u{i}"
    units.append(Unit(_Finish(deploy), (x, image), EMBEDDER_CONTRACT.output_names))
    four_d = {n for u in units for n in (*u.inputs, *u.outputs)} - {message}
    return UnitChain(units, EMBEDDER_CONTRACT.input_names, EMBEDDER_CONTRACT.output_names, frozenset(four_d))


# Static INT8 for the U-Net's convolutions and the message FC; JND's POW has no INT8 kernel and its
# heatmap, the blend and the clamp decide the pixels, so they stay float (docs/toolchain.md).
UNET_QUANT = QuantPolicy(
    static=("CONV_2D", "FULLY_CONNECTED"),
    dynamic=("CONV_2D", "FULLY_CONNECTED"),
    why="convolutions and the message FC in INT8; JND (POW, SQRT, SELECT), LayerNorm, resize, blend and clamp stay float",
)


def describe(cfg: UNetEmbedderConfig) -> dict[str, Any]:
    return {
        "model": cfg.model,
        "input_channel": "Y (0.299 R + 0.587 G + 0.114 B)" if cfg.yuv else "RGB",
        "levels": cfg.levels,
        "bottleneck_channels": cfg.levels[-1] + cfg.hidden_size,
        "num_blocks": cfg.num_blocks,
        "activation": cfg.activation,
        "normalization": cfg.normalization,
        "msg_hidden_size": cfg.hidden_size,
        "attenuation": cfg.attenuation or "none",
        "scaling_w": cfg.scaling_w,
        "scaling_i": cfg.scaling_i,
    }


@register_embedder_family
class UNetFamily(EmbedderFamily):
    """The official U-Net embedders on the seam (``models/embedders.py``)."""

    name = "unet"
    quant = UNET_QUANT
    model_pattern = "unet*"
    prefixes = ("embedder.", "rgb2yuv.", "attenuation.")

    def accepts(self, model: str) -> bool:
        return model.startswith("unet")  # the official build_embedder's test

    def parse_card(self, model: str, section: dict, args: dict, nbits: int, img_size: int, where: str) -> UNetEmbedderConfig:
        return parse_unet_card(model, section, args, nbits, img_size, where)

    def build(self, cfg: UNetEmbedderConfig) -> WatermarkEmbedder:
        return WatermarkEmbedder(cfg).eval()

    def deploy_form(self, module: WatermarkEmbedder) -> DeployUNetEmbedder:
        return DeployUNetEmbedder(module).eval()

    def owns(self, key: str) -> bool:
        return key.startswith(self.prefixes)

    def units(self, deploy: DeployUNetEmbedder) -> UnitChain:
        return unet_units(deploy)

    def route(self, cfg: UNetEmbedderConfig) -> dict[str, Any]:
        return route_description(cfg.img_size, cfg.scaling_w, cfg.scaling_i, cfg.attenuation, "Y" if cfg.yuv else "RGB")

    def describe(self, cfg: UNetEmbedderConfig) -> dict[str, Any]:
        return describe(cfg)


def route_description(size: int, scaling_w: float, scaling_i: float, attenuation: str | None, channels: str) -> dict[str, Any]:
    """The official embed path for an H x W image around the S x S file, as steps an app follows."""
    steps = [
        f"resize the RGB image (H x W, [0, 1]) to {size} x {size}: bilinear, align_corners=False, antialias=True, aspect ratio not kept",
        "run the embedder file on it with the message; take its 'residual' output",
        "resize the residual to H x W with the same interpolation",
    ]
    if attenuation:
        steps.append(f"multiply it by the JND heatmap ({attenuation}) of the full-size H x W image")
    steps.append(
        f"watermarked = clamp({scaling_i:g} * image + {scaling_w:g} * residual, 0, 1)"
        + (", the 1-channel residual added to R, G and B" if channels == "Y" else "")
    )
    return {
        "steps": steps,
        "interpolation": dict(INTERPOLATION),
        "attenuation": attenuation,
        "scaling_w": scaling_w,
        "scaling_i": scaling_i,
        "residual_channels": 1 if channels == "Y" else 3,
        "at_processing_size": f"the file's 'watermarked' output is the whole path for a {size} x {size} image",
    }


FAMILY = registered_embedder_families()[UNetFamily.name]  # the instance its decorator registered
