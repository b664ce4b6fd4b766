"""Stage 1: checkpoint (+ card) -> a PyTorch part (extractor or embedder), loaded strictly.

Accepts the official format (``{'model': state_dict}`` with ``detector.``/``embedder.``
prefixes), a bare extractor state dict, and safetensors. Pickles are read with
``weights_only=True``; any missing, unexpected or mis-shaped key fails with the list of names.
"""

from __future__ import annotations

import logging
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from videoseal_litert.core.artifacts import sha256_file
from videoseal_litert.core.errors import (
    CheckpointFormatError,
    CheckpointMismatchError,
    CheckpointNotFoundError,
    NonFiniteWeightError,
    ZeroWeightError,
)
from videoseal_litert.models.catalog import embedder_family_of, family_of
from videoseal_litert.models.contracts import EMBEDDER, EXTRACTOR
from videoseal_litert.models.families import FamilyConfig
from videoseal_litert.models.registry import ModelSpec

log = logging.getLogger(__name__)

RANDOM_INIT_SEED = 0
EXTRACTOR_PREFIX = "detector."
EMBEDDER_PREFIX = "embedder."


@dataclass
class Loaded:
    """One part of a model, built and filled, and where its weights came from."""

    spec: ModelSpec
    part: str  # models.parts.EXTRACTOR or EMBEDDER
    config: Any  # the family's config (FamilyConfig or EmbedderConfig)
    family: Any  # the family (Family or EmbedderFamily)
    module: nn.Module
    checkpoint_path: str | None
    checkpoint_sha256: str | None
    random_init: bool


def build_extractor(cfg: FamilyConfig, device: str | torch.device = "cpu") -> nn.Module:
    """The config's family builds it (official parameter names), in eval mode."""
    with torch.device(device):
        return family_of(cfg).build(cfg).eval()


def random_init_(module: torch.nn.Module, seed: int = RANDOM_INIT_SEED) -> None:
    """Seeded random weights with non-trivial norm/GRN parameters, so a wrong formula would show."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.ndim >= 2 and "grn" not in name:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g) * (1.0 / fan_in) ** 0.5)
            elif name.endswith("weight"):  # LayerNorm scales
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            else:  # biases, GRN gamma/beta
                p.copy_(0.1 * torch.randn(p.shape, generator=g))


def read_state_dict(path: Path, prefix: str = EXTRACTOR_PREFIX) -> dict[str, torch.Tensor]:
    """Read a checkpoint file into the extractor's (or, with ``EMBEDDER_PREFIX``, the embedder's) state dict, prefix stripped."""
    tensors = read_tensors(path)
    if any(k.startswith(prefix) for k in tensors):
        return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    if prefix == EMBEDDER_PREFIX:
        raise CheckpointMismatchError(f"{path}: holds no '{EMBEDDER_PREFIX}' keys: no embedder in this checkpoint")
    if any(k.startswith(EMBEDDER_PREFIX) for k in tensors):
        raise CheckpointMismatchError(f"{path}: holds '{EMBEDDER_PREFIX}' keys but no '{EXTRACTOR_PREFIX}' keys: no extractor to convert")
    return tensors


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint file (``{'model': state_dict}``, a bare state dict or safetensors), names as stored."""
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            raw: object = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointFormatError(f"{path}: not a readable safetensors file ({e})") from e
    else:
        try:
            raw = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except pickle.UnpicklingError as e:
            raise CheckpointFormatError(
                f"{path}: refused to unpickle: the file holds objects other than tensors and plain data, "
                f"which could run code when loaded (weights_only=True). Detail: {str(e).splitlines()[0]}"
            ) from e
        except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
            raise CheckpointFormatError(
                f"{path}: not a readable PyTorch checkpoint (truncated or corrupt?): {str(e).splitlines()[0]}"
            ) from e
    if isinstance(raw, dict) and "model" in raw and isinstance(raw["model"], dict):
        raw = raw["model"]
    if not isinstance(raw, dict) or not all(isinstance(k, str) for k in raw):
        raise CheckpointFormatError(f"{path}: expected a state dict or {{'model': state_dict}}, got {type(raw).__name__}")
    return {k: v for k, v in raw.items() if isinstance(v, torch.Tensor)}


def checkpoint_keys(path: Path) -> set[str]:
    """The tensor names a checkpoint file holds (official prefixes kept), read without loading the weights."""
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                return set(f.keys())
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointFormatError(f"{path}: not a readable safetensors file ({e})") from e
    return set(read_tensors(path))  # memory-mapped: the names, not the weights, are read


def check_keys(expected: dict[str, torch.Size], got: dict[str, torch.Tensor], path: Path) -> None:
    """Fail with every missing, unexpected and mis-shaped key named."""
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    shapes = sorted(
        f"{k}: checkpoint {tuple(got[k].shape)} vs model {tuple(expected[k])}"
        for k in set(expected) & set(got)
        if tuple(got[k].shape) != tuple(expected[k])
    )
    if missing or unexpected or shapes:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", shapes)):
            if items:
                parts.append(f"{len(items)} {label}:\n    " + "\n    ".join(items))
        raise CheckpointMismatchError(
            f"{path} does not match the card's architecture (strict loading):\n  "
            + "\n  ".join(parts)
            + "\n  Is this checkpoint for this MODEL / card?"
        )


def zero_weights(state: dict[str, torch.Tensor]) -> list[str]:
    """Names of convolution and linear weights that are entirely zero (a broken checkpoint)."""
    return [k for k, v in state.items() if k.endswith("weight") and v.ndim >= 2 and not bool(v.any())]


