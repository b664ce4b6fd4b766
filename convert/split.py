"""A part too big for one file, as pieces joined by named tensors: plan, convert, join.

A part's units (``models/contracts.py`` ``UnitChain``: the extractor's chain, the U-Net's levels with
their skips) are grouped in order into pieces of at most ``max_bytes`` float weights (and about
``max_act_bytes`` of calibration intermediates). A piece is a module whose inputs and outputs are
the named tensors that cross its edges (NHWC in the file), so its ``.tflite`` signature carries
those names. :func:`join` puts piece files back into one model by those names: a piece's input is
wired to the earlier output of the same name (a skip read three pieces later included), the
part's own inputs become the model's inputs, its contract outputs the model's outputs.

ai-edge-quantizer cannot read a float file over 2 GB and litert-torch converts a 1 B-parameter
module at about 3x its size in memory, so the large models are converted, calibrated and quantized
piece by piece (``quantize/partition.py``), and the joined file is written with its weights after
the flatbuffer (the format's buffer offsets) when it is over :data:`EXTERNAL_ABOVE_BYTES`.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from videoseal_litert.core.artifacts import atomic_path, collect_if_large
from videoseal_litert.core.console import progress
from videoseal_litert.core.errors import PipelineError
from videoseal_litert.models.contracts import Unit, UnitChain

if TYPE_CHECKING:  # annotations only: convert.parts imports this module
    from ai_edge_litert import schema_py_generated as schema

    from videoseal_litert.convert.options import RunOptions
    from videoseal_litert.convert.parts import Part

log = logging.getLogger(__name__)

# Joined models whose weights exceed this are written with the weights after the flatbuffer (the
# Python flatbuffers builder, like the format, stops at 2 GiB; the quantizer uses the same layout).
EXTERNAL_ABOVE_BYTES = 1_500_000_000


class MergeError(PipelineError):
    """Pieces could not be joined into one model."""


class Piece(nn.Module):
    """Consecutive units as one module: ``forward(**inputs)`` -> ``{output name: tensor}``. Tensors
    named in ``nchw`` are NCHW for the units and NHWC at the piece's edges."""

    def __init__(self, units: list[Unit], inputs: tuple[str, ...], outputs: tuple[str, ...], nchw: frozenset[str]) -> None:
        super().__init__()
        self.steps = nn.ModuleList(u.module for u in units)
        self.wiring = [(u.inputs, u.outputs) for u in units]
        self.inputs, self.outputs, self.nchw = inputs, outputs, nchw

    def forward(self, **tensors: torch.Tensor) -> dict[str, torch.Tensor]:
        env = {n: (t.permute(0, 3, 1, 2) if n in self.nchw and t.ndim == 4 else t) for n, t in tensors.items()}
        for module, (ins, outs) in zip(self.steps, self.wiring, strict=True):
            y = module(*[env[n] for n in ins])
            env.update(zip(outs, y if isinstance(y, tuple) else (y,), strict=True))
        return {n: (env[n].permute(0, 2, 3, 1) if n in self.nchw and env[n].ndim == 4 else env[n]) for n in self.outputs}

    def weight_bytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in self.parameters())


def _costs(chain: UnitChain, sample: dict[str, torch.Tensor]) -> list[tuple[int, int]]:
    """(weight bytes, estimated calibration intermediates) of each unit, from one forward on ``sample``."""
    env = {n: (t.permute(0, 3, 1, 2) if n in chain.nchw and t.ndim == 4 else t) for n, t in sample.items()}
    out = []
    with torch.no_grad():
        for u in chain.units:
            y = u.module(*[env[n] for n in u.inputs])
            ys = y if isinstance(y, tuple) else (y,)
            env.update(zip(u.outputs, ys, strict=True))
            out.append((u.weight_bytes(), sum(t.numel() * 4 for t in ys) * chain.factor(u)))
    return out


