"""The command line's handlers, one ``cmd_<name>`` per entry of the command table (``parsers.COMMANDS``): thin layers
that build the run's options from the parsed arguments and call the stage functions; heavy imports inside each.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from videoseal_litert.core.errors import UsageError
from videoseal_litert.parsers import ROBUSTNESS_VARIANTS


def run_options(a: argparse.Namespace) -> Any:
    """The run object (``convert.options.RunOptions``), built once per command from whatever of the shared options
    the command's parser has (``--model``, ``--ckpt``, ``--out``, ``--threads``, ``--images``, ``--variants``, the flags)."""
    from videoseal_litert.convert.options import RunOptions
    from videoseal_litert.models.registry import resolve

    flags = ("random_init", "untrained", "allow_zero_weights", "allow_nonfinite_weights", "force", "allow_unverified")
    images = getattr(a, "images", None)
    return RunOptions(
        spec=resolve(a.model),
        out=a.out,
        ckpt=getattr(a, "ckpt", None),
        images=Path(images) if images is not None else None,
        variants=getattr(a, "variants", None),
        threads=a.threads,
        **{f: bool(getattr(a, f, False)) for f in flags},
    )


def _passed(unverified: list[str], all_verified: str) -> str:
    """A command's last line: PASSED, naming the files used only because --allow-unverified let them in."""
    if unverified:
        return f"PASSED, WITH UNVERIFIED FILES (--allow-unverified): {', '.join(unverified)}"
    return f"PASSED: {all_verified}"


def _logged(log_path: Path, body: Callable[[Path | None], None]) -> None:
    from videoseal_litert.core.console import captured

    with captured(log_path) as path:
        body(path)


def _run_stages(
    a: argparse.Namespace,
    opts: Any,
    calls: list[Callable[[], Any]],
    entries: tuple[tuple[str, str], ...] = (),
    summarize: bool | None = None,
) -> None:
    """One stage: its table (first line with --brief). Several (or ``summarize``): their tables to the log,
    one summary of ``entries``' files on the terminal."""
    from videoseal_litert.convert.stages import artifact_summary
    from videoseal_litert.core.console import say

    log = logging.getLogger("videoseal_litert.cli")
    t0 = time.time()

    summarize = len(calls) > 1 if summarize is None else summarize

    def body(log_path: Path | None) -> None:
        title = f"{a.command} {opts.spec.name}"
        for fn in calls:
            table = fn().table()
            if summarize:
                log.info("%s", table)
                title = table.split("\n", 1)[0] if len(calls) == 1 else title
            else:
                say(table.split("\n", 1)[0] if getattr(a, "brief", False) else table)
        if summarize and entries:
            summary, _ = artifact_summary(opts.model_dir.path, entries, time.time() - t0, title)
            say(summary + (f"\nlog: {log_path}" if log_path else ""))

    _logged(opts.model_dir.path / "logs" / f"{a.command}{'' if a.part in (None, 'extractor') else '-' + a.part}.log", body)


def cmd_stage(a: argparse.Namespace) -> None:
    from videoseal_litert.convert import stages as st
    from videoseal_litert.convert.parts import make_part

    opts = run_options(a)
    part = make_part(opts, a.part or "extractor")
    fn = {
        "load": lambda: st.stage_load(opts, part),
        "inspect": lambda: st.stage_inspect(opts, part),
        "export": lambda: st.stage_export(opts, part),
        "tflite": lambda: st.stage_tflite(opts, part),
        "verify": lambda: st.stage_verify(opts, part, a.variant) if a.file is None else st.stage_verify_file(opts, a.file),
    }[a.command]
    _run_stages(a, opts, [fn])


def cmd_convert(a: argparse.Namespace) -> None:
    from videoseal_litert.convert import stages as st
    from videoseal_litert.convert.parts import make_part

    opts = run_options(a)
    part = make_part(opts, a.part or "extractor")
    calls = [lambda f=f: f(opts, part) for f in (st.stage_load, st.stage_export, st.stage_tflite, st.stage_verify)]
    _run_stages(a, opts, calls, ((part.name, "fp32"),))