def nonfinite_tensors(state: dict[str, torch.Tensor]) -> list[str]:
    """Names of floating-point tensors holding NaN or infinity (every output they touch is NaN)."""
    return [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]


def _names(names: list[str]) -> str:
    return ", ".join(names[:10]) + (f" ... ({len(names)} in all)" if len(names) > 10 else "")


def checkpoint_file(spec: ModelSpec, ckpt: str | Path | None) -> Path:
    """The checkpoint to read (``CKPT``, else the spec's default place), or a named error saying where to get it."""
    path = Path(ckpt) if ckpt else spec.default_checkpoint()
    if not path.is_file():
        where = f"\n  Download it from {spec.checkpoint_url} on a machine with internet," if spec.checkpoint_url else ""
        if spec.checkpoint_hint:
            where = f"\n  {spec.checkpoint_hint[0].upper()}{spec.checkpoint_hint[1:]},"
        raise CheckpointNotFoundError(
            f"checkpoint not found: {path}{where}\n  then place it at {path} or pass CKPT=<path>"
            "\n  (or RANDOM_INIT=1 to build with random weights, labelled as such)."
        )
    return path


def load_extractor(
    spec: ModelSpec,
    ckpt: str | Path | None = None,
    random_init: bool = False,
    allow_zero_weights: bool = False,
    allow_nonfinite_weights: bool = False,
) -> Loaded:
    """Build the spec's extractor and fill it from a checkpoint, or with seeded random weights."""
    cfg = spec.card.config
    path = None if random_init else checkpoint_file(spec, ckpt)  # before building: a missing file is named at once
    module = build_extractor(cfg)
    if path is None:
        random_init_(module)
        log.warning("%s: RANDOM weights (seed %d), not a trained model", spec.name, RANDOM_INIT_SEED)
        return Loaded(spec, EXTRACTOR, cfg, family_of(cfg), module, None, None, True)
    state = read_state_dict(path)
    expected = {k: v.shape for k, v in module.state_dict().items()}
    check_keys(expected, state, path)
    zeros = zero_weights(state)
    if zeros and not allow_zero_weights:
        raise ZeroWeightError(
            f"{path}: {len(zeros)} convolution/linear weight(s) are entirely zero, a sign of an untrained or broken "
            f"checkpoint: {_names(zeros)}. Set ALLOW_ZERO_WEIGHTS=1 to go on."
        )
    bad = nonfinite_tensors(state)
    if bad and not allow_nonfinite_weights:
        raise NonFiniteWeightError(
            f"{path}: {len(bad)} tensor(s) hold NaN or infinity, so every output would be NaN: {_names(bad)}. "
            "Use another checkpoint, or set ALLOW_NONFINITE_WEIGHTS=1 to go on anyway."
        )
    module.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    del state
    return Loaded(spec, EXTRACTOR, cfg, family_of(cfg), module, str(path), sha256_file(path), False)


def load_embedder(
    spec: ModelSpec, ckpt: str | Path | None = None, random_init: bool = False, allow_nonfinite_weights: bool = False
) -> Loaded:
    """Build the card's embedder and fill it strictly from the checkpoint's embedder keys (an official
    checkpoint also holds ``detector.`` keys, which are left alone), or with seeded random weights."""
    cfg = spec.card.embedder
    family = embedder_family_of(cfg)
    path = None if random_init else checkpoint_file(spec, ckpt)
    module = family.build(cfg)
    if path is None:
        g = torch.Generator().manual_seed(RANDOM_INIT_SEED)
        with torch.no_grad():
            for name, p in module.named_parameters():
                if "attenuation" in name:  # the fixed JND kernels are not learned
                    continue
                if p.ndim >= 2:
                    p.copy_(torch.randn(p.shape, generator=g) * (1.0 / p[0].numel()) ** 0.5)
                else:  # norm scales near 1 (and biases near 0) would hide a wrong formula: perturb
                    p.copy_((1.0 if name.endswith(("weight", "gamma")) else 0.0) + 0.1 * torch.randn(p.shape, generator=g))
        log.warning("%s embedder: RANDOM weights (seed %d), not a trained model", spec.name, RANDOM_INIT_SEED)
        return Loaded(spec, EMBEDDER, cfg, family, module.eval(), None, None, True)
    tensors = read_tensors(path)
    if not any(k.startswith(EMBEDDER_PREFIX) for k in tensors):
        raise CheckpointMismatchError(
            f"{path}: holds no '{EMBEDDER_PREFIX}' keys: no embedder in this checkpoint (an extractor-only checkpoint?)"
        )
    state = {k: v for k, v in tensors.items() if family.owns(k)}
    del tensors
    check_keys({k: v.shape for k, v in module.state_dict().items()}, state, path)
    shared = [k for k in state if k.endswith("msg_processor.msg_embeddings.weight")]
    if len(shared) > 1 and not all(torch.equal(state[shared[0]], state[k]) for k in shared[1:]):
        raise CheckpointMismatchError(f"{path}: {' and '.join(shared)} differ; in an official checkpoint they are one shared tensor")
    bad = nonfinite_tensors(state)
    if bad and not allow_nonfinite_weights:
        raise NonFiniteWeightError(
            f"{path}: {len(bad)} embedder tensor(s) hold NaN or infinity: {_names(bad)}. "
            "Use another checkpoint, or set ALLOW_NONFINITE_WEIGHTS=1 to go on anyway."
        )
    module.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()}, strict=True)
    del state
    return Loaded(spec, EMBEDDER, cfg, family, module.eval(), str(path), sha256_file(path), False)
