"""``videoseal-litert video embed|detect|attack`` (``make video-embed`` / ``video-detect`` / ``video-attack``).

embed: ``--input`` clip -> ``--output`` (H.264 at ``--crf``) watermarked by the official video route
(``key_frames.py``) through one embedder (``pytorch``, a variant's file, or a ``.tflite`` path), audio and
metadata carried over; beside the output, ``<output>.json`` records the message, the files, the card's
step and chunk sizes and the per-frame PSNR.

detect: every frame of ``--input`` through each extractor of ``--variants`` (default ``pytorch,int8``),
aggregated over the clip (``--aggregation``, official ``avg`` by default); with the message (``--message``,
or the ``.json`` that ``embed`` wrote beside the clip) the bit accuracy and the binomial p-value; each
file's frames judged against PyTorch's by the project's rule (``models/gate.py``) and its aggregated bits by
the rule's margin. Reports in ``--report-dir`` (default ``OUT/video/<clip>``): ``detect.{json,md}``, the
per-frame series ``frames.csv`` and ``frames.parquet``, and ``frames.png``.
"""

from __future__ import annotations

import contextlib
import csv
import itertools
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from videoseal_litert.convert.options import RunOptions
from videoseal_litert.convert.parts import EmbedderPart, ExtractorPart, make_part
from videoseal_litert.convert.verify import precision_of, require_verified
from videoseal_litert.core.artifacts import atomic_path, machine_description, read_json, sha256_file, write_json, write_text
from videoseal_litert.core.console import progress, say
from videoseal_litert.core.errors import OutputExistsError, TruncatedVideoError, UsageError, VerificationError
from videoseal_litert.core.message import MessageError, message_hex
from videoseal_litert.core.message import parse_message as parse_message_text
from videoseal_litert.core.metrics import DETECTION_PVALUE
from videoseal_litert.models.gate import Rule
from videoseal_litert.models.variants import names as variant_names
from videoseal_litert.models.variants import rule_for, variant
from videoseal_litert.quantize.quantize_stage import ensure_files
from videoseal_litert.runtime.runners import Runner, open_file
from videoseal_litert.video.io import ClipInfo, probe, video_bytes
from videoseal_litert.video.key_frames import (
    AGGREGATED,
    AGGREGATIONS,
    StreamingAggregate,
    bits_text,
    clip_result,
    detect_video,
    embed_video,
    verdict_line,
    video_parity,
)

log = logging.getLogger(__name__)
PYTORCH = "pytorch"
DEFAULT_DETECT_VARIANTS = "pytorch,int8"
SIDECAR_SUFFIX = ".json"


def sidecar(video: Path) -> Path:
    return video.with_name(video.name + SIDECAR_SUFFIX)


def card_video_args(opts: RunOptions) -> dict[str, Any]:
    """The card's step and chunk as the official loader reads them (``models/cards.parse_video``: ``videoseal_*`` or
    the older ``videowam_*`` names) and where they came from."""
    return opts.spec.card.video.as_dict()


def parse_message(text: str, nbits: int) -> np.ndarray:
    """``--message``: the model's hex or its string of 0/1 (``core.message``, the one format): (nbits,) int64."""
    try:
        return parse_message_text(text, nbits)
    except MessageError as e:
        raise UsageError(f"--message {e}") from e


def file_runner(opts: RunOptions, part_name: str, name: str) -> tuple[str, Runner, dict[str, Any]]:
    """(label, runner, file record) for ``pytorch``, a variant of the model's part, or a ``.tflite`` path;
    the model's files are made when missing, and every file must be verified unless allowed."""
    part = make_part(opts, part_name)
    if name == PYTORCH:
        return PYTORCH, part.torch_runner(part.load()), {"file": None, "status": "reference"}
    if name.endswith(".tflite"):
        path = Path(name)
        if not path.is_file():
            raise UsageError(f"{part_name} file not found: {name}")
    else:
        variant(name, part_name)  # a named UsageError for an unknown variant
        path = opts.model_dir.path / part.file(name)
        ensure_files(opts, {str(path): (part_name, name)}, "video")
    info = require_verified(path, opts.allow_unverified, "video")
    f = Path(info["file"])
    return f.stem, open_file(f, opts.threads), {"file": str(f), "sha256": sha256_file(f), "status": info["status"]}


