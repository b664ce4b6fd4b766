"""``videoseal-litert evaluate`` (``make evaluate``): the official attack suite over any image collection.

Chooses the files, converts what is missing (the pipeline's own stages, skipped when current), lists
the images, runs an engine (``engines.py``), and writes the summary (``summary.py``) beside the rows::

    <out>/<model>/evaluate/            (or --eval-dir)
        run.json                       what determines the rows, the engine's timing, the machine
        rows/*.parquet                 one row per image x message x embedder x attack x variant
        summary.json, summary.md, summary.png

A second run with the same settings resumes (images whose rows are there are skipped); other
settings in the same folder are a named error unless ``--force`` (which starts the folder afresh).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from videoseal_litert.calibration_data.attacks import resolve_attacks
from videoseal_litert.convert.options import RunOptions
from videoseal_litert.convert.parts import EmbedderPart, ExtractorPart
from videoseal_litert.convert.verify import failed_path, require_verified
from videoseal_litert.core.artifacts import machine_description, read_json, sha256_file, write_json, write_text
from videoseal_litert.core.console import progress, say
from videoseal_litert.core.errors import UsageError
from videoseal_litert.evaluate import engines, summary
from videoseal_litert.evaluate.batches import PYTORCH, EvalConfig, label
from videoseal_litert.models.gate import ATTACK_SEPARATOR
from videoseal_litert.models.variants import names as variant_names
from videoseal_litert.quantize.quantize_stage import ensure_files

DEFAULT_VARIANTS = "pytorch,fp32,int8"
MESSAGES_PER_IMAGE = 1
SEED = 0


def choose(opts: RunOptions, spec: str | None) -> tuple[tuple[str, ...], tuple[str, ...], dict[str, tuple[str, str]]]:
    """(embedders, decoders, registry files to make) from ``pytorch,fp32,int8,embedder-int8,path.tflite``:
    ``pytorch`` is the PyTorch embedder and extractor, ``embedder-<v>`` and ``<v>`` the model's files,
    a path a file of your own (an ``embedder*.tflite`` name embeds). No embedder named: PyTorch's."""
    md = opts.model_dir.path
    emb: list[str] = []
    dec: list[str] = []
    make: dict[str, tuple[str, str]] = {}
    for tok in (t.strip() for t in (spec or DEFAULT_VARIANTS).split(",")):
        if not tok:
            continue
        if tok == PYTORCH:
            emb.append(PYTORCH)
            dec.append(PYTORCH)
        elif tok.endswith(".tflite"):
            p = Path(tok)
            if not p.is_file() and not failed_path(p).is_file():
                raise UsageError(f"variant file not found: {tok}")
            (emb if p.name.startswith("embedder") else dec).append(str(p.resolve()))
        elif (v := EmbedderPart.variant_of(f"{tok}.tflite")) in variant_names("embedder"):
            emb.append(str(md / EmbedderPart.file(v)))
            make[emb[-1]] = ("embedder", v)
        elif (v := ExtractorPart.variant_of(f"{tok}.tflite")) in variant_names("extractor"):
            dec.append(str(md / ExtractorPart.file(v)))
            make[dec[-1]] = ("extractor", v)
        else:
            raise UsageError(
                f"unknown variant {tok!r}: pytorch, an extractor variant ({', '.join(variant_names('extractor'))}), "
                f"embedder-<variant> ({', '.join(variant_names('embedder'))}) or a .tflite path"
            )
    if not dec:
        raise UsageError("no extractor to decode with: name pytorch, an extractor variant or an extractor .tflite")
    for what, xs in (("embedder", emb), ("extractor", dec)):
        labels = [label(x) for x in xs]
        if len(set(labels)) != len(labels):
            raise UsageError(f"two {what} variants with the same name: {', '.join(labels)}")
    return tuple(dict.fromkeys(emb or [PYTORCH])), tuple(dict.fromkeys(dec)), make


VIDEO_FRAMES = 16  # frames of each clip the video pass embeds, attacks and decodes


