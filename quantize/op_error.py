"""Per-op error of a quantized file against its float file, on calibration-disjoint inputs, either part.

Every intermediate tensor of the quantized model is compared with the same tensor of the float
model (ai-edge-quantizer's validator runs both with all tensors preserved); each op is scored by
the SQNR of its output, worst first. Written as JSON, Markdown and a PNG bar plot.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from videoseal_litert.core.artifacts import atomic_path, collect_if_large, write_json, write_text
from videoseal_litert.core.metrics import power_db
from videoseal_litert.runtime.runners import open_runner

log = logging.getLogger(__name__)


def op_errors(float_path: Path, quant_path: Path, inputs: list[dict[str, np.ndarray]], num_threads: int = 2) -> list[dict[str, Any]]:
    """[{tensor, op, sqnr_db}] for every op output the two models share, worst SQNR first: the SNR of
    ai-edge-quantizer's validator (its ``compare_model`` semantics: every tensor of the main subgraph
    the two files share, the mean of the per-input SNRs).

    Written here instead of calling ``compare_model`` for memory: it holds both interpreters, every
    intermediate tensor preserved, and builds the next input's pair while the last is alive, which
    took one 0.94 GB ChunkySeal piece to 9.9 GB peak RSS (7.7 GB with one call per input). Here the
    float file runs alone, its op outputs are kept as float16 (float32 where a value would overflow),
    and it is freed before the quantized file runs: 5.5 GB for that piece. The float16 copy moves an SNR
    by under 0.05 dB below 40 dB; a near-exact op (a float op of an int8 file, 70-80 dB) reads a few dB
    lower, far above the ops the fallback keeps float."""
    from ai_edge_quantizer.utils import tfl_interpreter_utils as tu
    from ai_edge_quantizer.utils import validation_utils

    snr_of = validation_utils.get_validation_func(validation_utils.ValidationErrorMetric.SNR)
    reference, target = float_path.read_bytes(), quant_path.read_bytes()
    # The validator's result sets inputs and weights apart from the op outputs ranked here.
    main = tu.get_signature_main_subgraph_index(tu.create_tfl_interpreter(reference, allocate_tensors=False), "serving_default")
    skip = {*tu.get_input_tensor_names(reference, "serving_default"), *tu.get_constant_tensor_names(reference, main)}
    snrs: dict[str, list[float]] = {}
    for sample in inputs:
        kept = {}
        for name, value in _op_outputs(reference, sample, num_threads, skip):
            small = value.dtype == np.float32 and np.all(np.abs(value) < 6e4)
            kept[name] = value.astype(np.float16) if small else value
        for name, value in _op_outputs(target, sample, num_threads, skip):
            if name in kept:
                snrs.setdefault(name, []).append(float(snr_of(value, kept[name].astype(np.float32))))
        del kept
    # Names only: no XNNPACK (it would pack the piece's weights again and label the outputs DELEGATE).
    op_of = open_runner(float_path, use_xnnpack=False).op_of_tensor()
    rows = []
    for name, values in snrs.items():
        snr = float(np.mean(values)) if len(values) == len(inputs) else math.nan
        rows.append(
            {
                "tensor": name,
                "op": op_of.get(name, "?"),
                "sqnr_db": None if (db := power_db(snr, 1.0)) is None else round(db, 3),
            }
        )
    return rank(rows)


def _op_outputs(model: bytes, sample: dict[str, np.ndarray], num_threads: int, skip: set[str]) -> Iterator[tuple[str, np.ndarray]]:
    """(name, dequantized value) of every tensor of the model's main subgraph after running ``sample``
    with all tensors preserved (the validator's interpreter and filters); the interpreter is freed after."""

    from ai_edge_quantizer.utils import tfl_interpreter_utils as tu

    it = tu.create_tfl_interpreter(model, use_xnnpack=True, num_threads=num_threads, preserve_all_tensors=True)
    try:
        tu.invoke_interpreter_signature(it, sample, "serving_default")
        sub = tu.get_signature_main_subgraph_index(it, "serving_default")
        for name, detail in tu.get_tensor_name_to_details_map(it, sub).items():
            if name not in skip and detail["dtype"] != np.object_ and np.all(detail["shape"]):
                yield name, tu.get_tensor_data(it, detail, sub)
    finally:
        del it
        collect_if_large(len(model))  # the interpreter held the model and every tensor it computed


def rank(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Worst SQNR first; tensors without one (equal in both files) last."""
    return sorted(rows, key=lambda r: (r["sqnr_db"] is None, r["sqnr_db"] if r["sqnr_db"] is not None else 0.0))


def write_op_report(rows: list[dict[str, Any]], out_dir: Path, stem: str, images: list[str], title: str, top: int = 30) -> None:
    """``<stem>.json`` / ``.md`` / ``.png`` (``stem``: ``op-error-<prefix><variant>``)."""
    write_json(out_dir / f"{stem}.json", {"title": title, "images": images, "ops": rows})
    lines = [
        f"# Per-op error: {title} vs fp32",
        "",
        f"SQNR of each op's output tensor against the float model, on {len(images)} held-out inputs "
        f"(never calibration images); worst first. {len(rows)} tensors; plot: `{stem}.png`.",
        "",
        "| rank | op | tensor | SQNR (dB) |",
        "|---|---|---|---|",
    ]
    for i, r in enumerate(rows, 1):
        s = "-" if r["sqnr_db"] is None else f"{r['sqnr_db']:.2f}"
        lines.append(f"| {i} | {r['op']} | `{r['tensor']}` | {s} |")
    lines += [
        "",
        f"On the graph: `model-explorer <the quantized file> --node_data_paths={stem}.model-explorer.json` colours each op by this SQNR.",
    ]
    write_text(out_dir / f"{stem}.md", "\n".join(lines) + "\n")
    _plot(rows[:top], out_dir / f"{stem}.png", f"{title}: worst {min(top, len(rows))} op outputs (SQNR vs fp32)")
    write_node_data(rows, out_dir / f"{stem}.model-explorer.json", f"{title}: SQNR vs fp32 (dB)")


# SQNR bands on the graph: red where an op's output is mostly quantization noise, green where it is clean.
NODE_DATA_BANDS = ((10.0, "#d32f2f"), (20.0, "#f57c00"), (30.0, "#fbc02d"), (1e9, "#7cb342"))


def write_node_data(rows: list[dict[str, Any]], path: Path, name: str) -> None:
    """The per-op SQNR as Model Explorer node data (``model-explorer file.tflite --node_data_paths=<path>``): each op
    keyed by its output tensor's name in the file's ``main`` graph, coloured by NODE_DATA_BANDS. Built with
    ai-edge-model-explorer's own node-data classes, so the format is the one it reads."""
    from model_explorer import node_data_builder as ndb

    graph = ndb.GraphNodeData(
        name=name,
        results={r["tensor"]: ndb.NodeDataResult(value=round(r["sqnr_db"], 3)) for r in rows if r["sqnr_db"] is not None},
        thresholds=[ndb.ThresholdItem(value=v, bgColor=c) for v, c in NODE_DATA_BANDS],
    )
    text = ndb.ModelNodeData(graphsData={"main": graph}).to_json_string(indent=1)
    write_text(path, text)


def _plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r["sqnr_db"] is not None]
    fig, ax = plt.subplots(figsize=(9, 0.28 * max(len(rows), 4) + 1.2))
    labels = [f"{r['op']} {r['tensor'][-38:]}" for r in rows]
    ax.barh(range(len(rows)), [r["sqnr_db"] for r in rows], color="tab:red")
    ax.set_yticks(range(len(rows)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("SQNR (dB), higher is better")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def watermark_signal_errors(
    float_path: Path, quant_path: Path, pairs: list[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]]
) -> list[dict[str, Any]]:
    """Per op output: how well the quantized file carries the *watermark*, not the image.

    For each (cover, watermarked) input pair the watermark's trace in a tensor is the difference of
    the tensor on the two inputs; the float file's difference is the signal, the quantized file's
    difference minus it the noise. Rows in graph order: ``watermark_sqnr_db`` (signal over noise,
    summed over pairs) and ``watermark_to_content_db`` (the watermark's energy against the cover's in
    the float tensor: where it is faint, an 8-bit grid sized for the content can bury it). Runs
    LiteRT's builtin kernels with every tensor kept (XNNPACK keeps only its partitions' outputs)."""
    from videoseal_litert.runtime.litert_runner import LiteRTRunner

    runners = [LiteRTRunner(p, 1, use_xnnpack=False, keep_all_tensors=True) for p in (float_path, quant_path)]
    op_of = runners[0].op_of_tensor()
    acc: dict[str, np.ndarray] = {}
    for cover, marked in pairs:
        (fc, fm), (qc, qm) = [[(r(x), r.op_outputs())[1] for x in (cover, marked)] for r in runners]
        for name in fc.keys() & qc.keys():
            df = fm[name].astype(np.float64) - fc[name]
            dq = qm[name].astype(np.float64) - qc[name]
            a = acc.setdefault(name, np.zeros(3))
            a += (np.sum(df**2), np.sum((dq - df) ** 2), np.sum(fc[name].astype(np.float64) ** 2))
    order = {n: i for i, n in enumerate(fc)}
    rows = []
    for name in sorted(acc, key=order.get):
        sig, noise, content = acc[name]
        rows.append(
            {
                "tensor": name,
                "op": op_of.get(name, "?"),
                "watermark_sqnr_db": None if (w := power_db(sig, noise)) is None else round(w, 2),
                "watermark_to_content_db": None if (c := power_db(sig, content)) is None else round(c, 2),
            }
        )
    return rows


def write_watermark_report(
    rows: list[dict[str, Any]], flips: list[dict[str, Any]], out_dir: Path, stem: str, images: list[str], title: str
) -> None:
    """``<stem>.json`` / ``.md`` / ``.png`` (``stem``: ``watermark-error-<prefix><variant>``)."""
    write_json(out_dir / f"{stem}.json", {"title": title, "pairs": images, "ops": rows, "flipped_bits": flips})
    worst = sorted((r for r in rows if r["watermark_sqnr_db"] is not None), key=lambda r: r["watermark_sqnr_db"])[:15]
    lines = [
        f"# Where the watermark is lost: {title} vs fp32",
        "",
        f"On {len(images)} (cover, watermarked) pairs of held-out photos: each op output's watermark trace (the tensor on the "
        "watermarked image minus on its cover) in the quantized file against the float file's. `wm SQNR`: that trace's "
        "signal-to-quantization-noise ratio; `wm/content`: the trace's energy against the cover's in the float tensor. "
        f"Plot in graph order: `{stem}.png`.",
        "",
        "Worst 15 op outputs:",
        "",
        "| op | tensor | wm SQNR (dB) | wm/content (dB) |",
        "|---|---|---|---|",
    ]
    lines += [f"| {r['op']} | `{r['tensor']}` | {r['watermark_sqnr_db']:.1f} | {r['watermark_to_content_db']} |" for r in worst]
    lines += ["", f"Bits that differ from PyTorch on the verification images ({len(flips)}):", ""]
    if flips:
        lines += ["| image | bit | PyTorch logit | quantized logit |", "|---|---|---|---|"]
        lines += [f"| {f['image']} | {f['bit']} | {f['reference']:+.4f} | {f['quantized']:+.4f} |" for f in flips[:50]]
    else:
        lines.append("none.")
    write_text(out_dir / f"{stem}.md", "\n".join(lines) + "\n")
    _plot_graph_order(rows, out_dir / f"{stem}.png", title)


def _plot_graph_order(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [i for i, r in enumerate(rows) if r["watermark_sqnr_db"] is not None]
    fig, ax = plt.subplots(figsize=(9, 3.5))
    ax.plot(xs, [rows[i]["watermark_sqnr_db"] for i in xs], ".-", lw=0.8, label="watermark SQNR, quantized vs float (dB)")
    ax.plot(xs, [rows[i]["watermark_to_content_db"] for i in xs], ".", ms=3, color="tab:gray", label="watermark / content in float (dB)")
    ax.set_xlabel("op output, graph order")
    ax.set_ylabel("dB")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