def _quantize_calls(a: argparse.Namespace, opts: Any, part: Any, variants: tuple[str, ...] | None) -> list[Callable[[], Any]]:
    from videoseal_litert.quantize.quantize_stage import stage_quantize

    if part.name == "extractor":
        target = getattr(a, "target_agreement", None)
        if target is not None and not 0.0 <= target <= 1.0:
            raise UsageError(f"--target-agreement {target} is not a fraction in [0, 1]")
    else:
        target = getattr(a, "target_watermark_snr", None)
        if target is not None and target < 0:
            raise UsageError(f"--target-watermark-snr {target} is negative: give dB of INT8 error below the watermark, or 0 for off")
    return [lambda: stage_quantize(opts, part, a.calib, a.io == "int8", variants, target)]


def cmd_quantize(a: argparse.Namespace) -> None:
    from videoseal_litert.convert.parts import make_part
    from videoseal_litert.models.variants import default_variants, parse

    opts = run_options(a)
    part = make_part(opts, a.part or "extractor")
    variants = parse(opts.variants, part.name)
    shown = variants if variants is not None else default_variants(opts.spec, part.name)
    _run_stages(a, opts, _quantize_calls(a, opts, part, variants), tuple((part.name, v) for v in shown), summarize=True)


def cmd_embedder(a: argparse.Namespace) -> None:
    """``make embedder``: the embedder part through the same stages as the extractor (load, tflite, verify, quantize)."""
    from videoseal_litert.convert import stages as st
    from videoseal_litert.convert.parts import make_part
    from videoseal_litert.models.variants import default_variants, parse

    opts = run_options(a)
    part = make_part(opts, "embedder")
    asked = parse(opts.variants, part.name)
    quantized = tuple(v for v in (asked if asked is not None else default_variants(opts.spec, part.name)) if v != "fp32")
    from videoseal_litert.quantize.quantize_stage import check_quantizable

    check_quantizable(part, quantized)  # before the FP32 conversion, not after it
    calls = [lambda f=f: f(opts, part) for f in (st.stage_load, st.stage_tflite, st.stage_verify)]
    if quantized:
        calls += _quantize_calls(a, opts, part, quantized)
    _run_stages(a, opts, calls, tuple((part.name, v) for v in ("fp32", *quantized)), summarize=True)


def cmd_bench(a: argparse.Namespace) -> None:
    """Every part of the model that has its fp32 file (``--part`` picks one when given explicitly)."""
    from videoseal_litert.convert.parts import make_part, parts_of
    from videoseal_litert.convert.stages import stage_bench

    opts = run_options(a)
    threads = tuple(int(t) for t in a.bench_threads.split(",")) if a.bench_threads else None
    parts = [make_part(opts, a.part)] if a.part else parts_of(opts)
    parts = [p for p in parts if (opts.model_dir / p.file("fp32")).exists()] or parts[:1]  # the first names what is missing
    _run_stages(a, opts, [lambda p=p: stage_bench(opts, p, a.runs, a.warmup, threads) for p in parts], summarize=False)


def cmd_summary(a: argparse.Namespace) -> None:
    from videoseal_litert.convert.parts import make_part
    from videoseal_litert.convert.stages import artifact_summary
    from videoseal_litert.core.console import say
    from videoseal_litert.core.errors import VerificationError

    opts = run_options(a)
    part = make_part(opts, a.part or "extractor")
    table, ok = artifact_summary(
        opts.model_dir.path, tuple((part.name, v) for v in a.variant.split(",")), None, f"{part.name} {opts.spec.name}"
    )
    say(table + f"\nlogs: {opts.model_dir.path / 'logs'}")
    if not ok:
        raise VerificationError(f"{table.splitlines()[-1]} (see the table above)")


def cmd_package(a: argparse.Namespace) -> None:
    from videoseal_litert.core.console import say
    from videoseal_litert.models.variants import parse
    from videoseal_litert.package.bundle import build_bundle

    opts = run_options(a)
    emb = () if a.embedder_variants in ("none", "") else parse(a.embedder_variants, "embedder")

    def body(_: Path | None) -> None:
        from videoseal_litert.runtime.arm import CPU_MODELS

        arm = tuple(CPU_MODELS) if a.arm == "all" else tuple(c.strip() for c in a.arm.split(",")) if a.arm else ()
        summary = build_bundle(opts, parse(opts.variants, "extractor"), a.dist, a.reverify, a.golden, emb, arm)
        say(summary.table() + "\n" + _passed(summary.unverified, "every file in the bundle passed its verification"))

    _logged(opts.model_dir.path / "logs" / "package.log", body)


def cmd_demo(a: argparse.Namespace) -> None:
    from videoseal_litert.demo.watermark import run_demo

    opts = run_options(a)
    _logged(a.out / "demo" / "logs" / "watermark.log", lambda _: run_demo(opts, a.target_agreement))