def _verdicts(checked: dict[str, dict[str, Any]]) -> str:
    """Each file's verdict by the rule (its verification report), beside the table of its differences from PyTorch."""
    parts = []
    for c in checked.values():
        rep = c.get("report") or {}
        what = "PASSED" if c["status"] == "verified" else c["status"].upper()
        n = rep.get("num_images")
        attacked = any(ATTACK_SEPARATOR in g for g in (rep.get("gate") or {}).get("groups", {}))
        parts.append(
            f"{label(c['file'])} {what}" + (f" on {n} held-out inputs" + (", attacked views included" if attacked else "") if n else "")
        )
    return "verdicts by the rule (docs/verification.md): " + ("; ".join(parts) if parts else "PyTorch only")


def _video_pass(cfg: EvalConfig, req: EvalRequest, clips: list[str], ed: Path) -> dict[str, Any]:
    """The clips through the video pass (``evaluate/video_pass.py``): rows in ``video-rows/``, a section of
    summary.md and, on the terminal, the bit accuracy per attack with the decoders side by side."""
    from videoseal_litert.video.codec_attacks import resolve_video_attacks
    from videoseal_litert.video.commands import card_video_args

    rows_dir = ed / "video-rows"
    va = card_video_args(cfg.run)
    emb, dec = cfg.embedders, cfg.decoders
    n_att = len(resolve_video_attacks(cfg.video_attacks))
    say(
        f"evaluate video: {len(clips)} clip(s) x {cfg.video_frames} frames x {cfg.messages_per_image} message(s) x {len(emb)} embedder(s) "
        f"x {n_att} attack(s) x {len(dec)} decoder(s), aggregation {cfg.video_aggregation}, key frame every {va['step']} ({va['source']})"
    )
    if req.engine == "local":
        timing = engines.run_local(cfg, clips, rows_dir, progress, video=True)
    else:
        expected = len(clips) * cfg.messages_per_image * len(emb) * n_att * len(dec)
        timing = engines.run_ray(cfg, clips, rows_dir, req.ray_address, req.workers, expected_rows=expected, video=True)
    v = summary.summarize(engines.read_rows(rows_dir), [label(d) for d in dec])
    v["timing"] = timing
    v["video_settings"] = va
    head = (
        f"\n## Video: {v['images']} clip(s), their first {cfg.video_frames} frames, the official video route and the codec attacks\n\n"
        f"Embedded with the key-frame route (video/key_frames.py; a key frame every {va['step']} frames, {va['source']}), stored as 8-bit frames, attacked (video/codec_attacks.py), every frame "
        f"decoded and the bits aggregated by `{cfg.video_aggregation}`; bit accuracy per clip x attack. {v['rows']} rows in {rows_dir}.\n\n"
        + summary.attack_table(v)
    )
    section = summary.render(v, head).replace("## By attack family", "### By attack family").replace("## By attack\n", "### By attack\n")
    write_text(ed / "summary.md", (ed / "summary.md").read_text() + section)  # after the image sections, written just before
    say(summary.attack_table(v))
    return v


@dataclass(frozen=True)
class EvalRequest:
    """What evaluate asks beyond the run object (``RunOptions``: model, checkpoint, OUT, threads, images, variants,
    force, allow-unverified): the attacks, the messages, the engine, where the rows go, and the video pass."""

    attacks: str | None = None
    messages_per_image: int = MESSAGES_PER_IMAGE
    seed: int = SEED
    engine: str = "local"
    ray_address: str | None = None
    workers: int | None = None
    eval_dir: Path | None = None
    videos: str | None = None
    video_attacks: str | None = None
    video_frames: int = VIDEO_FRAMES
    video_aggregation: str = "avg"


