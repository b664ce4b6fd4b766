"""What one run of a stage was asked to do (the command line's choices), and the fingerprint of what the code is.

Image sets, watermarking and references are the parts' business (``convert/parts.py``); how a file
is run is the opener's (``runtime/runners.py``): these options only carry the user's choices.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from videoseal_litert.core.artifacts import ModelDir, sha256_file, tool_versions
from videoseal_litert.core.layers import LAYERS
from videoseal_litert.models.registry import ModelSpec
from videoseal_litert.runtime.runners import Opener, open_file

ROOT = Path(__file__).resolve().parent.parent
THREADS_ENV = "VIDEOSEAL_THREADS"


def default_threads() -> int:
    """CPU threads when none are given: ``VIDEOSEAL_THREADS``, else 2 (this project's machines have 2 cores)."""
    return int(os.environ.get(THREADS_ENV, "2"))


NOT_CODE = {"node_modules", "__pycache__"}  # installed by make web-setup, or written by Python: not the project's code


@functools.cache
def code_fingerprint(root: Path = ROOT) -> str:
    """Hash of all the project's code (every folder of ``core.layers.LAYERS``, the list the layering test asserts:
    a stage may import any of them) and the versions of the tools it drives: a change to either reruns the stages."""
    h = hashlib.sha256()
    for sub in LAYERS:
        for p in sorted((root / sub).rglob("*.py")):
            if NOT_CODE & set(p.relative_to(root).parts):
                continue
            h.update(p.relative_to(root).as_posix().encode())
            h.update(p.read_bytes())
    h.update(json.dumps(tool_versions(), sort_keys=True).encode())
    return h.hexdigest()[:16]


@dataclass
class RunOptions:
    """The run object: what the user chose on the command line (make variables), built once per command by the
    handler (``videoseal_litert.handlers.run_options``) and passed to every entry point (the stages, quantize,
    evaluate, video, package, web-check, arm-check, bench, the demo). What only one command asks (evaluate's
    attacks and engine, a video's CRF) travels beside it as that command's own arguments."""

    spec: ModelSpec
    out: Path
    ckpt: Path | None = None
    random_init: bool = False
    # The checkpoint holds untrained (random) weights, as ../shared/reference's official-format minis do:
    # loaded strictly as any checkpoint, labelled RANDOM in every artifact, judged by the random-weight band.
    untrained: bool = False
    allow_zero_weights: bool = False
    allow_nonfinite_weights: bool = False
    # The user's photos: the stages verify on them; the demo and evaluate watermark them (their stages then verify
    # on the held-out photos, as `make convert` does: see ``for_stages``).
    images: Path | None = None
    # The user's --variants, as typed (each command parses it for its part: models.variants.parse, evaluate.choose).
    variants: str | None = None
    # Use files that failed verification, were never verified or changed since (labelled so in every report).
    allow_unverified: bool = False
    threads: int = field(default_factory=default_threads)
    force: bool = False
    # Quantize a model in parts of at most this many float bytes (automatic above 2 GB); set small
    # to exercise the large-model path on a mini.
    max_part_bytes: int | None = None
    # How files are run for verification, calibration checks and the benchmark (the runner seam).
    opener: Opener = open_file

    @functools.cached_property
    def model_dir(self) -> ModelDir:
        return ModelDir(self.out, self.spec.name)

    def for_stages(self) -> RunOptions:
        """These options without the user's photos: for the stages a demo or an evaluation runs first, which verify
        on the held-out photos (the photos are what those commands watermark, not what the files are judged on)."""
        return replace(self, images=None)

    @property
    def random_weights(self) -> bool:
        """True when the weights are not trained: drawn (RANDOM_INIT) or declared so (UNTRAINED)."""
        return self.random_init or self.untrained

    def checkpoint_path(self) -> Path | None:
        if self.random_init:
            return None
        return self.ckpt or self.spec.default_checkpoint()

    def inputs(self) -> dict[str, Any]:
        """Fingerprint of what determines the model: card, weights, code."""
        ckpt = self.checkpoint_path()
        return {
            "card_sha256": sha256_file(self.spec.card_path),
            "checkpoint_sha256": sha256_file(ckpt) if ckpt and ckpt.is_file() else None,
            "random_init": self.random_init,
            "untrained": self.untrained,
            "code": code_fingerprint(),
        }
