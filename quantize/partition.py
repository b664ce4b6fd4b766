"""Quantizing a model whose float ``.tflite`` is over the 2 GB flatbuffer limit (ChunkySeal).

ai-edge-quantizer cannot read such a file, so the extractor is cut into consecutive parts (the
family's units: for ConvNeXt stem, blocks, downsampling layers, pixel decoder) of at most
``max_part_bytes`` of float weights, each converted to its own float ``.tflite`` (NHWC in, NHWC
out, so no transposes sit at a seam). Every part is calibrated on the previous part's float outputs for the same images,
quantized with the same recipe as a small model, and the quantized parts are joined back into
one flatbuffer (under 2 GB once quantized). The joined file is verified against PyTorch like
any other variant.
"""

from __future__ import annotations

import gc
import logging
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from videoseal_litert.calibration_data.images import Tally
from videoseal_litert.convert.console import progress
from videoseal_litert.convert.tflite import as_numpy_buffers
from videoseal_litert.models.errors import CalibrationError, PipelineError
from videoseal_litert.models.families import Family
from videoseal_litert.models.parts import EXTRACTOR_CONTRACT
from videoseal_litert.runtime.runners import open_runner

INPUT_NAME = EXTRACTOR_CONTRACT.input_names[0]
OUTPUT_NAMES = EXTRACTOR_CONTRACT.output_names

log = logging.getLogger(__name__)


class MergeError(PipelineError):
    """Quantized parts could not be joined into one model."""


class Part(nn.Module):
    """Consecutive units of the extractor as one NHWC module.

    The first part takes the image in [0, 1] and does ``x * 2 - 1``; the last returns the two
    outputs (mask logit, bit logits) like ``models.parts.NamedExtractor``; the others map
    the tensor between units to the next one, NHWC at the seams (a family whose units pass NCHW
    feature maps is permuted there; token grids are NHWC already).
    """

    def __init__(self, units: list[nn.Module], first: bool, last: bool, chain_layout: str = "NCHW") -> None:
        super().__init__()
        self.units = nn.ModuleList(units)
        self.first, self.last = first, last
        self.nchw = chain_layout == "NCHW"

    def forward(self, image: torch.Tensor):
        if self.first:
            x = image.permute(0, 3, 1, 2) * 2.0 - 1.0
        else:
            x = image.permute(0, 3, 1, 2) if self.nchw else image
        for u in self.units:
            x = u(x)
        if self.last:
            return {OUTPUT_NAMES[0]: x[:, :1], OUTPUT_NAMES[1]: x[:, 1:]}
        return x.permute(0, 2, 3, 1) if self.nchw else x


def unit_costs(family: Family, chain: list[nn.Module], img_size: int) -> list[tuple[int, int]]:
    """(float32 weight bytes, estimated calibration activation bytes) of each unit, from one forward.
    Calibration keeps every intermediate tensor of a part for one image: the family says how many
    times a unit's output that is."""
    x = torch.zeros(1, 3, img_size, img_size)
    costs = []
    with torch.no_grad():
        for u in chain:
            x = u(x)
            costs.append((sum(p.numel() * 4 for p in u.parameters()), x.numel() * 4 * family.activation_factor(u)))
    return costs


def plan_parts(
    family: Family, extractor: nn.Module, max_part_bytes: int, max_act_bytes: int | None = None, img_size: int = 256
) -> list[Part]:
    """Greedy cut of the family's unit chain (of the deploy-form extractor) into parts of at most
    ``max_part_bytes`` float32 weights and ``max_act_bytes`` estimated calibration activations (a
    unit over either budget is a part alone)."""
    chain = family.units(extractor)
    costs = unit_costs(family, chain, img_size) if max_act_bytes else [(sum(p.numel() * 4 for p in u.parameters()), 0) for u in chain]
    groups: list[list[nn.Module]] = [[]]
    w = a = 0
    for u, (wb, ab) in zip(chain, costs, strict=True):
        if groups[-1] and (w + wb > max_part_bytes or (max_act_bytes and a + ab > max_act_bytes)):
            groups.append([])
            w = a = 0
        groups[-1].append(u)
        w += wb
        a += ab
    return [Part(g, i == 0, i == len(groups) - 1, family.chain_layout) for i, g in enumerate(groups)]


def convert_parts(parts: list[Part], img_size: int, workdir: Path) -> list[Path]:
    """Convert each part to ``part<k>.tflite``, freeing its weights once written."""
    import litert_torch

    x = torch.zeros(1, img_size, img_size, 3)
    paths = []
    for k, part in enumerate(parts):
        part.eval()
        with torch.no_grad():
            y = part(x)
        n = sum(p.numel() for p in part.parameters())
        log.info("  part %d/%d: %d units, %.1f M parameters", k + 1, len(parts), len(part.units), n / 1e6)
        # Not lightweight: its constants come out in a form ai-edge-quantizer cannot read ("input operand
        # has more dimensions than allowed by the axis remapping" on the first conv weight), and a part is
        # small enough (<= 1 GB of weights) for the regular conversion.
        edge = litert_torch.convert(part, sample_kwargs={INPUT_NAME: x})
        path = workdir / f"part{k}.tflite"
        edge.export(str(path))
        del edge
        for u in part.units:  # the PyTorch weights of this part are no longer needed here
            for p in u.parameters():
                p.data = torch.empty(0)
        gc.collect()
        paths.append(path)
        x = y if isinstance(y, torch.Tensor) else None
    return paths