def plan(chain: UnitChain, max_bytes: int, max_act_bytes: int | None = None, sample: dict[str, torch.Tensor] | None = None) -> list[Piece]:
    """Greedy cut of ``chain`` into pieces of at most ``max_bytes`` float weights and ``max_act_bytes``
    estimated calibration intermediates (``sample``: the part's inputs as the file takes them, to
    measure those). A unit over a budget is a piece alone; a unit without weights joins the piece
    being filled."""
    costs = _costs(chain, sample) if max_act_bytes and sample is not None else [(u.weight_bytes(), 0) for u in chain.units]
    groups: list[list[Unit]] = [[]]
    w = a = 0
    for u, (wb, ab) in zip(chain.units, costs, strict=True):
        if w and wb and (w + wb > max_bytes or (max_act_bytes and a + ab > max_act_bytes)):
            groups.append([])
            w = a = 0
        groups[-1].append(u)
        w += wb
        a += ab
    pieces = []
    for k, g in enumerate(groups):
        made = {n for u in g for n in u.outputs}
        later = {n for h in groups[k + 1 :] for u in h for n in u.inputs} | set(chain.outputs)
        ins = tuple(dict.fromkeys(n for u in g for n in u.inputs if n not in made))  # first-use order
        outs = tuple(n for u in g for n in u.outputs if n in later)
        pieces.append(Piece(g, ins, outs, chain.nchw))
    return pieces


def piece_inputs(chain_inputs: dict[str, torch.Tensor], pieces: list[Piece]) -> list[dict[str, torch.Tensor]]:
    """Each piece's sample inputs (NHWC at the edges), from one forward through the pieces in order."""
    pool = dict(chain_inputs)
    feeds = []
    with torch.no_grad():
        for p in pieces:
            feed = {n: pool[n] for n in p.inputs}
            feeds.append(feed)
            pool.update(p.eval()(**feed))
    return feeds


def convert_pieces(pieces: list[Piece], sample: dict[str, torch.Tensor], workdir: Path, label: str = "converting in pieces") -> list[Path]:
    """Convert each piece to ``piece<k>.tflite`` (its signature: the piece's input and output names),
    freeing each piece's PyTorch weights once written. ``sample``: the part's inputs as the file takes them."""
    import litert_torch

    feeds = piece_inputs(sample, pieces)
    paths = []
    for k, (piece, feed) in enumerate(progress(list(zip(pieces, feeds, strict=True)), desc=label, unit="pieces")):
        log.info(
            "  piece %d/%d: %d units, %.1f M parameters, in %s, out %s",
            k + 1,
            len(pieces),
            len(piece.steps),
            piece.weight_bytes() / 4e6,
            ",".join(piece.inputs),
            ",".join(piece.outputs),
        )
        # Not lightweight: its constants come out in a form ai-edge-quantizer cannot read ("input operand
        # has more dimensions than allowed by the axis remapping" on the first conv weight), and a piece is
        # small enough (<= 1 GB of weights) for the regular conversion.
        edge = litert_torch.convert(piece.eval(), sample_kwargs=feed)
        path = workdir / f"piece{k}.tflite"
        edge.export(str(path))
        del edge
        nbytes = sum(p.numel() * p.element_size() for p in piece.parameters())
        for p in piece.parameters():  # this piece's PyTorch weights are no longer needed
            p.data = torch.empty(0)
        collect_if_large(nbytes)
        paths.append(path)
    return paths


def _signature(model: schema.ModelT) -> tuple[dict[str, int], dict[str, int]]:
    sig = model.signatureDefs[0]
    name = lambda t: t.name.decode() if isinstance(t.name, bytes) else t.name  # noqa: E731
    return {name(t): t.tensorIndex for t in sig.inputs}, {name(t): t.tensorIndex for t in sig.outputs}