def run_evaluate(opts: RunOptions, req: EvalRequest | None = None) -> dict[str, Any]:
    """The run's photos (``opts.images``: a folder, glob or list; default the photo pool's evaluation split) through
    ``req``'s attacks with the run's variants; resumes a folder of the same settings (``opts.force`` starts afresh)."""
    t0, req = time.time(), req or EvalRequest()
    attack_list, clips = _checked_request(req)
    stage_opts = opts.for_stages()  # the files are verified on the held-out photos; the user's are what is evaluated
    paths = engines.list_inputs(opts.images) if opts.images else [str(p) for p in _evaluation_split()]
    emb, dec, checked = _chosen_files(stage_opts, opts.variants, opts.allow_unverified)
    cfg = EvalConfig(
        run=stage_opts,
        attacks=req.attacks or "official",
        embedders=emb,
        decoders=dec,
        messages_per_image=req.messages_per_image,
        seed=req.seed,
        video_attacks=(req.video_attacks or "codec") if clips else "off",
        video_frames=req.video_frames,
        video_aggregation=req.video_aggregation,
    )
    ed = req.eval_dir or (opts.model_dir.path / "evaluate")
    images = str(opts.images or "the photo pool's evaluation split")
    record = _start_record(cfg, ed, opts.force, images=images, paths=paths, clips=clips)
    say(
        f"evaluate: {len(paths)} image(s) x {req.messages_per_image} message(s) x {len(emb)} embedder(s) x {len(attack_list)} "
        f"attack(s) x {len(dec)} decoder(s) [{', '.join(label(d) for d in dec)}], engine {req.engine}"
        + (" (RANDOM weights)" if opts.random_weights else "")
    )
    # Ray: one cluster for both passes (starting a local one costs tens of seconds); run_ray leaves it running.
    use_one_cluster = req.engine == "ray" and clips
    ray_mod, ray_started = engines.start_ray(req.ray_address, engines.cluster_cpus(cfg)) if use_one_cluster else (None, False)
    try:
        timing = _image_pass(cfg, req, paths, ed / "rows", len(attack_list))
        s = _image_report(cfg, record, ed, timing, attack_list, checked, req.engine, t0)
        if clips:
            s["video"] = _video_pass(cfg, req, clips, ed)
            s["wall_s"] = round(time.time() - t0, 1)
            write_json(ed / "summary.json", s)
        _closing_lines(s, timing, ed)
        return s
    finally:
        if ray_started:
            ray_mod.shutdown()


def _image_pass(cfg: EvalConfig, req: EvalRequest, paths: list[str], rows_dir: Path, n_attacks: int) -> dict[str, Any]:
    """The photos through the engine the request names: rows in ``rows_dir``; the engine's timing."""
    if req.engine == "local":
        return engines.run_local(cfg, paths, rows_dir, progress)
    per_image = cfg.messages_per_image * len(cfg.embedders) * n_attacks * len(cfg.decoders)
    return engines.run_ray(cfg, paths, rows_dir, req.ray_address, req.workers, expected_rows=len(paths) * per_image)


def _evaluation_split() -> list[Path]:
    from videoseal_litert.calibration_data.pool import split_paths

    return split_paths("evaluation")


def _checked_request(req: EvalRequest) -> tuple[list, list[str]]:
    """The request's named errors before any work; its attacks and its clips."""
    if req.engine not in engines.ENGINES:
        raise UsageError(f"unknown engine {req.engine!r}: {', '.join(engines.ENGINES)}")
    if req.engine == "ray":
        engines.import_ray()
    if req.messages_per_image < 1:
        raise UsageError(f"--messages-per-image {req.messages_per_image}: at least 1")
    attack_list = resolve_attacks(req.attacks)
    clips: list[str] = []
    if req.videos and req.videos != "none":
        from videoseal_litert.video.codec_attacks import resolve_video_attacks
        from videoseal_litert.video.key_frames import AGGREGATIONS

        clips = engines.list_videos(req.videos)
        if not resolve_video_attacks(req.video_attacks) or req.video_frames < 1 or req.video_aggregation not in AGGREGATIONS:
            raise UsageError(
                f"videos: --video-attacks {req.video_attacks!r} names none, or --video-frames {req.video_frames} < 1, or --video-aggregation "
                f"{req.video_aggregation!r} is not one of {', '.join(AGGREGATIONS)}"
            )
    return attack_list, clips


def _chosen_files(opts: RunOptions, variants: str | None, allow_unverified: bool) -> tuple[tuple[str, ...], tuple[str, ...], dict]:
    """The embedders and decoders (made where missing), verified files only (a failed one under its .failed.tflite
    name, labelled so in every row) unless allowed; and what each file's check found."""
    emb, dec, make = choose(opts, variants)
    ensure_files(opts, make, "evaluate")
    checked = {f: require_verified(Path(f), allow_unverified, "evaluate") for f in (*emb, *dec) if f != PYTORCH}
    emb = tuple(checked[f]["file"] if f in checked else f for f in emb)
    dec = tuple(checked[f]["file"] if f in checked else f for f in dec)
    return emb, dec, checked