def cmd_evaluate(a: argparse.Namespace) -> None:
    from videoseal_litert.evaluate.evaluation import run_evaluate

    if a.command == "robustness":  # the preset: the attacks `make robustness` has always shown
        a.attacks, a.variants = a.attacks or "robustness", a.variants or ROBUSTNESS_VARIANTS
        a.eval_dir = a.eval_dir or a.out / a.model / "robustness"
    opts, req = run_options(a), _eval_request(a)
    _logged(a.out / a.model / "logs" / f"{a.command}.log", lambda _: run_evaluate(opts, req))


def cmd_video(a: argparse.Namespace) -> None:
    from videoseal_litert.video.clips import DEFAULT_CLIP, clip_path
    from videoseal_litert.video.commands import default_output, run_video_attacks, run_video_detect, run_video_embed

    if a.max_frames is not None and a.max_frames < 1:
        raise UsageError(f"--max-frames {a.max_frames}: at least 1")
    opts = run_options(a)
    if a.action == "embed":
        src = a.input or clip_path(DEFAULT_CLIP)

        def body(_: Path | None) -> None:
            run_video_embed(opts, src, a.output, a.embedder, a.message, a.seed, a.crf, a.max_frames, strict=a.strict)

    else:
        src = a.input or default_output(a.out, Path(DEFAULT_CLIP))
        if a.input is None and not src.is_file():
            raise UsageError(f"no --input, and {src} (what `video embed` writes by default) does not exist: run `make video-embed` first")

        def body(_: Path | None) -> None:
            if a.action == "attack":
                run_video_attacks(opts, src, a.attacks, a.max_frames or 32, a.aggregation, a.report_dir)
            else:
                run_video_detect(opts, src, a.message, a.aggregation, a.max_frames, a.report_dir)

    _logged(a.out / "video" / "logs" / f"video-{a.action}.log", body)


def cmd_video_bench(a: argparse.Namespace) -> None:
    from videoseal_litert.video.video_bench import rss_child, run_video_bench

    opts = run_options(a)
    if a.rss_child:  # one detection in this fresh process, its peak RSS the last line (video_bench.peak_rss reads it)
        print(f"{rss_child(opts, a.rss_child, a.rss_clip, a.variant):.1f}")
        return
    sizes = [s.strip() for s in a.sizes.split(",") if s.strip()]
    _logged(a.out / "video" / "logs" / "video-bench.log", lambda _: run_video_bench(opts, sizes, a.frames, a.crf, a.variant, not a.no_rss))


def cmd_route_graph(a: argparse.Namespace) -> None:
    from videoseal_litert.core.errors import VerificationError
    from videoseal_litert.video.route_graph import build_route_graph, parse_size

    opts = run_options(a)
    sizes = [parse_size(s.strip(), 256) for s in a.sizes.split(",") if s.strip()]

    def body(_: Path | None) -> None:
        failed = [r["file"] for r in (build_route_graph(opts, w, h, a.runs) for w, h in sizes) if not r["verification"]["passed"]]
        if failed:
            raise VerificationError(f"route-graph: {', '.join(failed)} differ from the Python route beyond the rule")

    _logged(opts.model_dir.path / "logs" / "route-graph.log", body)


def _eval_request(a: argparse.Namespace) -> Any:
    """Evaluate's own options beside the run object (evaluate-scale and robustness share them; the video pass is
    evaluate's alone)."""
    from videoseal_litert.evaluate.evaluation import EvalRequest

    keys = ("attacks", "messages_per_image", "seed", "engine", "ray_address", "workers", "eval_dir")
    keys += ("videos", "video_attacks", "video_frames", "video_aggregation")
    return EvalRequest(**{k: getattr(a, k) for k in keys if hasattr(a, k)})


def cmd_evaluate_scale(a: argparse.Namespace) -> None:
    from videoseal_litert.evaluate.scale import run_scale

    opts, req = run_options(a), _eval_request(a)
    _logged(a.out / a.model / "logs" / "evaluate-scale.log", lambda _: run_scale(opts, req))


def cmd_train_tiny(a: argparse.Namespace) -> None:
    import json

    from videoseal_litert.demo.train_tiny import train

    if a.size % 32:
        raise UsageError(f"--size {a.size} is not a multiple of 32 (the tile and the extractor's stride)")
    record = train(a)
    print(json.dumps(record["heldout_metrics_256"]))