def default_output(out: Path, src: Path) -> Path:
    """Where ``video embed`` writes by default: ``OUT/video/<the clip's name, extension kept>.wm.mp4``, so ``pan.webm``
    and ``pan.mkv`` never share one."""
    return out / "video" / f"{src.name}.wm.mp4"


def declared_frames(info: ClipInfo) -> tuple[int | None, str]:
    """The frames a container declares, and how: its count (MP4), else its duration times its rate (Matroska and
    WebM state no count; that estimate is good to a frame)."""
    if info.frames:
        return info.frames, "its frame count"
    if info.duration_s and info.fps:
        return round(info.duration_s * info.fps), f"its duration {info.duration_s:.3f} s x {info.fps:g} fps"
    return None, "no count and no duration"


def choose_message(message: str | None, seed: int | None, nbits: int) -> tuple[np.ndarray, str]:
    """(bits, where they came from): ``--message``, else drawn from ``--seed``, else drawn afresh for this clip
    (the operating system's entropy: two clips never share an ID by default)."""
    if message is not None:
        return parse_message(message, nbits), "--message"
    if seed is not None:
        return np.random.default_rng(seed).integers(0, 2, nbits), f"drawn from --seed {seed}"
    return np.random.default_rng().integers(0, 2, nbits), "random for this clip (pass --message or --seed to choose it)"


def _output(out: Path, src: Path, dst: Path | None, force: bool) -> Path:
    """Where the watermarked clip goes (OUT/video/<source name>.wm.mp4 by default); never the input, never an existing
    file unless ``force``."""
    dst = dst or default_output(out, src)
    if dst.resolve() == src.resolve():
        raise UsageError(f"--output {dst} is the input: write the watermarked clip elsewhere")
    if dst.exists() and not force:
        raise OutputExistsError(f"{dst} already exists: pass --force (make video-embed FORCE=1) to replace it, or --output another name")
    return dst


def _damage(info: Any, src: Path, e: Any, max_frames: int | None) -> tuple[int | None, str | None]:
    """The frames the container declares, and what to say when fewer decoded (None: none missing)."""
    declared, how = declared_frames(info)
    expected = declared if max_frames is None or declared is None else min(declared, max_frames)
    if not e.written.damage and (expected is None or e.frames >= expected - 1):  # a duration rounds to within a frame
        return declared, None
    said = "an unknown number of" if expected is None else str(expected)
    return declared, f"{src.name} declares {said} frames ({how}), only {e.frames} could be decoded: the clip is damaged or truncated" + (
        f" ({e.written.damage})" if e.written.damage else ""
    )


