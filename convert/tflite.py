"""Stage 3: PyTorch extractor -> float32 ``.tflite`` with litert-torch.

The graph takes one NHWC float32 image in [0, 1] (``x * 2 - 1`` is inside) and returns two
outputs in this order: ``mask_logit`` (1, 1) and ``bit_logits`` (1, nbits).
"""

from __future__ import annotations

import gc
import logging
from pathlib import Path

from convert.artifacts import atomic_path
from convert.export import INPUT_NAME, NamedOutputs, sample_input
from models.convnext import DeployExtractor

log = logging.getLogger(__name__)

# Above this many parameters the converter handles constants lazily: ChunkySeal's 3.1 GB of
# weights otherwise peak at about 2.5x their size (TOOLCHAIN.md: 9.8 GB vs 4.5 GB).
LIGHTWEIGHT_ABOVE_PARAMS = 200_000_000


def convert_fp32(deploy: DeployExtractor, img_size: int, path: Path) -> None:
    """Convert the wrapped extractor to a float32 .tflite at ``path`` (atomically)."""
    import litert_torch

    n_params = sum(p.numel() for p in deploy.parameters())
    lightweight = n_params > LIGHTWEIGHT_ABOVE_PARAMS
    log.info("converting %.1f M parameters with litert-torch (lightweight=%s)", n_params / 1e6, lightweight)
    edge = litert_torch.convert(
        NamedOutputs(deploy).eval(), sample_kwargs={INPUT_NAME: sample_input(img_size)}, lightweight_conversion=lightweight
    )
    with atomic_path(path) as tmp:
        edge.export(str(tmp))
    del edge
    gc.collect()


def output_order_ok(path: Path) -> bool:
    """True when the file's outputs are mask logit then bit logits, by tensor order."""
    from ai_edge_litert.interpreter import Interpreter

    details = Interpreter(model_path=str(path)).get_output_details()
    names = [d["name"] for d in details]
    return len(names) == 2 and "mask_logit" in names[0] and "bit_logits" in names[1]