@dataclass
class PartCalibration:
    """Statistics of every part, and how many images went through."""

    qsvs: list[dict] = field(default_factory=list)
    used: int = 0


def calibrate_parts(
    make_quantizer, part_paths: list[Path], images: Iterator[np.ndarray], workdir: Path, chunk: int = 8, threads: int = 2
) -> PartCalibration:
    """Calibrate part by part: part k sees part k-1's float outputs for the same images.

    Part-major, so only one part's quantizer and interpreter are in memory at a time; the images
    and the feature maps between parts are spilled to ``workdir`` (.npy), so memory does not grow
    with the number of images.
    """
    from videoseal_litert.quantize.calibrate import calibration_mode

    files = []
    for i, x in enumerate(images):
        f = workdir / f"act-{i}.npy"
        np.save(f, np.ascontiguousarray(x, dtype=np.float32))
        files.append(f)
    cal = PartCalibration(used=len(files))
    for k, path in enumerate(part_paths):
        q = make_quantizer(str(path))
        res = None
        for i in range(0, len(files), chunk):
            feed = {"serving_default": [{INPUT_NAME: np.load(f)} for f in files[i : i + chunk]]}
            res = q.calibrate(feed, previous_calibration_result=res, num_threads=threads, mode=calibration_mode())
        cal.qsvs.append(res)
        del q
        gc.collect()
        if k < len(part_paths) - 1:
            runner = open_runner(path, threads)
            for f in files:
                (out,) = runner({INPUT_NAME: np.load(f)}).values()  # an inner part has one output: the next part's input
                np.save(f, out)
            del runner
            gc.collect()
        log.info("  calibrated part %d/%d on %d images", k + 1, len(part_paths), len(files))
    for f in files:
        f.unlink()
    return cal


def merge_parts(paths: list[Path], out: Path) -> None:
    """Join quantized parts, each feeding the next, into one ``.tflite`` at ``out``.

    The seam connects part k's single output tensor to every use of part k+1's input tensor; the
    two must have the same type and quantization (float at a float seam; for an all-integer model
    the same scale and zero point, which holds because both were calibrated on the same values).
    The joined model keeps the first part's input and signature and the last part's outputs.
    """
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    from videoseal_litert.convert.artifacts import atomic_path

    models = [flatbuffer_utils.read_model(str(p)) for p in paths]
    for m in models:
        as_numpy_buffers(m)
    base = models[0]
    sg = base.subgraphs[0]
    if any(len(m.subgraphs) != 1 for m in models):
        raise MergeError("each part must have exactly one subgraph")
    opcode_key = {}
    for i, oc in enumerate(base.operatorCodes):
        opcode_key[(oc.builtinCode, oc.deprecatedBuiltinCode, oc.customCode, oc.version)] = i
    seam = sg.outputs[0] if len(sg.outputs) == 1 else None
    for k, m in enumerate(models[1:], start=1):
        if seam is None:
            raise MergeError(f"part {k - 1} must have one output to feed part {k}")
        psg = m.subgraphs[0]
        if len(psg.inputs) != 1:
            raise MergeError(f"part {k} must have one input")
        pin = psg.inputs[0]
        _check_seam(sg.tensors[seam], psg.tensors[pin], k)
        buf_map = {0: 0}
        for b_idx, buf in enumerate(m.buffers):
            if b_idx == 0:
                continue
            buf_map[b_idx] = len(base.buffers)
            base.buffers.append(buf)
        t_map = {pin: seam}
        for t_idx, t in enumerate(psg.tensors):
            if t_idx == pin:
                continue
            t.buffer = buf_map[t.buffer]
            t_map[t_idx] = len(sg.tensors)
            sg.tensors.append(t)
        oc_map = {}
        for i, oc in enumerate(m.operatorCodes):
            key = (oc.builtinCode, oc.deprecatedBuiltinCode, oc.customCode, oc.version)
            if key not in opcode_key:
                opcode_key[key] = len(base.operatorCodes)
                base.operatorCodes.append(oc)
            oc_map[i] = opcode_key[key]
        for op in psg.operators:
            op.opcodeIndex = oc_map[op.opcodeIndex]
            op.inputs = [t_map[i] if i >= 0 else i for i in op.inputs]
            op.outputs = [t_map[i] for i in op.outputs]
            if op.intermediates is not None and len(op.intermediates):
                op.intermediates = [t_map[i] for i in op.intermediates]
            sg.operators.append(op)
        outs = [t_map[i] for i in psg.outputs]
        sg.outputs = outs
        seam = outs[0] if len(outs) == 1 else None
        last = m
        last_map = t_map
    # Signature: the first part's input, the last part's outputs (names and order as converted).
    sig = base.signatureDefs[0]
    sig.outputs = []
    for o in last.signatureDefs[0].outputs:
        t = schema.TensorMapT()
        t.name = o.name
        t.tensorIndex = last_map[o.tensorIndex]
        sig.outputs.append(t)
    with atomic_path(out) as tmp:
        flatbuffer_utils.write_model(base, str(tmp))