def run_video_embed(
    opts: RunOptions,
    src: Path,
    dst: Path | None = None,
    embedder: str = "int8",
    message: str | None = None,
    seed: int | None = None,
    crf: int = 23,
    max_frames: int | None = None,
    strict: bool = False,
) -> dict[str, Any]:
    t0 = time.time()
    out = opts.out
    info = probe(src)  # named errors for bad input before any model work
    dst = _output(out, src, dst, opts.force)
    name, run, file = file_runner(opts, "embedder", embedder)
    part = EmbedderPart(opts)
    nbits, size = part.nbits, part.size
    bits, msg_source = choose_message(message, seed, nbits)
    route = part.family.route(opts.spec.card.embedder)
    va = card_video_args(opts)
    graphs, graph_files = _route_graphs(opts, info)
    with _ticker(_total(info.frames, max_frames), f"embedding {src.name}") as tick:
        # Written beside ``dst`` and moved there once the frames are counted: a refused clip (--strict) leaves the old
        # output, if any, as it was.
        unchecked = dst.with_name(f".{dst.stem}.unchecked{dst.suffix}")
        e = embed_video(run, route, size, src, unchecked, bits, step=va["step"], crf=crf, max_frames=max_frames, tick=tick, graphs=graphs)
    declared, damaged = _damage(info, src, e, max_frames)
    if damaged and strict:
        unchecked.unlink(missing_ok=True)
        raise TruncatedVideoError(f"{damaged}; --strict: nothing written")
    if damaged:
        log.warning("%s; embedded the %d that decode", damaged, e.frames)
    unchecked.replace(dst)
    r = {
        "model": opts.spec.name,
        "random_init": opts.random_weights,
        "input": {**info.as_dict(), "sha256": sha256_file(src), "frames_declared": declared, "frames_decoded": e.frames},
        "output": {"file": str(dst), "sha256": sha256_file(dst), "codec": "h264 (libx264)", "crf": crf, "pix_fmt": e.written.pix_fmt},
        "embedder": {"variant": name, **file},
        "route": graph_files or "numpy (runtime/route.py)",
        "message": bits_text(bits),
        "message_hex": message_hex(bits),
        "message_source": msg_source,
        "nbits": nbits,
        "video": {**va, "key_frames": e.key_frames, "frames": e.frames},
        "damaged": damaged,
        "audio": e.written.audio,
        "metadata_carried": e.written.metadata_keys,
        "metadata_not_carried": e.written.metadata_dropped,
        "psnr_db": {
            "mean": float(np.mean(e.psnr_db)),
            "min": float(np.min(e.psnr_db)),
            "what": "watermarked frame vs input frame, 8-bit RGB, before H.264",
        },
        "seconds": round(time.time() - t0, 1),
        "machine": machine_description(),
    }
    write_json(sidecar(dst), r)
    say(
        f"video embed {opts.spec.name}: {e.frames} frames of {src.name} ({info.width}x{info.height}, {info.fps:g} fps) through "
        f"{name}, key frame every {va['step']} ({va['source']}); PSNR {r['psnr_db']['mean']:.1f} dB (min {r['psnr_db']['min']:.1f}); "
        f"H.264 CRF {crf} {e.written.pix_fmt}; audio: {', '.join(e.written.audio) or 'none'}"
        + (f"\nWARNING: {damaged}; embedded the {e.frames} that decode" if damaged else "")
        + f"\nmessage {r['message_hex']} ({nbits} bits, {msg_source}); wrote {dst} and {sidecar(dst).name} in {r['seconds']} s"
        + ("\nRANDOM WEIGHTS: this clip's watermark comes from an untrained model" if opts.random_weights else "")
    )
    return r


def _route_graphs(opts: RunOptions, info: ClipInfo) -> tuple[dict[tuple[int, int], Runner], list[str]]:
    """The route graphs (``make route-graph``) for this clip's frame size, either way up, that verified and were measured
    faster for video than numpy on this machine; none otherwise (the numpy route)."""
    from videoseal_litert.video.route_graph import video_graph

    graphs, files = {}, []
    for w, h in {(info.width, info.height), (info.height, info.width)}:
        got = video_graph(opts.model_dir.path, w, h, opts.threads)
        if got is not None:
            graphs[(h, w)] = got[0]
            files.append(got[1])
    return graphs, files


def _known_message(message: str | None, side: Path, nbits: int) -> tuple[np.ndarray | None, str | None]:
    """The message to score bits against: --message, else the clip's sidecar, else none (and where it came from)."""
    if message is not None:
        return parse_message(message, nbits), "--message"
    if side.is_file():
        return parse_message(read_json(side)["message"], nbits), str(side)
    return None, None


def _extractors(opts: RunOptions) -> tuple[dict, dict]:
    """Each extractor named in the run's variants (once; default ``pytorch,int8``): its runner and its file's record, by label."""
    names = [v.strip() for v in (opts.variants or DEFAULT_DETECT_VARIANTS).split(",") if v.strip()]
    if not names:
        raise UsageError("--variants: name at least one extractor (pytorch, a variant, or a .tflite)")
    runners, files = {}, {}
    for n in dict.fromkeys(names):
        label, run, f = file_runner(opts, "extractor", n)
        runners[label], files[label] = run, f
    return runners, files


def _parity(opts: RunOptions, logits: dict, files: dict, aggregation: str, known: bool) -> dict[str, Any]:
    """Each file's per-frame and aggregated decisions against PyTorch's by the rule (when PyTorch ran)."""
    parity: dict[str, Any] = {}
    if PYTORCH not in logits:
        return parity
    ref = logits[PYTORCH]
    for k, lg in logits.items():
        if k == PYTORCH or files[k]["file"] is None:
            continue
        v = video_parity(ref, lg, aggregation, _rule(opts, k, Path(files[k]["file"])), known)
        agg = v.group(AGGREGATED)
        parity[k] = {**v.as_dict(), "aggregate": {"agreement": 1 - agg.flips / agg.decisions, "flips": agg.flips} if agg else None}
    return parity


