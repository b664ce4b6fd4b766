"""Train the project's small watermark pair on a CPU: the CPU recipe behind ``make train-tiny``.

A demo and test fixture for the conversion pipeline, not a production watermarker. The pair and
why it is built so are described in ``models/tiny.py``; the extractor is the registry's ``tiny``
card (ConvNeXt-V2 + the official pixel decoder, 48 bits).

The recipe (every lever measured on this project's 2-core machine; figures in docs/tiny-pair.md):

- **Grid-aligned tiles.** The embedder's 32-pixel tile is anchored at the image corner, on the
  extractor's stride-32 grid. With a random offset instead, the bit loss stayed at chance (0.693)
  for 600 steps even at 12 dB PSNR; aligned, held-out bit accuracy reached 100% in 200 steps.
- **PSNR by construction.** The residual has unit RMS, so ``scaling_w`` fixes the PSNR; there is no
  image loss to balance (with one, the old recipe's residual collapsed to zero). The strength is
  annealed from ``--strength-start`` to the card's ``scaling_w`` over ``--anneal-frac`` of the steps.
- **Robustness** from augmentations after ``--aug-from``: real JPEG (quality 50-95, straight-
  through gradient), resize to 0.4-1.0 and back (differentiable), brightness 0.6-1.4, Gaussian noise;
  and the embedder's low-pass (frequencies up to 6 cycles per tile) keeps the pattern where JPEG and
  downscaling leave it.
- **Dense supervision.** The pixel decoder is linear after its global mean, so the mean of its
  linear layer applied at every location *is* the output; a loss on those per-location logits
  (same weights, nothing added to the deployed model) gives every location a gradient.
- **A real detection logit.** Unwatermarked images (a quarter of each batch) train column 0
  ("mask") to say whether a watermark is present; the released models leave it untrained.
- 128-pixel crops of the calibration photos (never the held-out ones), batch 32, AdamW,
  warm-up then cosine learning rate. Evaluated during training on the held-out photos at 256x256
  (recorded, never used to choose weights).

Resumable: ``--ckpt-dir`` holds ``state.pt`` (models, optimiser, step, the one random generator
that drives data, messages and augmentations, the curve so far); a rerun continues to ``--steps``
and gives the same weights as a run in one go. ``--export DIR`` writes ``checkpoint.safetensors``
(``detector.`` and ``embedder.`` keys, as an official checkpoint), ``training_record.json`` and
``learning_curve.png``.

    videoseal-litert train-tiny --ckpt-dir runs/tiny --export runs/tiny/export
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import math
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from videoseal_litert.core.errors import UsageError
from videoseal_litert.core.metrics import psnr_db
from videoseal_litert.models.cards import read_card
from videoseal_litert.models.convnext import ConvnextExtractor
from videoseal_litert.models.registry import CARDS_DIR
from videoseal_litert.models.tiny import TileEmbedder, embedder_description, read_embedder_config

log = logging.getLogger(__name__)

CARD = CARDS_DIR / "tiny.yaml"
EVAL_SEED = 1
# Arguments that change the result: a resumed run must use the same ones.
RECIPE_KEYS = (
    "batch",
    "size",
    "lr",
    "warmup",
    "strength_start",
    "anneal_frac",
    "aug_from",
    "dense_weight",
    "mask_weight",
    "seed",
    "steps",
)


def build_pair(card: Path = CARD) -> tuple[TileEmbedder, ConvnextExtractor]:
    return TileEmbedder(read_embedder_config(card)), ConvnextExtractor(read_card(card).config)


# ---- data -------------------------------------------------------------------------------------


def training_photos() -> list[torch.Tensor]:
    """The training photos (12 of the pool's calibration split) as float32 (3, H, W) RGB in [0, 1]; the
    validation and evaluation photos are never used."""
    from videoseal_litert.calibration_data.photos import training_photo_paths
    from videoseal_litert.core.images import read_rgb

    return [torch.from_numpy(np.ascontiguousarray(read_rgb(p), dtype=np.float32)) for p in training_photo_paths()]


def _uniform(gen: torch.Generator) -> float:
    return float(torch.rand(1, generator=gen))


def sample_batch(photos: list[torch.Tensor], batch: int, size: int, gen: torch.Generator) -> torch.Tensor:
    """Random square crops (0.2 to 1.0 of the short side), random flips, resized to ``size``."""
    out = []
    for _ in range(batch):
        img = photos[int(torch.randint(len(photos), (1,), generator=gen))]
        h, w = img.shape[1:]
        side = max(16, int(min(h, w) * (0.2 + 0.8 * _uniform(gen))))
        y = int(torch.randint(h - side + 1, (1,), generator=gen))
        x = int(torch.randint(w - side + 1, (1,), generator=gen))
        t = F.interpolate(img[None, :, y : y + side, x : x + side], size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        out.append(t.flip(-1) if _uniform(gen) < 0.5 else t)
    return torch.cat(out).clamp(0.0, 1.0)


# ---- augmentations (also used by the demo's robustness table) ----------------------------------


def jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    """Real JPEG through PIL (8-bit, 4:2:0 as PIL's default), with a straight-through gradient."""
    out = []
    for img in x.detach().clamp(0, 1).cpu():
        buf = io.BytesIO()
        Image.fromarray((img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(buf, format="JPEG", quality=quality)
        out.append(torch.from_numpy(np.asarray(Image.open(buf), dtype=np.float32) / 255.0).permute(2, 0, 1))
    return x + (torch.stack(out).to(x.device) - x).detach()


def resize(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Downscale by ``scale`` (antialiased) and back to the original size, as a re-shared image is."""
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


def random_augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """One of: JPEG 50-95, resize 0.4-1.0, brightness 0.6-1.4, Gaussian noise, none (per batch)."""
    u, kind = _uniform(gen), int(torch.randint(5, (1,), generator=gen))
    if kind == 0:
        return jpeg(x, int(50 + 45 * u))
    if kind == 1:
        return resize(x, 0.4 + 0.6 * u)
    if kind == 2:
        return (x * (0.6 + 0.8 * u)).clamp(0, 1)
    if kind == 3:
        return x + 0.02 * u * torch.randn(x.shape, generator=gen)
    return x


# ---- model pieces used only in training ---------------------------------------------------------


def per_location_logits(extractor: ConvnextExtractor, imgs: torch.Tensor) -> torch.Tensor:
    """(B, h, w, 1 + nbits): the pixel decoder's linear layer at every location.

    Their mean over (h, w) equals ``extractor(imgs)`` (the decoder's global mean comes before a
    linear layer; tests/test_train_tiny.py checks it), so a loss on them adds no weights.
    """
    dec = extractor.pixel_decoder
    feats = dec.output_upscaling(extractor.convnext(imgs * 2.0 - 1.0))
    return dec.linear(feats.permute(0, 2, 3, 1))


def strength_at(step: int, total: int, start: float, final: float, anneal_frac: float) -> float:
    """Linear anneal of ``scaling_w`` from ``start`` to ``final`` over the first ``anneal_frac`` of the steps."""
    end = max(1, int(total * anneal_frac))
    return final + (start - final) * max(0.0, 1.0 - step / end)


def lr_at(step: int, total: int, lr: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 5% of ``lr``."""
    if step < warmup:
        return lr * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


# ---- metrics ----------------------------------------------------------------------------------


def heldout_images(size: int = 256) -> torch.Tensor:
    """The held-out photos' full views at ``size`` (never trained on)."""
    from videoseal_litert.calibration_data.build import heldout_items

    return torch.cat([torch.from_numpy(i.pixels) for i in heldout_items(None, size) if i.name.endswith(":full")])


def to_8bit(x: torch.Tensor) -> torch.Tensor:
    return (x.clamp(0, 1) * 255.0).round() / 255.0


@torch.no_grad()
def evaluate(
    embedder: TileEmbedder, extractor: ConvnextExtractor, imgs: torch.Tensor, strength: float | None = None, seed: int = EVAL_SEED
) -> dict[str, float]:
    """Held-out bit accuracy at 256x256 with no augmentation, after JPEG 80 and after resize 0.5; PSNR.

    Watermarked images are rounded to 8 bits first, as a stored PNG is. ``strength`` overrides the
    card's ``scaling_w`` (used during the anneal).
    """
    embedder.eval()
    extractor.eval()
    cfg = embedder.cfg
    gen = torch.Generator().manual_seed(seed)
    msgs = torch.randint(0, 2, (imgs.shape[0], embedder.nbits), generator=gen)
    w = cfg.scaling_w if strength is None else strength
    marked = to_8bit((cfg.scaling_i * imgs + w * embedder(msgs, *imgs.shape[-2:])).clamp(0, 1))

    def acc(x: torch.Tensor) -> float:
        return float(((extractor(x)[:, 1:] > 0) == msgs.bool()).float().mean())

    clean = extractor(imgs)[:, 0]
    return {
        "bit_accuracy": acc(marked),
        "bit_accuracy_jpeg80": acc(jpeg(marked, 80)),
        "bit_accuracy_resize0.5": acc(to_8bit(resize(marked, 0.5))),
        "psnr_db": psnr_db(marked.numpy(), imgs.numpy()),
        "detection_watermarked": float((extractor(marked)[:, 0] > 0).float().mean()),
        "detection_unwatermarked": float((clean > 0).float().mean()),
        "num_images": int(imgs.shape[0]),
    }


# ---- training ---------------------------------------------------------------------------------


def _recipe(args: argparse.Namespace) -> dict[str, Any]:
    return {k: getattr(args, k) for k in RECIPE_KEYS}


def _losses(
    embedder: Any, extractor: Any, photos: Any, args: argparse.Namespace, strength: float, step: int, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch's loss (bits, detection, and the dense per-location terms when weighted) and its bit loss alone."""
    n_clean = max(1, args.batch // 4)
    imgs = sample_batch(photos, args.batch + n_clean, args.size, gen)
    msgs = torch.randint(0, 2, (args.batch, embedder.nbits), generator=gen).float()
    res = embedder(msgs, args.size, args.size)
    marked = (embedder.cfg.scaling_i * imgs[: args.batch] + strength * res).clamp(0, 1)
    seen = torch.cat([marked, imgs[args.batch :]])
    if step >= args.aug_from:
        seen = random_augment(seen, gen)
    per = per_location_logits(extractor, seen)
    pooled = per.mean(dim=(1, 2))
    is_marked = torch.cat([torch.ones(args.batch), torch.zeros(n_clean)])
    loss_bits = F.binary_cross_entropy_with_logits(pooled[: args.batch, 1:], msgs)
    loss_mask = F.binary_cross_entropy_with_logits(pooled[:, 0], is_marked)
    loss = loss_bits + args.mask_weight * loss_mask
    if args.dense_weight:
        dense_bits = F.binary_cross_entropy_with_logits(
            per[: args.batch, ..., 1:], msgs[:, None, None, :].expand_as(per[: args.batch, ..., 1:])
        )
        dense_mask = F.binary_cross_entropy_with_logits(per[..., 0], is_marked[:, None, None].expand_as(per[..., 0]))
        loss = loss + args.dense_weight * (dense_bits + args.mask_weight * dense_mask)
    return loss, loss_bits


def curve_point(
    embedder: Any, extractor: Any, heldout: Any, strength: float, step: int, steps: int, wall: float, losses: list[float]
) -> dict[str, Any]:
    """A learning-curve point: the held-out photos at this step's strength, logged."""
    m = evaluate(embedder, extractor, heldout, strength)
    point = {"step": step, "wall_s": round(wall, 1), "scaling_w": round(strength, 5), "train_bit_loss": float(np.mean(losses)), **m}
    log.info(
        "step %d/%d  %.0f s  bit loss %.3f  held-out bits %.2f%% (JPEG80 %.2f%%, resize0.5 %.2f%%)  PSNR %.1f dB",
        step,
        steps,
        point["wall_s"],
        point["train_bit_loss"],
        100 * m["bit_accuracy"],
        100 * m["bit_accuracy_jpeg80"],
        100 * m["bit_accuracy_resize0.5"],
        m["psnr_db"],
    )
    return point


def train(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    args.card = args.card or CARD
    embedder, extractor = build_pair(args.card)
    final_strength = embedder.cfg.scaling_w
    params = list(embedder.parameters()) + list(extractor.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(args.seed)
    ckpt = args.ckpt_dir / "state.pt" if args.ckpt_dir else None
    step, elapsed, curve = load_state(ckpt, {"embedder": embedder, "extractor": extractor}, opt, gen, _recipe(args))
    photos = training_photos()
    heldout = heldout_images(read_card(args.card).config.img_size)
    t0, losses = time.time() - elapsed, []
    stop = min(args.steps, args.stop_after or args.steps)
    while step < stop:
        embedder.train()
        extractor.train()
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.steps, args.lr, args.warmup)
        strength = strength_at(step, args.steps, args.strength_start, final_strength, args.anneal_frac)
        loss, loss_bits = _losses(embedder, extractor, photos, args, strength, step, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        losses.append(float(loss_bits.detach()))
        if step % args.eval_every == 0 or step == stop:
            curve.append(curve_point(embedder, extractor, heldout, strength, step, args.steps, time.time() - t0, losses))
            losses = []
        if ckpt is not None and (step % args.ckpt_every == 0 or step == stop):
            save_state(ckpt, {"embedder": embedder, "extractor": extractor}, opt, gen, step, time.time() - t0, curve, _recipe(args))
    elapsed = time.time() - t0
    final = evaluate(embedder, extractor, heldout)
    log.info("held-out at the card's strength: %s", final)
    record = {
        "what": "the project's tiny watermark pair (demo and test fixture, not a production watermarker)",
        "command": "videoseal-litert train-tiny " + " ".join(args.argv),
        "seed": args.seed,
        "recipe": _recipe(args),
        "card": str(args.card.name),
        "embedder": embedder_description(embedder.cfg),
        "extractor_params": sum(p.numel() for p in extractor.parameters()),
        "embedder_params": sum(p.numel() for p in embedder.parameters()),
        "hardware": _hardware(args.threads),
        "train_seconds": round(elapsed, 1),
        "steps": step,
        "heldout_metrics_256": final,
        "heldout_photos": "astronaut, coffee, rocket, motorcycle_left, motorcycle_right, camera, coins (full views, never trained on)",
        "learning_curve": curve,
        "torch": torch.__version__,
        "random_init": False,
    }
    if args.export:
        export(embedder, extractor, args.export, record)
    return record


def load_state(
    path: Path | None, modules: dict[str, torch.nn.Module], opt: torch.optim.Optimizer, gen: torch.Generator, recipe: dict
) -> tuple[int, float, list]:
    """Resume from ``save_state``'s file when there is one (strictly; the same recipe but for ``steps``, else a
    UsageError): (step, elapsed seconds, curve), or (0, 0.0, []) for a fresh run."""
    if path is None or not path.exists():
        return 0, 0.0, []
    state = torch.load(path, map_location="cpu", weights_only=True)
    saved = json.loads(state["recipe"])
    changed = {k: (saved.get(k), v) for k, v in recipe.items() if k != "steps" and saved.get(k) != v}
    if changed:
        raise UsageError(f"{path} was trained with other settings {changed} (saved, now); use another --ckpt-dir or the same settings")
    for name, m in modules.items():
        m.load_state_dict(state[name], strict=True)
    opt.load_state_dict(state["optimizer"])
    gen.set_state(state["generator"])
    step, elapsed = int(state["step"]), float(state["elapsed_s"])
    log.info("resumed at step %d (%.0f s so far)", step, elapsed)
    return step, elapsed, json.loads(state["curve"])


def save_state(
    path: Path,
    modules: dict[str, torch.nn.Module],
    opt: torch.optim.Optimizer,
    gen: torch.Generator,
    step: int,
    elapsed: float,
    curve: list,
    recipe: dict,
) -> None:
    """A resumable training state (the trained ``modules`` by name, optimiser, generator, step, curve), written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    state = {
        **{name: m.state_dict() for name, m in modules.items()},
        "optimizer": opt.state_dict(),
        "generator": gen.get_state(),
        "step": step,
        "elapsed_s": elapsed,
        "curve": json.dumps(curve),
        "recipe": json.dumps(recipe),
    }
    torch.save(state, tmp)
    tmp.replace(path)


def _hardware(threads: int) -> str:
    from videoseal_litert.core.artifacts import machine_description

    return f"{machine_description()}; CPU only, torch.set_num_threads({threads})"


def save_checkpoint(extractor_state: dict[str, torch.Tensor], embedder_state: dict[str, torch.Tensor], path: Path) -> None:
    """One safetensors file in the official key layout (``detector.``, ``embedder.``), byte-reproducible:
    the metadata is a single key (safetensors writes several in an arbitrary order)."""
    from safetensors.torch import save_file

    tensors = {f"detector.{k}": v.detach().contiguous() for k, v in extractor_state.items()}
    tensors.update({f"embedder.{k}": v.detach().contiguous() for k, v in embedder_state.items()})
    save_file(tensors, str(path), metadata={"videoseal_litert": "tiny pair (demo and test fixture); random_init: false"})


def export(embedder: TileEmbedder, extractor: ConvnextExtractor, out: Path, record: dict[str, Any], with_sha256: bool = False) -> None:
    """``checkpoint.safetensors`` (official key layout), the record (``with_sha256``: with the checkpoint's
    sha256) and the curve, as one directory swap."""
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_checkpoint(extractor.state_dict(), embedder.state_dict(), tmp / "checkpoint.safetensors")
    if with_sha256:
        import hashlib

        record["checkpoint_sha256"] = hashlib.sha256((tmp / "checkpoint.safetensors").read_bytes()).hexdigest()
    (tmp / "training_record.json").write_text(json.dumps(record, indent=2) + "\n")
    plot_curve(record, tmp / "learning_curve.png")
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)


def plot_curve(record: dict[str, Any], path: Path) -> None:
    """Held-out bit accuracy (clean, JPEG 80, resize 0.5) and PSNR against steps, wall time on top."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = record["learning_curve"]
    if not c:
        return
    steps = [p["step"] for p in c]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 3.8))
    for key, label in (("bit_accuracy", "no attack"), ("bit_accuracy_jpeg80", "JPEG 80"), ("bit_accuracy_resize0.5", "resize 0.5")):
        ax.plot(steps, [100 * p[key] for p in c], label=label)
    ax.axhline(99, color="gray", lw=0.8, ls="--")
    ax.set_xlabel("step")
    ax.set_ylabel("held-out bit accuracy at 256 px (%)")
    ax.set_ylim(45, 101)
    ax.legend(loc="lower right")
    if len(steps) > 1:
        minutes = [p["wall_s"] / 60 for p in c]
        top = ax.secondary_xaxis("top", functions=(lambda s: np.interp(s, steps, minutes), lambda m: np.interp(m, minutes, steps)))
        top.set_xlabel("wall time (min)")
    ax2.plot(steps, [p["psnr_db"] for p in c], color="C3")
    ax2.axhline(32, color="gray", lw=0.8, ls="--")
    ax2.set_xlabel("step")
    ax2.set_ylabel("PSNR (dB)")
    fig.suptitle(f"{record.get('title', 'tiny pair')}, {record['hardware']}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)
    plt.close(fig)
