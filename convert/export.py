"""Stage 2: PyTorch extractor -> ``torch.export`` program (``extractor.pt2``) and ONNX (``model.onnx``).

Both export the deployment wrapper (NHWC float input in [0, 1], outputs mask logit and bit
logits). The ONNX file is run with onnxruntime on a fixed input and compared with PyTorch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from videoseal_litert.convert.artifacts import atomic_path
from videoseal_litert.convert.console import working
from videoseal_litert.models.errors import VerificationError
from videoseal_litert.models.families import INPUT_NAME, OUTPUT_NAMES, DeployExtractor

log = logging.getLogger(__name__)

ONNX_OPSET = 18
ONNX_TOLERANCE = 1e-4


class NamedOutputs(torch.nn.Module):
    """DeployExtractor with named inputs and outputs, so every format carries the same names."""

    def __init__(self, deploy: DeployExtractor) -> None:
        super().__init__()
        self.deploy = deploy

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        mask, bits = self.deploy(image)
        return {OUTPUT_NAMES[0]: mask, OUTPUT_NAMES[1]: bits}


def sample_input(img_size: int, seed: int = 0) -> torch.Tensor:
    """A fixed NHWC sample in [0, 1] for tracing and export checks."""
    return torch.rand(1, img_size, img_size, 3, generator=torch.Generator().manual_seed(seed))


@dataclass
class ExportResult:
    onnx_max_abs_diff: float
    onnx_opset: int


def export_program(deploy: DeployExtractor, img_size: int, path: Path) -> None:
    """Save the wrapped extractor as a torch.export program."""
    with working(f"exporting {path.name}"):
        ep = torch.export.export(NamedOutputs(deploy).eval(), (sample_input(img_size),), strict=False)
    with atomic_path(path) as tmp:
        torch.export.save(ep, str(tmp))


def export_onnx(deploy: DeployExtractor, img_size: int, path: Path) -> ExportResult:
    """Export ONNX (opset ONNX_OPSET) and check it with onnxruntime against PyTorch."""
    import onnxruntime as ort

    x = sample_input(img_size)
    module = NamedOutputs(deploy).eval()
    with working(f"exporting {path.name}"), atomic_path(path) as tmp:
        tmp_onnx = tmp.with_name(tmp.name + ".onnx")  # .<name>.<random>.tmp.onnx: removed after a kill too
        try:
            torch.onnx.export(
                module,
                (x,),
                str(tmp_onnx),
                input_names=[INPUT_NAME],
                output_names=list(OUTPUT_NAMES),
                opset_version=ONNX_OPSET,
                dynamo=True,
                external_data=False,
                verbose=False,
            )
            tmp_onnx.replace(tmp)
        finally:
            tmp_onnx.unlink(missing_ok=True)
        sess = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        got = sess.run(list(OUTPUT_NAMES), {INPUT_NAME: x.numpy()})
        with torch.no_grad():
            ref = module(x)
        diff = max(float(np.abs(g - ref[n].numpy()).max()) for g, n in zip(got, OUTPUT_NAMES, strict=True))
        if diff > ONNX_TOLERANCE:
            raise VerificationError(f"ONNX output differs from PyTorch by {diff:.3g} (> {ONNX_TOLERANCE}); not writing {path}")
    log.info("ONNX opset %d: max abs diff vs PyTorch %.3g", ONNX_OPSET, diff)
    return ExportResult(onnx_max_abs_diff=diff, onnx_opset=ONNX_OPSET)