def run_video_detect(
    opts: RunOptions,
    src: Path,
    message: str | None = None,
    aggregation: str = "avg",
    max_frames: int | None = None,
    report_dir: Path | None = None,
) -> dict[str, Any]:
    t0 = time.time()
    if aggregation not in AGGREGATIONS:
        raise UsageError(f"--aggregation {aggregation!r}: {', '.join(AGGREGATIONS)}")
    out = opts.out
    info = probe(src)
    nbits, size = ExtractorPart(opts).nbits, int(opts.spec.card.config.img_size)
    msg, msg_source = _known_message(message, sidecar(src), nbits)
    runners, files = _extractors(opts)
    chunk = opts.spec.card.video.chunk  # the official detect's batch: the per-chunk verdicts' length
    aggs = {k: StreamingAggregate(nbits, chunk, msg, aggregation) for k in runners}
    t1 = time.time()
    with _ticker(_total(info.frames, max_frames), f"detecting {src.name}") as tick:
        logits = detect_video(runners, src, size, max_frames, tick=tick, on_row=lambda k, row: aggs[k].add(row))
    fps = len(next(iter(logits.values()))) / max(time.time() - t1, 1e-9)
    results = {}
    for k, agg in aggs.items():
        every = {how: agg.result(how) for how in AGGREGATIONS}
        results[k] = {
            **agg.result(),
            "all_aggregations": {how: {x: c[x] for x in ("bits", "bit_accuracy", "pvalue") if x in c} for how, c in every.items()},
            "chunk_frames": chunk,
            "chunks": agg.chunks,
        }
    parity = _parity(opts, logits, files, aggregation, msg is not None)
    rd = report_dir or out / "video" / src.stem
    r = {
        "model": opts.spec.name,
        "random_init": opts.random_weights,
        "input": {**info.as_dict(), "sha256": sha256_file(src)},
        "frames": int(len(next(iter(logits.values())))),
        "frames_per_second": round(fps, 2),
        "message": None if msg is None else bits_text(msg),
        "message_source": msg_source,
        "aggregation": aggregation,
        "files": files,
        "results": results,
        "parity_with_pytorch": parity,
        "seconds": round(time.time() - t0, 1),
        "machine": machine_description(),
    }
    _write_series(rd, logits, msg)
    write_json(rd / "detect.json", r)
    write_text(rd / "detect.md", render(r))
    say(render_summary(r, rd))
    failed = [k for k, p in parity.items() if not p["passed"]]
    if failed:
        raise VerificationError(f"video detect: {', '.join(failed)} disagree with PyTorch beyond the rule; {rd / 'detect.md'}")
    return r


def _total(frames: int | None, max_frames: int | None) -> int | None:
    """The progress bar's length: the container's frame count, capped by ``--max-frames``."""
    if frames is None:
        return max_frames
    return frames if max_frames is None else min(frames, max_frames)


@contextlib.contextmanager
def _ticker(total: int | None, desc: str) -> Iterator[Callable[[], None]]:
    """``core.console.progress`` driven by a callback (the frames arrive inside the streaming loops): one tick a frame."""
    bar = progress(itertools.count(), total=total, desc=desc, unit="frames")
    try:
        yield lambda: next(bar, None)
    finally:
        bar.close()