def _start_record(cfg: EvalConfig, ed: Path, force: bool, images: str, paths: list[str], clips: list[str]) -> dict:
    """``run.json``: the settings and the bytes of every file and of the checkpoint the rows depend on (a re-quantized
    int8.tflite under the same name must not resume into the old rows); other settings in the folder are refused."""
    files = {label(f): sha256_file(f) for f in (*cfg.embedders, *cfg.decoders) if f != PYTORCH}
    files["checkpoint"] = cfg.run.inputs()["checkpoint_sha256"] if PYTORCH in (*cfg.embedders, *cfg.decoders) else None
    record = {**cfg.record(), "images": images, "num_images": len(paths), "videos": clips, "sha256": files}
    record = json.loads(json.dumps(record))  # as run.json holds it (tuples as lists)
    run_file = ed / "run.json"
    if force and ed.exists():
        shutil.rmtree(ed)
    if run_file.is_file():
        old = read_json(run_file)
        if {k: old.get(k) for k in record} != record:
            diff = ", ".join(k for k in record if old.get(k) != record[k])
            raise UsageError(f"{ed} holds rows of other settings ({diff}); FORCE=1 (--force) starts it afresh, or choose --eval-dir")
    write_json(run_file, {**record, "random_weights": cfg.run.random_weights})
    return record


def _image_report(
    cfg: EvalConfig, record: dict, ed: Path, timing: dict, attack_list: list, checked: dict, engine: str, t0: float
) -> dict[str, Any]:
    """The image pass's summary from its rows: summary.json / .md / .png, and its tables on the terminal."""
    random_weights = cfg.run.random_weights
    dec = [label(d) for d in cfg.decoders]
    unverified = {label(c["file"]): c["status"] for c in checked.values() if c["status"] != "verified"}
    rows_dir = ed / "rows"
    s = summary.summarize(engines.read_rows(rows_dir), dec)
    s.update(
        {
            "model": cfg.run.spec.name,
            "random_weights": random_weights,
            "engine": engine,
            "timing": timing,
            "attacks": [a.name for a in attack_list],
            "machine": machine_description(),
            "wall_s": round(time.time() - t0, 1),
            "unverified_files": unverified,
        }
    )
    write_json(ed / "run.json", {**record, "random_weights": random_weights, "timing": timing, "machine": s["machine"]})
    head = (
        f"# Evaluation: {cfg.run.spec.name}{' (RANDOM weights)' if random_weights else ''}, {s['images']} image(s), {len(attack_list)} attack(s)\n\n"
        f"Images: {record['images']}; {cfg.messages_per_image} seeded message(s) per image (seed {cfg.seed}); embedders: "
        f"{', '.join(label(e) for e in cfg.embedders)}; decoders: {', '.join(dec)}; engine {engine}; {s['machine']}. "
        f"{s['rows']} rows in {rows_dir}."
        + (f" **Files used with --allow-unverified**: {', '.join(f'{k} ({v})' for k, v in unverified.items())}." if unverified else "")
    )
    write_json(ed / "summary.json", s)
    write_text(ed / "summary.md", summary.render(s, head))
    summary.plot(s, ed / "summary.png")
    say(summary.family_table(s))
    say(_verdicts(checked))
    if s["errors"]:
        say(f"{len(s['errors'])} image(s) could not be read (rows with their error; listed in summary.md)")
    return s


def _closing_lines(s: dict, timing: dict, ed: Path) -> None:
    ips = timing.get("images_per_s")
    if s["unverified_files"]:
        say(f"evaluate: UNVERIFIED files used (--allow-unverified): {', '.join(f'{k} ({v})' for k, v in s['unverified_files'].items())}")
    say(
        f"evaluate: {timing['images']} image(s) in {timing['wall_s']:.0f} s"
        + (f" ({ips:.3f} images/s)" if ips else "")
        + f"; report: {ed / 'summary.md'}"
    )