def cmd_train_fixture(a: argparse.Namespace) -> None:
    from videoseal_litert.core.console import say
    from videoseal_litert.demo.train_fixture import train

    r = train(a)
    m = r["heldout_metrics_256"]
    say(
        f"fixture: {r['steps']} steps in {r['train_seconds'] / 60:.0f} min; held-out bits {m['bit_accuracy']:.2%} "
        f"(JPEG 80 {m['bit_accuracy_jpeg80']:.2%}), PSNR {m['psnr_db']:.1f} dB; {a.export}"
    )


def cmd_bench_scale(a: argparse.Namespace) -> None:
    from videoseal_litert.convert.bench_scale import bench_scale

    bench_scale([m.strip() for m in a.models.split(",")], a.out, a.threads, a.runs, a.force, a.resume)


def cmd_kernel_bench(a: argparse.Namespace) -> None:
    from videoseal_litert.core.console import say
    from videoseal_litert.quantize.kernel_bench import kernel_bench

    def body(_: Path | None) -> None:
        r = kernel_bench(a.out, a.tokens, a.dim, a.runs)
        say(f"kernel-bench: {r['layer']} on {r['machine']}")
        for t, med in r["median_ms_by_threads"].items():
            say(f"  {t} thread(s): " + ", ".join(f"{k} {v}" for k, v in med.items()))
        say(f"report: {a.out / 'kernel_bench.json'}")

    a.out.mkdir(parents=True, exist_ok=True)
    _logged(a.out / "logs" / "kernel-bench.log", body)


def cmd_calib_sweep(a: argparse.Namespace) -> None:
    from videoseal_litert.convert.parts import make_part
    from videoseal_litert.core.console import say
    from videoseal_litert.quantize.calib_sweep import calib_sweep

    opts = run_options(a)
    part = make_part(opts, a.part or "extractor")

    def body(_: Path | None) -> None:
        r = calib_sweep(part, [int(c) for c in a.counts.split(",")])
        for row in r["rows"]:
            say(f"  {row['calibration_inputs']} inputs: {part.one_line(row)}")
        say(f"report: {opts.model_dir.path / (part.prefix + 'calib-sweep.md')}")

    _logged(opts.model_dir.path / "logs" / "calib-sweep.log", body)


def cmd_arm_check(a: argparse.Namespace) -> None:
    from videoseal_litert.convert.arm_check import arm_check
    from videoseal_litert.core.console import say
    from videoseal_litert.runtime.arm import CPU_MODELS

    opts = run_options(a)
    cpus = tuple(c.strip() for c in a.cpus.split(",")) if a.cpus else tuple(CPU_MODELS)
    files = tuple(v.strip().removesuffix(".tflite") for v in a.files.split(",")) if a.files else None

    def body(_: Path | None) -> None:
        from videoseal_litert.convert.arm_check import verdict_summary

        r = arm_check(opts, cpus, files, a.inputs, trace=a.trace)
        for entry in r["parts"].values():
            for file, per in entry["files"].items():
                for cpu, f in per.items():
                    diff = "exact as x86" if f["exact"] else f"max diff to x86 {f['max_abs_diff_to_x86']:.3g}"
                    say(f"  {file} on {cpu}: {diff}; against PyTorch {verdict_summary(f)}")
        unverified = [f"{u['file']} ({u['verification']})" for u in r["files_used"] if u["verification"] != "verified"]
        say(f"report: {opts.model_dir.path / 'arm64.md'}\n" + _passed(unverified, "every file passes the rule on the emulated ARM64 CPUs"))

    _logged(opts.model_dir.path / "logs" / "arm-check.log", body)


def cmd_op_cost(a: argparse.Namespace) -> None:
    from videoseal_litert.convert.parts import make_part
    from videoseal_litert.core.console import say
    from videoseal_litert.quantize.op_cost import op_cost

    opts = run_options(a)
    part = make_part(opts, a.part or "extractor")

    def body(_: Path | None) -> None:
        r = op_cost(part, runs=a.runs, candidates=a.ops.split(",") if a.ops else None)
        for t, block in r["removal"].items():
            say(
                f"  {t} thread(s): int8 {block['int8_ratio_to_fp32']:.3f}x FP32; "
                + ", ".join(f"{g['group'].split(' (')[0]} {g['fp32_share']:.0%}" for g in block["groups"])
                + " of FP32"
            )
        for x in r["candidates"]["rows"]:
            say(
                f"  {x['variant']}: metric {x['metric']:.4f}, {x['latency_ratio_to_fp32']:.3f}x FP32, {x['not_delegated']} ops not delegated"
            )
        say(f"report: {opts.model_dir.path / (part.prefix + 'op-cost.md')}")

    _logged(opts.model_dir.path / "logs" / "op-cost.log", body)