def _write_series(rd: Path, logits: dict[str, np.ndarray], msg: np.ndarray | None) -> None:
    """frames.csv / frames.parquet (one row per frame and decoder) and frames.png."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows: dict[str, list[Any]] = {k: [] for k in ("frame", "decoder", "mask_logit", "bit_accuracy", "bits")}
    for k, lg in logits.items():
        for i, row in enumerate(lg):
            rows["frame"].append(i)
            rows["decoder"].append(k)
            rows["mask_logit"].append(float(row[0]))
            rows["bit_accuracy"].append(None if msg is None else float(((row[1:] > 0) == msg.astype(bool)).mean()))
            rows["bits"].append(bits_text(row[1:] > 0))
    rd.mkdir(parents=True, exist_ok=True)
    with atomic_path(rd / "frames.csv") as tmp, open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(rows)
        w.writerows(zip(*rows.values(), strict=True))
    with atomic_path(rd / "frames.parquet") as tmp:
        pq.write_table(pa.table(rows), tmp)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2 if msg is not None else 1, 1, figsize=(8, 5 if msg is not None else 3), sharex=True, squeeze=False)
    for k, lg in logits.items():
        axes[0, 0].plot(lg[:, 0], label=k)
        if msg is not None:
            axes[1, 0].plot(((lg[:, 1:] > 0) == msg.astype(bool)).mean(axis=1), label=k)
    axes[0, 0].set_ylabel("mask logit")
    axes[0, 0].axhline(0, color="grey", lw=0.5)
    axes[0, 0].legend()
    if msg is not None:
        axes[1, 0].set_ylabel("bit accuracy")
        axes[1, 0].set_ylim(0, 1.02)
    axes[-1, 0].set_xlabel("frame")
    fig.tight_layout()
    with atomic_path(rd / "frames.png") as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)


def render_summary(r: dict[str, Any], rd: Path) -> str:
    lines = [
        f"video detect {r['model']}: {r['frames']} frames of {Path(r['input']['path']).name}, aggregation {r['aggregation']}, "
        f"{r['frames_per_second']:.1f} frames/s ({len(r['results'])} decoder(s) a frame, decoding and resizing included)"
    ]
    for k, x in r["results"].items():
        par = r["parity_with_pytorch"].get(k)
        pt = "" if par is None else f"; as PyTorch: {par['aggregate']['agreement']:.2%} {'PASSED' if par['passed'] else 'FAILED'}"
        lines.append(f"  {k}: {verdict_line(x)}; mean mask logit {x['mean_mask_logit']:+.2f}{pt}")
        if "detected" in x and x.get("chunks"):
            hits = sum(c["detected"] for c in x["chunks"])
            lines.append(f"    per chunk of {x['chunk_frames']} frames: detected in {hits} of {len(x['chunks'])}")
    if r["message"] is None:
        lines.append("  no message given (--message, or the .json video embed writes beside the clip): bits only")
    if r["random_init"]:
        lines.append("RANDOM WEIGHTS: an untrained model's outputs")
    lines.append(f"report: {rd / 'detect.md'} (per-frame series: frames.csv, frames.parquet, frames.png)")
    return "\n".join(lines)


def render(r: dict[str, Any]) -> str:
    out = [
        f"# Video detect: {Path(r['input']['path']).name}, model {r['model']}" + (" (RANDOM WEIGHTS)" if r["random_init"] else ""),
        "",
        f"{r['frames']} frames, {r['input']['width']}x{r['input']['height']} at {r['input']['fps']:g} fps ({r['input']['codec']}); "
        f"aggregation `{r['aggregation']}`; message: {r['message_source'] or 'none given'}. Machine: {r['machine']}; {r['seconds']} s "
        f"({r['frames_per_second']:g} frames/s). Detected: the aggregated bits match the message with p < {DETECTION_PVALUE:g}.",
        "",
        "| decoder | verdict | bits (aggregated, hex) | bit accuracy | p-value | mean mask logit | frames mask > 0 | mean / min frame bit accuracy |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for k, x in r["results"].items():
        acc = f"{x['bit_accuracy']:.2%}" if "bit_accuracy" in x else ""
        pv = f"{x['pvalue']:.3g}" if "pvalue" in x else ""
        fr = f"{x['frame_bit_accuracy_mean']:.2%} / {x['frame_bit_accuracy_min']:.2%}" if "frame_bit_accuracy_mean" in x else ""
        out.append(
            f"| {k} | {('DETECTED' if x['detected'] else 'not detected') if 'detected' in x else 'no message to test'} | `{x['bits_hex']}` | {acc} | {pv} | {x['mean_mask_logit']:+.3f} | {x['frames_mask_positive']}/{x['frames']} | {fr} |"
        )
    if r["parity_with_pytorch"]:
        out += [
            "",
            "## As PyTorch, by the rule",
            "",
            "| file | floor (dB) | groups (SNR dB; clear / near flips) | aggregate bits as PyTorch | verdict |",
            "|---|---|---|---|---|",
        ]
        for k, p in r["parity_with_pytorch"].items():
            groups = "; ".join(
                f"{n}{'' if g['gated'] else ' (reported)'} {'exact' if g['snr_db'] is None else format(g['snr_db'], '.1f')}, "
                f"{g['clear_flips']} / {g['near_flips']}"
                for n, g in p["groups"].items()
            )
            agg = p["aggregate"]
            out.append(
                f"| {k} | {p['rule']['floor_db']:g} | {groups} | {'-' if agg is None else format(agg['agreement'], '.2%')} | "
                f"{'PASSED' if p['passed'] else 'FAILED: ' + '; '.join(p['failures'])} |"
            )
    out += _chunk_table(r)
    out += ["", "Per aggregation (official `detect_video_and_aggregate`):", "", "| decoder | " + " | ".join(AGGREGATIONS) + " |"]
    out.append("|---|" + "---|" * len(AGGREGATIONS))
    for k, x in r["results"].items():
        cells = [
            (f"{a['bit_accuracy']:.2%}" if "bit_accuracy" in a else a["bits"][:16] + "...")
            for a in (x["all_aggregations"][h] for h in AGGREGATIONS)
        ]
        out.append(f"| {k} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


CHUNK_ROWS = 24  # chunks listed in detect.md (every chunk is in detect.json)


def _chunk_table(r: dict[str, Any]) -> list[str]:
    """Each decoder's verdict per chunk (the official ``chunk_size`` frames), the first ``CHUNK_ROWS`` of them."""
    out = []
    for k, x in r["results"].items():
        chunks = x.get("chunks") or []
        out += ["", f"Per chunk of {x.get('chunk_frames')} frames, {k} ({r['aggregation']}):", ""]
        out += ["| frames | verdict | bits (hex) | bit accuracy | p-value | mean mask logit |", "|---|---|---|---|---|---|"]
        for c in chunks[:CHUNK_ROWS]:
            verdict = ("DETECTED" if c["detected"] else "not detected") if "detected" in c else "no message to test"
            acc, pv = (f"{c['bit_accuracy']:.2%}", f"{c['pvalue']:.3g}") if "pvalue" in c else ("", "")
            out.append(
                f"| {c['first_frame']}-{c['first_frame'] + c['frames'] - 1} | {verdict} | `{c['bits_hex']}` | {acc} | {pv} | {c['mean_mask_logit']:+.3f} |"
            )
        if len(chunks) > CHUNK_ROWS:
            out.append(f"| ... | {len(chunks) - CHUNK_ROWS} more chunks in detect.json | | | | |")
    return out


