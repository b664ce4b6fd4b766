"""Stage 2: a part's named deploy form -> ``torch.export`` program (``.pt2``) and ONNX (``.onnx``), either part.

Both export the module with the part's contract names (``models/contracts.py``: NHWC float image in
[0, 1]; the extractor's two logits, the embedder's watermarked image and residual). The ONNX file is
run with onnxruntime on the fixed sample inputs and compared with PyTorch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from videoseal_litert.core.artifacts import atomic_path
from videoseal_litert.core.console import working
from videoseal_litert.core.errors import VerificationError

log = logging.getLogger(__name__)

ONNX_OPSET = 18
ONNX_TOLERANCE = 1e-4


@dataclass
class ExportResult:
    onnx_max_abs_diff: float
    onnx_opset: int


def export_program(named: nn.Module, sample: dict[str, torch.Tensor], path: Path) -> None:
    """Save the named module as a torch.export program."""
    with working(f"exporting {path.name}"):
        ep = torch.export.export(named.eval(), (), sample, strict=False)
    with atomic_path(path) as tmp:
        torch.export.save(ep, str(tmp))


def export_onnx(named: nn.Module, sample: dict[str, torch.Tensor], output_names: tuple[str, ...], path: Path) -> ExportResult:
    """Export ONNX (opset ONNX_OPSET) and check it with onnxruntime against PyTorch."""
    import onnxruntime as ort

    module = named.eval()
    with working(f"exporting {path.name}"), atomic_path(path) as tmp:
        tmp_onnx = tmp.with_name(tmp.name + ".onnx")  # .<name>.<random>.tmp.onnx: removed after a kill too
        try:
            torch.onnx.export(
                module,
                (),
                str(tmp_onnx),
                kwargs=sample,
                input_names=list(sample),
                output_names=list(output_names),
                opset_version=ONNX_OPSET,
                dynamo=True,
                external_data=False,
                verbose=False,
            )
            tmp_onnx.replace(tmp)
        finally:
            tmp_onnx.unlink(missing_ok=True)
        sess = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        got = sess.run(list(output_names), {k: v.numpy() for k, v in sample.items()})
        with torch.no_grad():
            ref = module(**sample)
        diff = max(float(np.abs(g - ref[n].numpy()).max()) for g, n in zip(got, output_names, strict=True))
        if diff > ONNX_TOLERANCE:
            raise VerificationError(f"ONNX output differs from PyTorch by {diff:.3g} (> {ONNX_TOLERANCE}); not writing {path}")
    log.info("ONNX opset %d: max abs diff vs PyTorch %.3g", ONNX_OPSET, diff)
    return ExportResult(onnx_max_abs_diff=diff, onnx_opset=ONNX_OPSET)