def _bundle_of(a: argparse.Namespace) -> tuple[str, Path]:
    from videoseal_litert.core.errors import ArtifactMissingError
    from videoseal_litert.models.registry import resolve

    name = resolve(a.model).name
    bundle = a.dist / name
    if not (bundle / "model.json").is_file():
        raise ArtifactMissingError(f"no bundle in {bundle}: run `make package MODEL={a.model}` first (after convert, quantize, embedder)")
    return name, bundle


def cmd_web(a: argparse.Namespace) -> None:
    from videoseal_litert.core.console import say
    from videoseal_litert.core.exit import Terminated, stopped_as_asked
    from videoseal_litert.web.browsers import ensure_node_modules
    from videoseal_litert.web.serve import server

    _, bundle = _bundle_of(a)
    ensure_node_modules()
    srv = server(bundle, port=a.port, host=a.host)
    host, port = srv.server_address[:2]
    try:  # from here on Ctrl-C is how serving ends, even before the first request
        say(f"serving {bundle} at http://{host}:{port}/  (Ctrl-C stops; cross-origin isolated, so LiteRT.js may use threads)")
        srv.serve_forever()
    except (KeyboardInterrupt, Terminated):  # how serving ends: said, exit 0
        stopped_as_asked()
        say("stopped serving")
    finally:
        srv.server_close()


def cmd_web_setup(a: argparse.Namespace) -> None:
    from videoseal_litert.core.console import say, working
    from videoseal_litert.web.browsers import ensure_browsers, ensure_node_modules, launcher, versions

    with working("LiteRT.js and puppeteer-core (npm ci in web/), headless Chromium and Firefox ESR (Debian packages)"):
        ensure_node_modules()
        found = ensure_browsers()
    v = versions()
    say(
        "web set-up: "
        + ", ".join(f"{n} {launcher(b)}" for n, b in found.items())
        + (f" ({', '.join(f'{k} {x}' for k, x in v.items())})" if v else "")
    )


def cmd_web_check(a: argparse.Namespace) -> None:
    from videoseal_litert.calibration_data import pool
    from videoseal_litert.core.console import say
    from videoseal_litert.web.check import web_check

    _, bundle = _bundle_of(a)
    if a.photo is None:  # the smallest evaluation photo of the pool: not 256 x 256, so the page's route runs
        entry = min(pool.photos("evaluation"), key=lambda p: p["size"][0] * p["size"][1])
        a.photo = pool.pool_dir() / entry["name"]
    if not a.photo.is_file():
        raise UsageError(f"--photo {a.photo} does not exist")
    opts = run_options(a)
    report_dir = opts.model_dir.path

    def body(_: Path | None) -> None:
        r = web_check(opts, bundle, a.photo, tuple(b.strip() for b in a.browsers.split(",") if b.strip()))
        for b, e in r["browsers"].items():
            runs = [
                f"{k}: {len(x['extractor']) + len(x['embedder'])} files"
                + (
                    ""
                    if not any(f.get("fell_back") for f in [*x["extractor"].values(), *x["embedder"].values()])
                    else " (some fell back to WASM)"
                )
                if "no_adapter" not in x
                else f"{k}: no adapter"
                for k, x in e["backends"].items()
            ]
            say(
                f"  {b} {e['version']}: {'; '.join(runs)}, each by the rule against PyTorch; the page embedded, downloaded and "
                f"detected ({e['seconds']} s)"
            )
        say(f"report: {report_dir / 'web-check.md'}\nPASSED: the bundle's files and the page work in {', '.join(r['browsers'])}")

    report_dir.mkdir(parents=True, exist_ok=True)
    _logged(report_dir / "logs" / "web-check.log", body)


def cmd_calibration_manifest(a: argparse.Namespace) -> None:
    from videoseal_litert.calibration_data.build import write_manifest

    write_manifest()


def cmd_photos(a: argparse.Namespace) -> None:
    from collections import Counter

    from videoseal_litert.calibration_data import pool
    from videoseal_litert.core.console import say

    dest = pool.install()
    n = Counter(p["split"] for p in pool.photos())
    say(f"photo pool: {sum(n.values())} photos in {dest} (" + ", ".join(f"{k} {n[k]}" for k in pool.SPLITS) + "), each checked by sha256")