def attack_clip(src: Path, dst: Path, name: str, frames: int) -> int:
    """Re-encode ``src`` (its first ``frames`` frames) into ``dst`` by the video attack ``name``
    (``video/codec_attacks.py``); the frames written."""
    from videoseal_litert.video.codec_attacks import BY_NAME
    from videoseal_litert.video.io import transcode

    a = BY_NAME.get(name)
    if a is None or a.codec is None:
        raise UsageError(f"unknown codec attack {name!r}: {', '.join(n for n, x in BY_NAME.items() if x.codec)}")
    info = probe(src)
    n = frames if info.frames is None else min(frames, info.frames)
    rate = a.rate(info.fps) if a.select else None
    return transcode(src, dst, lambda f: a.resize(f.rgb), crf=a.crf, codec=a.codec, max_frames=frames, rate=rate, keep=a.keep(n)).frames


def run_video_attacks(
    opts: RunOptions,
    src: Path,
    attacks: str | None = None,
    max_frames: int = 32,
    aggregation: str = "avg",
    report_dir: Path | None = None,
) -> dict[str, Any]:
    """Each codec attack on a watermarked clip (its ``.json`` beside it names the message), detected by every
    decoder of the run's variants: ``attacks.{json,md}`` in ``report_dir`` (default ``OUT/video/<clip>``)."""
    import tempfile

    t0 = time.time()
    out = opts.out
    side = sidecar(src)
    if not side.is_file():
        raise UsageError(f"{side} not found: attack a clip `video embed` wrote (its .json names the message)")
    rec = read_json(side)
    msg = parse_message(rec["message"], ExtractorPart(opts).nbits)
    size = int(opts.spec.card.config.img_size)
    from videoseal_litert.video.codec_attacks import resolve_video_attacks

    names = [a.name for a in resolve_video_attacks(attacks) if a.codec is not None]
    runners, files = _extractors(opts)
    rules = {k: _rule(opts, k, Path(f["file"])) for k, f in files.items() if f["file"] is not None}
    rows = []
    with tempfile.TemporaryDirectory(prefix="video-attacks-") as td:
        for name in progress(["none", *names], desc="codec attacks", unit="attacks"):
            clip = src if name == "none" else Path(td) / f"{name}.mp4"
            if name != "none":
                attack_clip(src, clip, name, max_frames)
            logits = detect_video(runners, clip, size, max_frames)
            for k, lg in logits.items():
                c = clip_result(lg, aggregation, msg)
                # Each file against PyTorch on the same attacked clip, by the rule (the clip carries the message).
                v = video_parity(logits[PYTORCH], lg, aggregation, rules[k], True) if PYTORCH in logits and k in rules else None
                rows.append({"attack": name, "decoder": k, "frames": c["frames"], "bit_accuracy": c["bit_accuracy"], "pvalue": c["pvalue"],
                             "mean_mask_logit": c["mean_mask_logit"], "frame_bit_accuracy_mean": c["frame_bit_accuracy_mean"],
                             "bytes": video_bytes(clip, c["frames"]), "rule": None if v is None else v.as_dict()})  # fmt: skip
    rd = report_dir or out / "video" / src.name.removesuffix(".mp4")
    r = {
        "model": opts.spec.name,
        "clip": str(src),
        "embedded_with": rec["embedder"]["variant"],
        "random_init": rec.get("random_init", False),
        "aggregation": aggregation,
        "rows": rows,
        "seconds": round(time.time() - t0, 1),
        "machine": machine_description(),
    }
    write_json(rd / "attacks.json", r)
    failed = [f"{x['decoder']} on {x['attack']}: {'; '.join(x['rule']['failures'])}" for x in rows if x["rule"] and not x["rule"]["passed"]]
    md = _attack_table(r, src, list(runners), ["none", *names], failed)
    write_text(rd / "attacks.md", "\n".join(md) + "\n")
    say("\n".join(md[4:]) + f"\nreport: {rd / 'attacks.md'}")
    if failed:
        raise VerificationError(f"video attack: {'; '.join(failed[:3])}; {rd / 'attacks.md'}")
    return r