def join(paths: list[Path], out: Path, inputs: tuple[str, ...], outputs: tuple[str, ...]) -> None:
    """Join piece files into one ``.tflite`` at ``out`` by signature names.

    Each piece's input is wired to every use of the earlier output of the same name, which must agree
    in shape, type and quantization (float at a float seam; at an integer seam the same scale and zero
    point, which holds when both sides were calibrated on the same values); a name no earlier piece
    wrote must be one of the model's ``inputs``. The model's signature: ``inputs`` and ``outputs``, by name.
    Steps: read the pieces (tensors renamed ``piece<k>/...``), append each later piece to the first
    (:class:`_Joined`), then set the joined file's inputs, outputs and signature, and write it.
    """
    models = _read_pieces(paths)
    joined = _Joined(models[0], inputs)
    for k, m in enumerate(models[1:], start=1):
        joined.append(k, m)
    joined.finish(inputs, outputs)
    del models
    write_model(joined.base, out)


def _read_pieces(paths: list[Path]) -> list[schema.ModelT]:
    """Each piece's model, its buffers as numpy and every tensor named ``piece<k>/<name>`` (unique across
    pieces, and each op traceable to its piece)."""
    from ai_edge_litert.tools import flatbuffer_utils

    from videoseal_litert.convert.tflite import as_numpy_buffers

    models = [flatbuffer_utils.read_model(str(p)) for p in paths]
    if any(len(m.subgraphs) != 1 or len(m.signatureDefs) != 1 for m in models):
        raise MergeError("each piece must have exactly one subgraph and one signature")
    for k, m in enumerate(models):
        as_numpy_buffers(m)
        for t in m.subgraphs[0].tensors:
            t.name = f"piece{k}/" + (t.name.decode() if isinstance(t.name, bytes) else t.name)
    return models


class _Joined:
    """The first piece, growing as each later piece is appended: ``pool`` maps every tensor name a piece
    has written (or a model input read so far) to its index in the joined subgraph."""

    def __init__(self, base: schema.ModelT, inputs: tuple[str, ...]) -> None:
        self.base, self.sg = base, base.subgraphs[0]
        first_in, first_out = _signature(base)
        unknown = set(first_in) - set(inputs)
        if unknown:
            raise MergeError(f"piece 0 reads {sorted(unknown)}, which are not model inputs")
        self.pool = {**first_in, **first_out}
        self.model_inputs = dict(first_in)
        self.opcode_key = {_opcode(oc): i for i, oc in enumerate(base.operatorCodes)}
        self.inputs = inputs

    def append(self, k: int, m: schema.ModelT) -> None:
        """Piece ``k``'s buffers, tensors, operator codes and ops after the ones already there, its inputs
        wired to the outputs of the same names."""
        psg = m.subgraphs[0]
        p_in, p_out = _signature(m)
        t_map = self._wire_seams(k, psg, p_in)
        self._append_tensors(m, psg, t_map)
        self._renumber_block_scales(psg, p_in, t_map)
        for name, idx in p_in.items():
            if name not in self.pool:  # a model input first read here (the embedder's image, by its last piece)
                self.pool[name] = self.model_inputs[name] = t_map[idx]
        self._append_ops(m, psg, t_map)
        for name, idx in p_out.items():
            self.pool[name] = t_map[idx]

    def _wire_seams(self, k: int, psg: schema.SubGraphT, p_in: dict[str, int]) -> dict[int, int]:
        t_map: dict[int, int] = {}
        for name, idx in p_in.items():
            if name in self.pool:
                _check_seam(self.sg.tensors[self.pool[name]], psg.tensors[idx], name, k)
                t_map[idx] = self.pool[name]
            elif name not in self.inputs:
                raise MergeError(f"piece {k} reads '{name}', which no earlier piece writes and the model does not take")
        return t_map

    def _append_tensors(self, m: schema.ModelT, psg: schema.SubGraphT, t_map: dict[int, int]) -> None:
        buf_map = {0: 0}
        for b_idx, buf in enumerate(m.buffers):
            if b_idx:
                buf_map[b_idx] = len(self.base.buffers)
                self.base.buffers.append(buf)
        for t_idx, t in enumerate(psg.tensors):
            if t_idx in t_map:
                continue
            t.buffer = buf_map[t.buffer]
            t_map[t_idx] = len(self.sg.tensors)
            self.sg.tensors.append(t)

    @staticmethod
    def _renumber_block_scales(psg: schema.SubGraphT, p_in: dict[str, int], t_map: dict[int, int]) -> None:
        """Blockwise 4-bit weights name their scales by tensor index (XNNPACK crashed on a join that left them)."""
        for t_idx, t in enumerate(psg.tensors):
            details = None if t.quantization is None else t.quantization.details
            if t_idx not in p_in.values() and hasattr(details, "scales"):
                details.scales = t_map[details.scales] if details.scales >= 0 else details.scales
                details.zeroPoints = t_map[details.zeroPoints] if details.zeroPoints >= 0 else details.zeroPoints

    def _append_ops(self, m: schema.ModelT, psg: schema.SubGraphT, t_map: dict[int, int]) -> None:
        oc_map = {}
        for i, oc in enumerate(m.operatorCodes):
            key = _opcode(oc)
            if key not in self.opcode_key:
                self.opcode_key[key] = len(self.base.operatorCodes)
                self.base.operatorCodes.append(oc)
            oc_map[i] = self.opcode_key[key]
        for op in psg.operators:
            op.opcodeIndex = oc_map[op.opcodeIndex]
            op.inputs = [t_map[i] if i >= 0 else i for i in op.inputs]
            op.outputs = [t_map[i] for i in op.outputs]
            if op.intermediates is not None and len(op.intermediates):
                op.intermediates = [t_map[i] for i in op.intermediates]
            self.sg.operators.append(op)

    def finish(self, inputs: tuple[str, ...], outputs: tuple[str, ...]) -> None:
        """The joined subgraph's inputs and outputs, and its one signature, by the model's names."""
        from ai_edge_litert import schema_py_generated as schema_rt

        missing = [n for n in (*inputs, *outputs) if n not in self.pool]
        if missing:
            raise MergeError(f"no piece reads or writes {missing}")
        self.sg.inputs = [self.pool[n] for n in inputs]
        self.sg.outputs = [self.pool[n] for n in outputs]
        sig = self.base.signatureDefs[0]
        sig.inputs, sig.outputs = [], []
        for names, into in ((inputs, sig.inputs), (outputs, sig.outputs)):
            for n in names:
                t = schema_rt.TensorMapT()
                t.name, t.tensorIndex = n, self.pool[n]
                into.append(t)


