"""Video rows for ``evaluate``: clips embedded by the official video route, attacked by the codec suite.

:class:`VideoMarker` is the video pass's step 1, in place of :class:`~videoseal_litert.evaluate.batches.Marker`:
per clip (its first ``video_frames`` frames) and seeded message, each embedder watermarks the frames by
the key-frame route (``video/key_frames.py``, the card's step), the 8-bit frames are attacked
(``video/codec_attacks.py``: H.264 and H.265 at several CRFs, half frame rate, temporal crop, half size, each
through FFmpeg), and every attacked frame is resized to the extractor's input. One row per clip x message
x embedder x attack holds its frames (padded to ``video_frames``) and their count. The same
:class:`~videoseal_litert.evaluate.batches.Decoder` then decodes every frame of a row and aggregates over them
(``video_aggregation``, official ``avg``), and :func:`~videoseal_litert.evaluate.batches.to_rows` makes the
result rows, with the image rows' columns: ``image`` is the clip, ``width``/``height`` its size, ``psnr_db``
the mean over frames. The pass writes to its own rows folder (its batches carry frames, not pixels).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from videoseal_litert.core.errors import PipelineError
from videoseal_litert.evaluate.batches import Batch, EvalConfig, Marker, columns, message
from videoseal_litert.runtime.route import resize_aa
from videoseal_litert.video.codec_attacks import resolve_video_attacks
from videoseal_litert.video.commands import card_video_args
from videoseal_litert.video.io import probe, read_frames
from videoseal_litert.video.key_frames import KeyFrames

VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi")
ORDER_OFFSET = 1000  # video attacks sort after the image attacks in the tables


class VideoMarker(Marker):
    """Embed and attack clips (the video pass's step 1): the image marker's embedders and route, the video attacks."""

    def __init__(self, cfg: EvalConfig) -> None:
        super().__init__(cfg)
        self.step = card_video_args(cfg.run)["step"]
        self.frames = cfg.video_frames
        self.video_attacks = resolve_video_attacks(cfg.video_attacks)

    def __call__(self, batch: Batch) -> Batch:
        cols: dict[str, list[Any]] = {
            k: []
            for k in (
                "image", "image_index", "message_index", "embedder", "attack", "attack_order", "family", "strength", "message",
                "psnr_db", "width", "height", "error", "frames", "frame_count",
            )
        }  # fmt: skip

        def add(**kw: Any) -> None:
            for k, v in kw.items():
                cols[k].append(v)

        blank = np.zeros((self.frames, self.size, self.size, 3), np.float32)
        for path, idx in zip(batch["image"].tolist(), batch["image_index"].tolist(), strict=True):
            try:
                info = probe(path)
                clip = [f.upright() for f in read_frames(path, self.frames)]  # as a player shows them
            except (PipelineError, OSError) as e:
                add(
                    image=path, image_index=idx, message_index=-1, embedder="", attack="", attack_order=-1, family="",
                    strength=math.nan, message=np.zeros(self.nbits, np.uint8), psnr_db=math.nan, width=0, height=0,
                    error=str(e), frames=blank, frame_count=0,
                )  # fmt: skip
                continue
            for j in range(self.cfg.messages_per_image):
                m = message(self.cfg, path, j, self.nbits)
                for name, run in self.embedders.items():
                    k = KeyFrames(run, self.route, self.size, m, self.step)
                    marked = [k.mark(i, f) for i, f in enumerate(clip)]
                    psnr = float(np.mean([p for p in k.psnr_db if math.isfinite(p)] or [math.inf]))
                    for order, a in enumerate(self.video_attacks):
                        ys = a.apply(marked, info.fps)[: self.frames]
                        pix = blank.copy()
                        for i, y in enumerate(ys):
                            pix[i] = resize_aa(y.astype(np.float32) / 255.0, self.size, self.size)
                        add(
                            image=path, image_index=idx, message_index=j, embedder=name, attack=a.name,
                            attack_order=ORDER_OFFSET + order, family=a.family, strength=math.nan if a.strength is None else a.strength,
                            message=m.astype(np.uint8), psnr_db=psnr, width=info.width, height=info.height, error="",
                            frames=pix, frame_count=len(ys),
                        )  # fmt: skip
        return columns(cols, self.nbits, self.size, self.cfg.run.random_weights, self.frames)
