"""Train the small VideoSeal-style pair that serves as the pipeline's demo and test fixture.

A test and demo fixture for the conversion pipeline, not a production watermarker.

- Embedder: a 4-level conv U-Net (BatchNorm, ReLU), the message broadcast at 1/8 resolution,
  ``tanh`` residual; blended as the official models do, ``clamp(scaling_i * image + scaling_w *
  residual, 0, 1)`` (no perceptual attenuation).
- Extractor: built from ``models/cards/tiny.yaml`` by the same card reader and ConvNeXt-V2 code as
  the released extractors (pixel decoder included), so it converts and quantizes like them.
- Data: random crops, flips and scales of the calibration photos (never the held-out ones).
  Augmentations from ``--aug-from``: JPEG (straight-through), resize, crop, brightness, blur.
  Image loss (MSE) from ``--image-loss-from``: on from the start, training collapses to a zero
  residual.
- Resumable: ``--ckpt-dir`` holds ``state.pt`` (models, optimiser, step, generator state), so a
  run can continue in several parts (``--steps`` is the total). ``--export DIR`` writes
  ``extractor.safetensors`` (bare extractor keys, loads strictly), ``embedder.safetensors``,
  the card and ``training_record.json`` with the held-out metrics.

    python -m models.train_tiny --steps 15000 --batch 64 --device cuda --ckpt-dir runs/tiny --export models/tiny
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import math
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from models.cards import read_card
from models.convnext import ConvnextExtractor

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent
CARD = ROOT / "cards" / "tiny.yaml"
SCALING_I, SCALING_W = 1.0, 0.2


def _block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, 1, 1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class TinyEmbedder(nn.Module):
    """Image in [0, 1] (B, 3, H, W) and message bits (B, nbits) -> residual in [-1, 1]. H, W divisible by 8."""

    def __init__(self, nbits: int, ch: tuple[int, int, int, int] = (16, 32, 64, 128), msg_ch: int = 32) -> None:
        super().__init__()
        self.nbits = nbits
        self.enc = nn.ModuleList([_block(3, ch[0]), _block(ch[0], ch[1], 2), _block(ch[1], ch[2], 2), _block(ch[2], ch[3], 2)])
        self.msg = nn.Linear(nbits, msg_ch)
        self.bottleneck = _block(ch[3] + msg_ch, ch[3])
        self.dec = nn.ModuleList([_block(ch[3] + ch[2], ch[2]), _block(ch[2] + ch[1], ch[1]), _block(ch[1] + ch[0], ch[0])])
        self.out = nn.Conv2d(ch[0], 3, 1)

    def forward(self, imgs: torch.Tensor, msgs: torch.Tensor) -> torch.Tensor:
        x = imgs * 2.0 - 1.0
        skips = []
        for enc in self.enc:
            x = enc(x)
            skips.append(x)
        m = self.msg(msgs.float() * 2.0 - 1.0)[:, :, None, None].expand(-1, -1, x.shape[2], x.shape[3])
        x = self.bottleneck(torch.cat([x, m], dim=1))
        for dec, skip in zip(self.dec, reversed(skips[:-1]), strict=True):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = dec(torch.cat([x, skip], dim=1))
        return torch.tanh(self.out(x))


def blend(imgs: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    """The official blend: ``clamp(scaling_i * image + scaling_w * residual, 0, 1)``."""
    return (SCALING_I * imgs + SCALING_W * residual).clamp(0.0, 1.0)


def build_pair(card: Path = CARD) -> tuple[TinyEmbedder, ConvnextExtractor]:
    cfg = read_card(card).config
    return TinyEmbedder(cfg.nbits), ConvnextExtractor(cfg)


# ---- data -------------------------------------------------------------------------------------


def training_photos() -> list[np.ndarray]:
    """The calibration photos as float32 (3, H, W) RGB in [0, 1]; the held-out photos are never used."""
    from calibration_data.photos import CALIBRATION_PHOTOS, HELDOUT_PHOTOS, calibration_photo_paths
    from convert.images import read_rgb

    assert not set(CALIBRATION_PHOTOS) & set(HELDOUT_PHOTOS)
    return [np.ascontiguousarray(read_rgb(p), dtype=np.float32) for p in calibration_photo_paths()]


def sample_batch(photos: list[np.ndarray], batch: int, size: int, gen: torch.Generator) -> torch.Tensor:
    """Random square crops (0.3 to 1.0 of the short side), random flips, resized to ``size``."""
    out = []
    for _ in range(batch):
        img = photos[int(torch.randint(len(photos), (1,), generator=gen))]
        h, w = img.shape[1:]
        side = int(min(h, w) * (0.3 + 0.7 * float(torch.rand(1, generator=gen))))
        y = int(torch.randint(h - side + 1, (1,), generator=gen))
        x = int(torch.randint(w - side + 1, (1,), generator=gen))
        t = torch.from_numpy(np.ascontiguousarray(img[:, y : y + side, x : x + side]))[None]
        t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        if float(torch.rand(1, generator=gen)) < 0.5:
            t = t.flip(-1)
        out.append(t)
    return torch.cat(out).clamp(0.0, 1.0)


# ---- augmentations ----------------------------------------------------------------------------


def jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    """Real JPEG through PIL, with a straight-through gradient."""
    out = []
    for img in x.detach().clamp(0, 1).cpu():
        buf = io.BytesIO()
        Image.fromarray((img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(buf, format="JPEG", quality=quality)
        out.append(torch.from_numpy(np.asarray(Image.open(buf), dtype=np.float32) / 255.0).permute(2, 0, 1))
    return x + (torch.stack(out).to(x.device) - x).detach()


def resize(x: torch.Tensor, scale: float) -> torch.Tensor:
    h, w = x.shape[-2:]
    small = F.interpolate(x, size=(max(8, int(h * scale)), max(8, int(w * scale))), mode="bilinear", align_corners=False, antialias=True)
    return F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)


def center_crop(x: torch.Tensor, frac: float) -> torch.Tensor:
    """Keep the centre ``frac`` of each side, resized back as ``detect()`` would."""
    h, w = x.shape[-2:]
    ch, cw = max(8, int(h * frac)), max(8, int(w * frac))
    y0, x0 = (h - ch) // 2, (w - cw) // 2
    return F.interpolate(x[..., y0 : y0 + ch, x0 : x0 + cw], size=(h, w), mode="bilinear", align_corners=False, antialias=True)


def gaussian_blur(x: torch.Tensor, sigma: float = 1.0, k: int = 5) -> torch.Tensor:
    r = torch.arange(k, dtype=x.dtype, device=x.device) - k // 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    g = g / g.sum()
    kernel = (g[:, None] * g[None, :])[None, None].repeat(x.shape[1], 1, 1, 1)
    return F.conv2d(F.pad(x, (k // 2,) * 4, mode="reflect"), kernel, groups=x.shape[1])


AUGMENTATIONS = {
    "identity": lambda x: x,
    "jpeg_50": lambda x: jpeg(x, 50),
    "jpeg_80": lambda x: jpeg(x, 80),
    "resize_0.5": lambda x: resize(x, 0.5),
    "crop_0.5": lambda x: center_crop(x, 0.5),
    "brightness_1.5": lambda x: (x * 1.5).clamp(0, 1),
    "blur": lambda x: gaussian_blur(x, 1.0),
}


def random_augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    u = float(torch.rand(1, generator=gen))
    kind = int(torch.randint(6, (1,), generator=gen))
    if kind == 0:
        return jpeg(x, int(40 + 50 * u))
    if kind == 1:
        return resize(x, 0.5 + 0.5 * u)
    if kind == 2:
        return center_crop(x, 0.5 + 0.5 * u)
    if kind == 3:
        return (x * (0.7 + 0.8 * u)).clamp(0, 1)
    if kind == 4:
        return gaussian_blur(x, 0.5 + u)
    return x


# ---- metrics ----------------------------------------------------------------------------------


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(F.mse_loss(a, b))
    return 10 * math.log10(1.0 / mse) if mse > 0 else float("inf")


@torch.no_grad()
def evaluate(embedder: TinyEmbedder, extractor: ConvnextExtractor, size: int = 256, seed: int = 1) -> dict[str, float]:
    """Held-out photos (full view) at ``size``: bit accuracy with no augmentation, and PSNR."""
    from calibration_data.build import heldout_items

    embedder.eval()
    extractor.eval()
    dev = next(extractor.parameters()).device
    imgs = torch.cat([torch.from_numpy(i.pixels) for i in heldout_items(None, size) if i.name.endswith(":full")]).to(dev)
    gen = torch.Generator().manual_seed(seed)
    msgs = torch.randint(0, 2, (imgs.shape[0], embedder.nbits), generator=gen).to(dev)
    imgs_w = blend(imgs, embedder(imgs, msgs))
    bits = extractor(imgs_w)[:, 1:] > 0
    return {"bit_accuracy": float((bits == msgs.bool()).float().mean()), "psnr_db": psnr(imgs_w, imgs), "num_images": int(imgs.shape[0])}


# ---- training ---------------------------------------------------------------------------------


def train(args: argparse.Namespace) -> dict:
    dev = torch.device(args.device)
    torch.manual_seed(args.seed)
    embedder, extractor = build_pair(args.card)
    embedder.to(dev)
    extractor.to(dev)
    opt = torch.optim.AdamW(list(embedder.parameters()) + list(extractor.parameters()), lr=args.lr)
    gen = torch.Generator().manual_seed(args.seed)
    step, elapsed = 0, 0.0
    ckpt = args.ckpt_dir / "state.pt" if args.ckpt_dir else None
    if ckpt is not None and ckpt.exists():
        state = torch.load(ckpt, map_location=dev, weights_only=True)
        embedder.load_state_dict(state["embedder"], strict=True)
        extractor.load_state_dict(state["extractor"], strict=True)
        opt.load_state_dict(state["optimizer"])
        gen.set_state(state["generator"])
        step, elapsed = int(state["step"]), float(state["elapsed_s"])
        log.info("resumed at step %d", step)
    photos = training_photos()
    nbits = embedder.nbits
    t0 = time.time()
    while step < args.steps:
        embedder.train()
        extractor.train()
        imgs = sample_batch(photos, args.batch, args.size, gen).to(dev)
        msgs = torch.randint(0, 2, (args.batch, nbits), generator=gen).to(dev)
        imgs_w = blend(imgs, embedder(imgs, msgs))
        seen = random_augment(imgs_w, gen) if step >= args.aug_from else imgs_w
        logits = extractor(seen)
        loss_bits = F.binary_cross_entropy_with_logits(logits[:, 1:], msgs.float())
        w_img = (
            args.image_weight * min(1.0, max(0.0, (step - args.image_loss_from) / max(1, args.ramp)))
            if step >= args.image_loss_from
            else 0.0
        )
        loss_img = F.mse_loss(imgs_w, imgs)
        loss = loss_bits + w_img * loss_img
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if step % args.log_every == 0 or step == args.steps:
            acc = float(((logits.detach()[:, 1:] > 0) == msgs.bool()).float().mean())
            log.info("step %d/%d  bits %.4f  acc %.3f  mse %.5f (w %.1f)", step, args.steps, loss_bits.item(), acc, loss_img.item(), w_img)
        if ckpt is not None and (step % args.ckpt_every == 0 or step == args.steps):
            _save_state(ckpt, embedder, extractor, opt, gen, step, elapsed + time.time() - t0)
    elapsed += time.time() - t0
    metrics = evaluate(embedder, extractor)
    log.info("held-out: %s", metrics)
    record = {
        "command": "python -m models.train_tiny " + " ".join(sys.argv[1:]),
        "seed": args.seed,
        "steps": step,
        "batch": args.batch,
        "train_size": args.size,
        "lr": args.lr,
        "aug_from": args.aug_from,
        "image_loss_from": args.image_loss_from,
        "image_weight": args.image_weight,
        "hardware": _hardware(dev),
        "train_seconds": round(elapsed, 1),
        "heldout_metrics_256": metrics,
        "torch": torch.__version__,
    }
    if args.export:
        export(embedder, extractor, args.card, args.export, record)
    return record


def _save_state(path: Path, embedder, extractor, opt, gen, step: int, elapsed: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    state = {
        "embedder": embedder.state_dict(),
        "extractor": extractor.state_dict(),
        "optimizer": opt.state_dict(),
        "generator": gen.get_state(),
        "step": step,
        "elapsed_s": elapsed,
    }
    torch.save(state, tmp)
    tmp.replace(path)


def _hardware(dev: torch.device) -> str:
    if dev.type == "cuda":
        return f"{torch.cuda.get_device_name(dev)} (CUDA)"
    return f"CPU {platform.machine()}, {torch.get_num_threads()} threads"


def export(embedder: TinyEmbedder, extractor: ConvnextExtractor, card: Path, out: Path, record: dict) -> None:
    """Weights as safetensors (extractor: bare official key names), the card and the record, atomically."""
    from safetensors.torch import save_file

    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in extractor.state_dict().items()}, str(tmp / "extractor.safetensors"))
    save_file({k: v.detach().cpu().contiguous() for k, v in embedder.state_dict().items()}, str(tmp / "embedder.safetensors"))
    text = Path(card).read_text().replace("checkpoint_path: CHECKPOINT", "checkpoint_path: extractor.safetensors")
    (tmp / "tiny.yaml").write_text(text)
    (tmp / "training_record.json").write_text(json.dumps(record, indent=2) + "\n")
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m models.train_tiny", description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=15000, help="total steps (a resumed run continues to this)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--size", type=int, default=128, help="training crop size (divisible by 8)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--aug-from", type=int, default=5000)
    p.add_argument("--image-loss-from", type=int, default=8000)
    p.add_argument("--image-weight", type=float, default=20.0)
    p.add_argument("--ramp", type=int, default=2000, help="steps over which the image loss weight ramps up")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--card", type=Path, default=CARD)
    p.add_argument("--ckpt-dir", type=Path, default=None)
    p.add_argument("--ckpt-every", type=int, default=500)
    p.add_argument("--log-every", type=int, default=100)
    p.add_argument("--export", type=Path, default=None, help="write weights, card and training record here at the end")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    record = train(parse_args(argv))
    print(json.dumps(record["heldout_metrics_256"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