def _opcode(oc: schema.OperatorCodeT) -> tuple:
    return (oc.builtinCode, oc.deprecatedBuiltinCode, oc.customCode, oc.version)


def _check_seam(a: schema.TensorT, b: schema.TensorT, name: str, k: int) -> None:
    if list(a.shape) != list(b.shape):
        raise MergeError(f"seam '{name}' before piece {k}: shape {list(a.shape)} != {list(b.shape)}")
    if a.type != b.type:
        raise MergeError(f"seam '{name}' before piece {k}: output type {a.type} != input type {b.type}")
    qa, qb = a.quantization, b.quantization
    sa = None if qa is None or qa.scale is None else np.asarray(qa.scale)
    sb = None if qb is None or qb.scale is None else np.asarray(qb.scale)
    if (sa is None) != (sb is None) or (
        sa is not None and not (np.allclose(sa, sb, rtol=1e-6) and np.array_equal(qa.zeroPoint, qb.zeroPoint))
    ):
        raise MergeError(f"seam '{name}' before piece {k}: quantization differs ({sa} vs {sb})")


def _round16(n: int) -> int:
    return (n + 15) & ~15


def write_model(model: schema.ModelT, out: Path, external_above: int = EXTERNAL_ABOVE_BYTES) -> None:
    """Write a ``ModelT`` to ``out`` atomically; with its weights after the flatbuffer when they are
    over ``external_above`` bytes.

    That layout (``Buffer.offset``/``size`` from the start of the file, 16-byte aligned) is the one
    the converter and ai-edge-quantizer write for large models and LiteRT reads; the quantizer's
    writer for it is private (``ModelModifier._serialize_model``), so this is the same steps with
    the public ``flatbuffer_utils``, streaming the weights to the file instead of building a second
    copy in memory.
    """
    from ai_edge_litert.tools import flatbuffer_utils

    datas = {i: b.data for i, b in enumerate(model.buffers) if b.data is not None and len(b.data) >= 1024}
    total = sum(len(d) for d in datas.values())
    with atomic_path(out) as tmp:
        if total <= external_above:
            flatbuffer_utils.write_model(model, str(tmp))
            return
        for i in datas:  # placeholders: non-default values, so the fields are packed and keep their size
            model.buffers[i].data, model.buffers[i].offset, model.buffers[i].size = None, 1, 1
        head = flatbuffer_utils.convert_object_to_bytearray(model)
        offset = _round16(len(head))
        for i, d in datas.items():
            model.buffers[i].offset, model.buffers[i].size = offset, len(d)
            offset = _round16(offset + len(d))
        head2 = flatbuffer_utils.convert_object_to_bytearray(model)
        if len(head2) != len(head):
            raise MergeError(f"flatbuffer changed size when its buffer offsets were set ({len(head)} -> {len(head2)})")
        with open(tmp, "wb") as f:
            f.write(head2)
            for i, d in datas.items():
                f.seek(model.buffers[i].offset)
                f.write(memoryview(np.ascontiguousarray(d)).cast("B"))
            f.truncate(offset)
        for i, d in datas.items():  # the model object as it was
            model.buffers[i].data, model.buffers[i].offset, model.buffers[i].size = d, 0, 0


