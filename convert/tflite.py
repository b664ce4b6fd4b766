"""Stage 3: a part's named deploy form -> float32 ``.tflite`` with litert-torch, either part.

The file's signature carries the part's contract names (``models/contracts.py``): inputs by name, outputs
by name, never by position.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from videoseal_litert.core.artifacts import atomic_path, collect_if_large
from videoseal_litert.core.console import working

log = logging.getLogger(__name__)

# Above this many parameters the converter handles constants lazily: ChunkySeal's 3.1 GB of
# weights otherwise peak at about 2.5x their size (9.8 GB vs 4.5 GB, measured).
LIGHTWEIGHT_ABOVE_PARAMS = 200_000_000


def convert_fp32(named: nn.Module, sample: dict[str, torch.Tensor], path: Path) -> None:
    """Convert the named module to a float32 .tflite at ``path`` (atomically)."""
    import litert_torch

    n_params = sum(p.numel() for p in named.parameters())
    lightweight = n_params > LIGHTWEIGHT_ABOVE_PARAMS
    log.info("converting %.1f M parameters with litert-torch (lightweight=%s)", n_params / 1e6, lightweight)
    with working(f"converting to {path.name}"):
        edge = litert_torch.convert(named.eval(), sample_kwargs=sample, lightweight_conversion=lightweight)
    with working(f"writing {path.name}"), atomic_path(path) as tmp:
        edge.export(str(tmp))
        del edge
        collect_if_large(tmp.stat().st_size)
        compact_tensor_names(tmp)


# A converter tensor name is a "/"-joined module path whose segments are "<python module>.<Class>_<attr>",
# e.g. "torch.nn.modules.linear.Linear_pwconv2"; the python module part is what makes names long.
_QUALIFIED = re.compile(r"^(?:[A-Za-z_]\w*\.)+(?=[A-Za-z])")
FLATBUFFER_LIMIT = 2**31 - 1


def short_name(name: str) -> str:
    """A converter tensor name without the python module qualifications of its classes.

    ``models.parts.NamedExtractor/models.families.DeployExtractor_deploy/.../torch.nn.modules.linear.Linear_pwconv2;``
    -> ``NamedExtractor/DeployExtractor_deploy/.../Linear_pwconv2;``. Class and attribute stay (the
    converter names list items by index only, so the class is what tells ``Sequential_0/Block_1`` from
    ``Sequential_0/LayerNorm2d_1``). Single-segment names (``serving_default_image``) are kept.
    """
    return ";".join("/".join(_QUALIFIED.sub("", seg) for seg in part.split("/")) if "/" in part else part for part in name.split(";"))


def _drop_common_prefix(names: list[str]) -> list[str]:
    """Remove the leading path segments every module-path name shares (the deploy wrappers).

    A name that is exactly the shared prefix (an op of the outermost wrapper) keeps its last segment.
    """
    paths = [part.split("/") for n in names if "/" in n for part in n.split(";") if "/" in part]
    if not paths:
        return names
    k = 0
    while all(len(p) > k and p[k] == paths[0][k] for p in paths):
        k += 1

    def strip(part: str) -> str:
        segs = part.split("/")
        return "/".join(segs[k:]) if len(segs) > k else segs[-1]

    return [";".join(strip(p) if "/" in p else p for p in n.split(";")) if "/" in n else n for n in names]


def as_numpy_buffers(model: Any) -> None:  # an ai_edge_litert schema ModelT
    """Buffers as numpy arrays: ``read_model`` gives some as memoryviews, which the generated ``Pack``
    writes one byte per Python call (hours for ChunkySeal) instead of one vector copy."""
    for b in model.buffers:
        if b.data is not None and not isinstance(b.data, np.ndarray):
            b.data = np.frombuffer(b.data, dtype=np.uint8)


def compact_tensor_names(path: Path) -> bool:
    """Shorten the file's tensor names (:func:`short_name`, minus the shared wrapper prefix).

    About 0.17 MB of the 0.21 MB of names in VideoSeal 1.0's fp32 file, more in the quantized files.

    Names only label tensors (inputs and outputs are found through the signature, whose names are
    kept); the graph and weights are untouched. Files over the 2 GB flatbuffer limit keep their
    names: their weights live outside the flatbuffer and a rewrite would have to move them.
    """
    from ai_edge_litert.tools import flatbuffer_utils

    if Path(path).stat().st_size >= FLATBUFFER_LIMIT:
        return False
    model = flatbuffer_utils.read_model(str(path))
    as_numpy_buffers(model)
    for sg in model.subgraphs:
        old = [t.name.decode() if isinstance(t.name, bytes) else t.name for t in sg.tensors]
        new = _drop_common_prefix([short_name(n) for n in old])
        if len(set(new)) != len(set(old)):
            log.warning("shortened tensor names would collide; keeping the converter's names")
            return False
        for t, n in zip(sg.tensors, new, strict=True):
            t.name = n
    flatbuffer_utils.write_model(model, str(path))
    return True