def _check_seam(a, b, k: int) -> None:
    if list(a.shape) != list(b.shape):
        raise MergeError(f"seam before part {k}: shape {list(a.shape)} != {list(b.shape)}")
    if a.type != b.type:
        raise MergeError(f"seam before part {k}: output type {a.type} != input type {b.type}")
    qa, qb = a.quantization, b.quantization
    sa = None if qa is None or qa.scale is None else np.asarray(qa.scale)
    sb = None if qb is None or qb.scale is None else np.asarray(qb.scale)
    if (sa is None) != (sb is None) or (
        sa is not None and not (np.allclose(sa, sb, rtol=1e-6) and np.array_equal(qa.zeroPoint, qb.zeroPoint))
    ):
        raise MergeError(f"seam before part {k}: quantization differs ({sa} vs {sb})")


DEFAULT_PART_BYTES = 1_000_000_000
DEFAULT_PART_ACT_BYTES = 2_000_000_000


def _hwm_mb() -> float:
    """This process's peak RSS so far (VmHWM), MB; logged after each phase to show where the peak is."""
    try:
        line = next(ln for ln in open("/proc/self/status") if ln.startswith("VmHWM:"))
        return int(line.split()[1]) / 1024.0
    except (OSError, StopIteration):
        return float("nan")


def quantize_partitioned(opts, part, variants: tuple[str, ...], calib_dir: Path | None, tally: Tally) -> dict:
    """Write the extractor's ``<variant>.tflite`` for each variant via parts; return a record of the parts.
    ``tally`` counts the calibration inputs (``used``) and names every rejected file."""
    from videoseal_litert.quantize.calibrate import pin_input_ranges
    from videoseal_litert.quantize.recipes import build_quantizer, calibration_quantizer
    from videoseal_litert.runtime.variants import variant

    md = opts.model_dir
    max_bytes = opts.max_part_bytes or DEFAULT_PART_BYTES
    work = scratch_dir(md.path)
    try:
        loaded = part.load()
        parts = plan_parts(loaded.family, loaded.family.deploy_form(loaded.module), max_bytes, DEFAULT_PART_ACT_BYTES, part.size)
        del loaded
        record = {
            "num_parts": len(parts),
            "max_part_bytes": max_bytes,
            "max_part_activation_bytes_estimated": DEFAULT_PART_ACT_BYTES,
            "parts": [{"units": len(p.units), "params": sum(q.numel() for q in p.parameters())} for p in parts],
            "note": "float file over the 2 GB flatbuffer limit: converted, calibrated and quantized in parts, then joined",
        }
        log.info("quantizing in %d parts of <= %.2f GB float weights", len(parts), max_bytes / 1e9)
        part_paths = convert_parts(parts, part.size, work)
        del parts
        gc.collect()
        phases = record["peak_rss_mb_after"] = {"convert_parts": round(_hwm_mb())}
        qsvs: list = [None] * len(part_paths)
        if any(variant(v).needs_calibration for v in variants):
            stream = (x[INPUT_NAME] for x in part.calibration_inputs(calib_dir, tally))
            cal = calibrate_parts(lambda p: calibration_quantizer(p), part_paths, stream, work, threads=opts.threads)
            if not cal.used:
                raise CalibrationError("no usable calibration image: every source was rejected or empty (see the rejected files above)")
            tally.used = cal.used
            qsvs = cal.qsvs
            qsvs[0] = pin_input_ranges(part_paths[0], qsvs[0], EXTRACTOR_CONTRACT)
            phases["calibrate"] = round(_hwm_mb())
        for v in variants:
            log.info("quantizing %s part by part", v)
            qparts = []
            for k, p in enumerate(progress(part_paths, desc=f"quantizing {v} part by part")):
                q = build_quantizer(str(p), v, part.family.quant)
                res = q.quantize(qsvs[k] if q.need_calibration else None, enable_progress_report=False)
                qp = work / f"part{k}-{v}.tflite"
                qp.write_bytes(res.quantized_model)
                qparts.append(qp)
                del q, res
                gc.collect()
            merge_parts(qparts, md / part.file(v))
            for qp in qparts:
                qp.unlink()
            phases[f"quantize_{v}"] = round(_hwm_mb())
            log.info("  %s joined; peak RSS so far %.0f MB", v, phases[f"quantize_{v}"])
        return record
    finally:
        remove(work)


def scratch_dir(parent: Path) -> Path:
    """A temporary folder beside the artifacts (part files can be GBs; /tmp may be small)."""
    return Path(tempfile.mkdtemp(prefix=".parts-", suffix=".tmp", dir=parent))  # .tmp: removed by the next locked stage after a kill


def remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
