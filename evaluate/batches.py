"""The per-batch functions both engines run: mark (embed + attack), decode (one variant), rows.

A batch is a dict of numpy columns (Ray Data's ``batch_format="numpy"``), so the local engine and a
Ray actor call exactly the same code:

1. :class:`Marker` takes ``{"image": paths, "image_index": ints}``; per image and message it embeds a
   seeded random message with each embedder (the PyTorch embedder and/or embedder ``.tflite`` files,
   through the official route for any size, stored as 8 bits), applies every attack at the image's own
   size (stored as 8 bits again), and resizes to the extractor's input as official ``detect()`` does.
   One output row per image x message x embedder x attack, with the pixels; an unreadable image is
   one row with its error.
2. :class:`Decoder` adds one variant's logits (the PyTorch extractor or one extractor ``.tflite``).
3. :func:`to_rows` turns them into the result rows (no pixels): one per image x message x embedder x
   attack x variant, with bit accuracy, the binomial p-value, the detection logit, the decoded bits
   and their agreement with PyTorch's on the same attacked image.

Every random draw (message, crop position, perspective corners) comes from a generator seeded by the
run's seed and the image's path, never by batch or worker, so any split of the work gives the same rows.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from videoseal_litert.calibration_data.attacks import Attack, resolve_attacks
from videoseal_litert.calibration_data.detect_resize import resize_like_detect
from videoseal_litert.convert.options import RunOptions
from videoseal_litert.convert.parts import EmbedderPart, ExtractorPart
from videoseal_litert.core.errors import ImageError
from videoseal_litert.core.images import read_rgb, to_uint8
from videoseal_litert.core.message import message_hex
from videoseal_litert.core.metrics import binomial_tail, psnr_db
from videoseal_litert.runtime.route import embed
from videoseal_litert.runtime.runners import Runner, open_file
from videoseal_litert.video.key_frames import aggregate

PYTORCH = "pytorch"
Batch = dict[str, np.ndarray]

# The result rows' columns, in order (``to_rows``; the Parquet schema of both engines).
ROW_COLUMNS = (
    "image",
    "image_index",
    "message_index",
    "embedder",
    "attack",
    "family",
    "strength",
    "variant",
    "nbits",
    "bit_accuracy",
    "bit_errors",
    "pvalue",
    "log10_pvalue",
    "mask_logit",
    "detected",
    "agreement_with_pytorch",
    "message",
    "decoded",
    "psnr_db",
    "width",
    "height",
    "error",
    "random_weights",
)
SORT_KEYS = ("image_index", "message_index", "embedder", "attack_order", "variant")


@dataclass(frozen=True)
class EvalConfig:
    """Everything that determines the rows (recorded in ``run.json``; a resumed run must match it): the run object
    (model, checkpoint, weights, threads; pickled to Ray's workers as it is) and what evaluate chose from the request.

    ``embedders`` and ``decoders`` are ``pytorch`` or ``.tflite`` paths; ``labels`` name them in rows."""

    run: RunOptions
    attacks: str
    embedders: tuple[str, ...]
    decoders: tuple[str, ...]
    messages_per_image: int
    seed: int
    video_attacks: str = "off"  # the video pass (evaluate/video_pass.py): its attacks, frames per clip, aggregation
    video_frames: int = 16
    video_aggregation: str = "avg"

    @property
    def threads(self) -> int:
        return self.run.threads

    def record(self) -> dict[str, Any]:
        """What determines the rows, as plain values (the run's model, checkpoint and weights; not its threads or OUT)."""
        d = {k: getattr(self, k) for k in ("attacks", "embedders", "decoders", "messages_per_image", "seed")}
        d |= {k: getattr(self, k) for k in ("video_attacks", "video_frames", "video_aggregation")}
        return {
            "model": self.run.spec.name,
            "ckpt": str(self.run.ckpt) if self.run.ckpt else None,  # as given (its bytes are in run.json's sha256)
            "random_init": self.run.random_init,
            "untrained": self.run.untrained,
            **d,
        }


def label(v: str) -> str:
    """A variant's name in rows: ``pytorch`` or the file's stem (``int8``, ``embedder-int8``)."""
    return PYTORCH if v == PYTORCH else Path(v).stem


def _seed(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256("/".join(map(str, parts)).encode()).digest()[:8], "little") & ((1 << 63) - 1)


def message(cfg: EvalConfig, image: str, j: int, nbits: int) -> np.ndarray:
    """The seeded message of image ``image``'s ``j``-th watermark, (nbits,) int64 0/1."""
    g = torch.Generator().manual_seed(_seed(cfg.seed, "message", image, j))
    return torch.randint(0, 2, (nbits,), generator=g).numpy()


def attack_generator(cfg: EvalConfig, image: str, j: int, attack: str) -> torch.Generator:
    """The random draws of one attack on one watermarked image (the same for every embedder)."""
    return torch.Generator().manual_seed(_seed(cfg.seed, "attack", image, j, attack))


def set_threads(n: int) -> None:
    torch.set_num_threads(n)


class Marker:
    """Embed and attack (step 1): holds the embedders, the route and the attack list, built once."""

    def __init__(self, cfg: EvalConfig) -> None:
        set_threads(cfg.threads)
        self.cfg = cfg
        opts = cfg.run
        part = EmbedderPart(opts)
        self.route = part.family.route(opts.spec.card.embedder)
        self.size = int(opts.spec.card.config.img_size)
        self.nbits = part.nbits
        self.embedders: dict[str, Runner] = {}
        for e in cfg.embedders:
            self.embedders[label(e)] = part.torch_runner(part.load()) if e == PYTORCH else open_file(e, cfg.threads)
        self.attacks: list[Attack] = resolve_attacks(cfg.attacks)

    def __call__(self, batch: Batch) -> Batch:
        cols: dict[str, list[Any]] = {
            k: []
            for k in (
                "image",
                "image_index",
                "message_index",
                "embedder",
                "attack",
                "attack_order",
                "family",
                "strength",
                "message",
                "psnr_db",
                "width",
                "height",
                "error",
                "pixels",
            )
        }

        def add(**kw: Any) -> None:
            for k, v in kw.items():
                cols[k].append(v)

        blank = np.zeros((self.size, self.size, 3), np.float32)
        for path, idx in zip(batch["image"].tolist(), batch["image_index"].tolist(), strict=True):
            try:
                x = read_rgb(path)  # (3, H, W)
            except (ImageError, OSError) as e:
                add(
                    image=path, image_index=idx, message_index=-1, embedder="", attack="", attack_order=-1, family="",
                    strength=math.nan, message=np.zeros(self.nbits, np.uint8), psnr_db=math.nan, width=0, height=0,
                    error=str(e), pixels=blank,
                )  # fmt: skip
                continue
            x8 = to_uint8(x[None]).astype(np.float32)[0] / 255.0
            h, w = x.shape[1:]
            for j in range(self.cfg.messages_per_image):
                m = message(self.cfg, path, j, self.nbits)
                for name, run in self.embedders.items():
                    wm = embed(run, self.route, self.size, x.transpose(1, 2, 0), m)  # (H, W, 3)
                    xw = to_uint8(wm.transpose(2, 0, 1)[None]).astype(np.float32)[0] / 255.0
                    psnr = psnr_db(xw, x8)
                    tw = torch.from_numpy(xw)
                    for order, a in enumerate(self.attacks):
                        with torch.no_grad():
                            y = a(tw, attack_generator(self.cfg, path, j, a.name)).clamp(0, 1)
                        y8 = torch.from_numpy(to_uint8(y[None].numpy()).astype(np.float32) / 255.0)
                        add(
                            image=path, image_index=idx, message_index=j, embedder=name, attack=a.name, attack_order=order,
                            family=a.family, strength=math.nan if a.strength is None else a.strength, message=m.astype(np.uint8),
                            psnr_db=psnr, width=w, height=h, error="",
                            pixels=resize_like_detect(y8, self.size)[0].numpy().transpose(1, 2, 0),
                        )  # fmt: skip
        return columns(cols, self.nbits, self.size, self.cfg.run.random_weights)  # every row says whether the weights were random


def columns(cols: dict[str, list[Any]], nbits: int, size: int, random_weights: bool, frames: int = 0) -> Batch:
    """A marker's lists as a batch of numpy columns; ``pixels`` (N, size, size, 3), or a video pass's
    ``frames`` (N, frames, size, size, 3)."""
    out: Batch = {"random_weights": np.full(len(cols["image"]), random_weights, dtype=bool)}
    for k, v in cols.items():
        if k == "message":
            out[k] = np.stack(v).astype(np.uint8) if v else np.zeros((0, nbits), np.uint8)
        elif k in ("pixels", "frames"):
            shape = (size, size, 3) if k == "pixels" else (frames, size, size, 3)
            out[k] = np.stack(v).astype(np.float32) if v else np.zeros((0, *shape), np.float32)
        elif k in ("image", "embedder", "attack", "family", "error"):
            out[k] = np.array(v, dtype=object)
        elif k in ("strength", "psnr_db"):
            out[k] = np.array(v, dtype=np.float64)
        else:
            out[k] = np.array(v, dtype=np.int64)
    return out


class Decoder:
    """One extractor variant (step 2): the PyTorch extractor or one ``.tflite``, opened in this process."""

    def __init__(self, cfg: EvalConfig, variant: str) -> None:
        set_threads(cfg.threads)
        self.cfg, self.name = cfg, label(variant)
        if variant == PYTORCH:
            part = ExtractorPart(cfg.run)
            self.runner: Runner = part.torch_runner(part.load())
        else:
            self.runner = open_file(variant, cfg.threads)

    def __call__(self, batch: Batch) -> Batch:
        if os.environ.get(KILL_ONCE_ENV):
            _kill_once(Path(os.environ[KILL_ONCE_ENV]), self.name)
        n = len(batch["image"])
        nbits = batch["message"].shape[1]
        logits = np.full((n, 1 + nbits), np.nan, np.float32)
        video = "frames" in batch  # a video pass row: every frame decoded, aggregated over the clip
        for i in range(n):
            if batch["error"][i]:
                continue
            if video:
                lg = np.stack([self._one(f[None]) for f in batch["frames"][i][: int(batch["frame_count"][i])]])
                logits[i, 0] = lg[:, 0].mean()
                logits[i, 1:] = aggregate(lg[:, 1:], self.cfg.video_aggregation)
            else:
                logits[i] = self._one(batch["pixels"][i : i + 1])
        return {**batch, f"logits:{self.name}": logits}

    def _one(self, image: np.ndarray) -> np.ndarray:
        out = self.runner({"image": image})
        return np.concatenate([out["mask_logit"].reshape(-1)[:1], out["bit_logits"].reshape(-1)])


# Tests of fault tolerance only: a folder, read from the environment (the engine's workers inherit it), never an option.
KILL_ONCE_ENV = "VIDEOSEAL_TEST_KILL_ONCE"


def _kill_once(folder: Path, name: str) -> None:
    """Tests of fault tolerance: the first call to find ``folder`` without its marker ends this process
    abruptly, as a machine failure would (no exception, no cleanup)."""
    marker = folder / "killed"
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    os.write(fd, f"{name} pid {os.getpid()}\n".encode())
    os.close(fd)
    os._exit(137)


def pvalue(matches: int, n: int) -> tuple[float, float]:
    """P(X >= matches), X ~ Binomial(n, 1/2) (the official evaluation's p-value), and its log10 from
    exact integers (the p-value of 1024 matching bits, 2^-1024, is below the smallest float)."""
    tail = binomial_tail(matches, n)
    return tail / 2**n, math.log10(tail) - n * math.log10(2)


def to_rows(batch: Batch, variants: tuple[str, ...]) -> Batch:
    """The result rows (step 3): one per marked row and variant (one per unreadable image), no pixels."""
    names = [label(v) for v in variants]
    cols: dict[str, list[Any]] = {k: [] for k in (*ROW_COLUMNS, "attack_order")}
    n = len(batch["image"])
    ref = batch.get(f"logits:{PYTORCH}")
    for i in range(n):
        err = batch["error"][i]
        for name in [""] if err else names:
            lg = batch[f"logits:{name}"][i] if name else None
            m = batch["message"][i].astype(bool)
            nbits = int(m.size)
            if lg is not None:
                bits = lg[1:] > 0
                errors = int(np.sum(bits != m))
                p, lp = pvalue(nbits - errors, nbits)
                agree = float(np.mean(bits == (ref[i, 1:] > 0))) if ref is not None else math.nan
                vals = (1 - errors / nbits, errors, p, lp, float(lg[0]), bool(lg[0] > 0), agree, message_hex(bits))
            else:
                vals = (math.nan, -1, math.nan, math.nan, math.nan, False, math.nan, "")
            row = {
                "image": batch["image"][i],
                "image_index": int(batch["image_index"][i]),
                "message_index": int(batch["message_index"][i]),
                "embedder": batch["embedder"][i],
                "attack": batch["attack"][i],
                "attack_order": int(batch["attack_order"][i]),
                "family": batch["family"][i],
                "strength": float(batch["strength"][i]),
                "variant": name,
                "nbits": nbits,
                "message": "" if err else message_hex(m),
                "psnr_db": float(batch["psnr_db"][i]),
                "width": int(batch["width"][i]),
                "height": int(batch["height"][i]),
                "error": err,
                "random_weights": bool(batch["random_weights"][i]),
            }
            row.update(
                zip(
                    ("bit_accuracy", "bit_errors", "pvalue", "log10_pvalue", "mask_logit", "detected", "agreement_with_pytorch", "decoded"),
                    vals,
                    strict=True,
                )
            )
            for k, v in row.items():
                cols[k].append(v)
    out: Batch = {}
    for k, v in cols.items():
        if k in ("image", "embedder", "attack", "family", "variant", "message", "decoded", "error"):
            out[k] = np.array(v, dtype=object)
        elif k in ("strength", "psnr_db", "bit_accuracy", "pvalue", "log10_pvalue", "mask_logit", "agreement_with_pytorch"):
            out[k] = np.array(v, dtype=np.float64)
        elif k in ("detected", "random_weights"):
            out[k] = np.array(v, dtype=bool)
        else:
            out[k] = np.array(v, dtype=np.int64)
    return out


class Pipeline:
    """Marker, every Decoder and to_rows in one process: what the local engine runs on each chunk;
    ``seconds`` (when given) gathers each step's time by name (``mark``, ``decode:<variant>``)."""

    def __init__(self, cfg: EvalConfig, marker: Callable[[EvalConfig], Callable[[Batch], Batch]] | None = None) -> None:
        self.cfg = cfg
        self.marker = (marker or Marker)(cfg)
        self.decoders = [Decoder(cfg, v) for v in cfg.decoders]

    def __call__(self, batch: Batch, seconds: dict[str, float] | None = None) -> Batch:
        steps = [("mark", self.marker), *((f"decode:{d.name}", d) for d in self.decoders)]
        for name, step in steps:
            t = time.time()
            batch = step(batch)
            if seconds is not None:
                seconds[name] = seconds.get(name, 0.0) + time.time() - t
        return to_rows(batch, self.cfg.decoders)