DEFAULT_PART_ACT_BYTES = 2_000_000_000


def hwm_mb() -> float:
    """This process's peak RSS so far (VmHWM), MB; logged after each phase to show where the peak is."""
    try:
        with open("/proc/self/status") as f:
            line = next(ln for ln in f if ln.startswith("VmHWM:"))
        return int(line.split()[1]) / 1024.0
    except (OSError, StopIteration):
        return float("nan")


def float_pieces(opts: RunOptions, part: Part, work: Path) -> tuple[list[Path], dict]:
    """The part cut into pieces (of ``opts.max_part_bytes`` or the part's own budget) and each
    converted to a float file in ``work``; and a record of the pieces."""
    max_bytes = opts.max_part_bytes or part.piece_bytes
    loaded = part.load()
    chain = part.units(loaded)
    sample = part.sample_inputs()
    pieces = plan(chain, max_bytes, DEFAULT_PART_ACT_BYTES, sample)
    del loaded
    record = {
        "num_parts": len(pieces),
        "max_part_bytes": max_bytes,
        "max_part_activation_bytes_estimated": DEFAULT_PART_ACT_BYTES,
        "parts": [
            {"units": len(p.steps), "params": sum(q.numel() for q in p.parameters()), "inputs": list(p.inputs), "outputs": list(p.outputs)}
            for p in pieces
        ],
        "note": "converted, calibrated and quantized in pieces joined by named tensors (convert/split.py)",
    }
    log.info("cutting the %s into %d pieces of <= %.2f GB float weights", part.name, len(pieces), max_bytes / 1e9)
    paths = convert_pieces(pieces, sample, work, label=f"converting the {part.name} in pieces")
    del pieces, chain
    collect_if_large(part.float_bytes())
    return paths, record


def scratch_dir(parent: Path) -> Path:
    """A temporary folder beside the artifacts (part files can be GBs; /tmp may be small)."""
    return Path(tempfile.mkdtemp(prefix=".parts-", suffix=".tmp", dir=parent))  # .tmp: removed by the next locked stage after a kill


def remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def convert_in_pieces(opts: RunOptions, part: Part, out: Path) -> dict:
    """The part's float32 file at ``out``, converted piece by piece and joined (weights after the
    flatbuffer when over 2 GB): each conversion holds one piece, not the whole model."""
    work = scratch_dir(out.parent)
    try:
        paths, record = float_pieces(opts, part, work)
        join(paths, out, part.contract.input_names, part.contract.output_names)
        record["peak_rss_mb"] = round(hwm_mb())
        log.info("%s joined from %d pieces; peak RSS %.0f MB", out.name, len(paths), record["peak_rss_mb"])
        return record
    finally:
        remove(work)