def _attack_table(r: dict[str, Any], src: Path, decoders: list[str], attacks: list[str], failed: list[str]) -> list[str]:
    """attacks.md's lines: bit accuracy (p-value) and the rule's verdict per attack and decoder, the failures below."""
    rows = r["rows"]
    md = [
        f"# Codec attacks on {src.name} (model {r['model']}, embedded with {r['embedded_with']})"
        + (" RANDOM WEIGHTS" if r["random_init"] else ""),
        "",
        f"Bit accuracy of the `{r['aggregation']}` aggregate over the frames (p-value); sizes are the video stream's bytes for the "
        f"frames read (the source's first frames, not its whole file); each file against PyTorch on the same attacked "
        f"clip by the rule (docs/verification.md): pass or FAIL; {r['machine']}; {r['seconds']} s.",
        "",
        "| attack | frames | video MB (those frames) | " + " | ".join(decoders) + " |",
        "|---|---|---|" + "---|" * len(decoders),
    ]
    for name in attacks:
        rs = {x["decoder"]: x for x in rows if x["attack"] == name}
        first = next(iter(rs.values()))
        cells = [
            f"{rs[d]['bit_accuracy']:.2%} ({rs[d]['pvalue']:.1g})" + ("" if rs[d]["rule"] is None else f" {_verdict(rs[d]['rule'])}")
            for d in decoders
        ]
        md.append(f"| {name} | {first['frames']} | {first['bytes'] / 1e6:.2f} | " + " | ".join(cells) + " |")
    if failed:
        md += ["", "FAILED (against PyTorch on the same attacked clip):", "", *[f"- {f}" for f in failed]]
    return md


def _verdict(rule: dict[str, Any]) -> str:
    return "pass" if rule["passed"] else "FAIL"


def _rule(opts: RunOptions, name: str, path: Path) -> Rule:
    """The rule a decoder's file is judged by: its variant's, or for a ``.tflite`` of the user's the floor of what it is."""
    row = variant(name) if name in variant_names("extractor") else None
    return rule_for(opts.spec, "extractor", row, None if row else precision_of(path))
