"""``make web-check``: the bundle's files in real browsers (LiteRT.js, WASM backend), judged by the project's rule.

For each browser (headless Chromium and Firefox ESR, ``web/browsers.py``), ``web/check.mjs`` opens the page
(``web/index.html``, served by ``web/serve.py`` with the headers that allow threads) and

1. runs every extractor and embedder file of the bundle on the bundle's golden vectors (the embedder's
   odd-size cover through the page's port of the official route), timing each file;
2. uses the page as a person would: chooses a photo, embeds a message, downloads the watermarked PNG,
   detects it again, detects the unmarked photo, and is given a file that is not an image;
3. tries files a bundle does not ship (``int8-full``: the JS API has no int8 tensors) and reports them.

Judged here with the golden vectors (the x86 Python interpreter's outputs) as the reference: by the bundle's
self-test rule (within the golden tolerance, no bit clear of it flipped: what ``run_extractor.py --selftest``
checks on ARM64 and through the C library), and by the rule the Python verification uses (``models/gate.py``,
docs/verification.md) with each file's own band from ``model.json``: no decision clear of the noise band
flipped, the difference noise under the band's cap and, for an integer output, at most two output steps (the
ARM64-x86 bound); an embedder's difference under the band's cap against the watermark it writes. The page's bits on the
downloaded PNG must equal the Python runner's on the same bytes but where the Python logit lies within two
output steps of zero. Report: ``OUT/<model>/web-check.{json,md}``, timings as ratios to fp32 in the same page.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from videoseal_litert.convert.arm_check import ARM_MAX_STEPS, output_steps
from videoseal_litert.core.artifacts import machine_description, write_json, write_text
from videoseal_litert.core.console import working
from videoseal_litert.core.errors import WebCheckError
from videoseal_litert.models.gate import Band, judge
from videoseal_litert.runtime.litert_runner import LiteRTRunner
from videoseal_litert.runtime.route import resize_aa
from videoseal_litert.web.browsers import ensure_browsers, ensure_node_modules, versions
from videoseal_litert.web.serve import serve_in_background

log = logging.getLogger(__name__)
WEB = Path(__file__).resolve().parent
NOT_IN_BROWSERS = ("int8-full.tflite",)  # tried from the model folder when there: reported, not a failure
BROWSER_TIMEOUT_S = 900
DETECT_PVALUE = 1e-6  # the page's threshold (web/app.js)


def _band(desc: dict[str, Any]) -> Band:
    b = desc["verification"]["band"]
    return Band(float(b["min_snr_db"]), b.get("source", ""))


def judge_extractor(bundle: Path, golden: dict[str, Any], desc: dict[str, Any], got: dict[str, Any]) -> dict[str, Any]:
    """One extractor file's browser outputs against its golden vectors: the rule, plus the output-step bound."""
    vecs = golden["vectors"]
    ref = np.array([[v["mask_logit"], *v["bit_logits"]] for v in vecs], np.float64)
    out = np.array([[r["mask_logit"], *r["bit_logits"]] for r in got["vectors"]], np.float64)
    v = judge(ref, out, np.ones_like(ref, bool), _band(desc), [x["image"] for x in vecs], lambda j: "mask" if j == 0 else f"bit {j - 1}")
    step = output_steps(bundle / golden["file"], "bit_logits")
    largest = float(np.abs(out - ref).max())
    failures = list(v.failures)
    # The bundle's own self-test rule (run_extractor.py --selftest, as on ARM64 and through the C library).
    tol = float(golden["logit_atol"])
    sure = np.abs(ref[:, 1:]) > tol
    flipped = int((((out[:, 1:] > 0) != (ref[:, 1:] > 0)) & sure).sum())
    if largest > tol or flipped:
        failures.append(f"max |diff| {largest:.3g} against the golden vectors' tolerance {tol:.3g}; {flipped} bits clear of it differ")
    if step is not None and largest > (ARM_MAX_STEPS + 1e-3) * step:  # float rounding of an exact two steps
        failures.append(f"differs from the golden vectors by {largest / step:.2f} output steps (at most {ARM_MAX_STEPS})")
    return {
        "file": golden["file"],
        "max_abs_diff": largest,
        "output_step": step,
        "diff_in_output_steps": None if step is None else round(largest / step, 2),
        "snr_db": None if v.noise_rms == 0 else round(v.snr_db, 2),
        "band_db": v.band.min_snr_db,
        "clear_flips": v.clear_flips,
        "bits_equal": bool(((out[:, 1:] > 0) == (ref[:, 1:] > 0)).all()),
        "median_ms": got["median_ms"],
        "failures": failures,
    }


def judge_embedder(golden: dict[str, Any], desc: dict[str, Any], got: dict[str, Any]) -> dict[str, Any]:
    """One embedder file's browser outputs against its golden vectors: within their tolerance (the bundle's self-test
    rule), and the error under the band's cap against the watermark (``watermarked - cover``), over all vectors."""
    band = _band(desc)
    largest = max(r["max_abs_diff"] for r in got["vectors"])
    failures = [f"max |diff| {largest:.3g} over the golden vectors' tolerance {golden['atol']:g}"] if largest > golden["atol"] else []
    failures += [
        f"{r['image']}: output {r['shape']} != golden {r['expected_shape']}" for r in got["vectors"] if r["shape"] != r["expected_shape"]
    ]
    n = sum(r["n"] for r in got["vectors"])
    noise = (sum(r["error_sq_sum"] for r in got["vectors"]) / n) ** 0.5
    signal = (sum(r["watermark_sq_sum"] for r in got["vectors"]) / n) ** 0.5
    snr = float("inf") if noise == 0 else 20 * np.log10(signal / noise)
    if snr < band.min_snr_db:
        failures.append(f"watermark SNR against the golden output {snr:.2f} dB < {band.min_snr_db:g} dB (error RMS {noise:.3g})")
    return {
        "file": got["file"],
        "max_abs_diff": largest,
        "snr_db": None if noise == 0 else round(snr, 2),
        "band_db": band.min_snr_db,
        "median_ms": got["median_ms"],
        "failures": failures,
    }


def python_bits(path: Path, png: Path) -> np.ndarray:
    """The Python interpreter's bit logits on a PNG, resized as the page does (torch's antialiased bilinear)."""
    runner = LiteRTRunner(path, 2)
    size = runner.input_shapes["image"][1]
    img = np.asarray(Image.open(png).convert("RGB"), np.float32) / 255
    return runner({"image": resize_aa(img, size, size)[None]})["bit_logits"].reshape(-1)


def judge_page(bundle: Path, model: dict[str, Any], e2e: dict[str, Any], message: str) -> dict[str, Any]:
    failures = []
    ex = model["variants"]["int8" if "int8" in model["variants"] else next(iter(model["variants"]))]
    down = e2e.get("detect_downloaded") or {}
    if e2e.get("embed_error"):
        failures.append(f"embedding failed on the page: {e2e['embed_error']}")
    if e2e.get("embedded_bits") != message:
        failures.append(f"the page embedded {e2e.get('embedded_bits')!r}, not the message typed")
    agree = None
    if e2e.get("downloaded") and Path(e2e["downloaded"]).is_file() and down.get("bits"):
        logits = python_bits(bundle / ex["file"], Path(e2e["downloaded"]))
        page = np.array([c == "1" for c in down["bits"]])
        step = output_steps(bundle / ex["file"], "bit_logits") or 0.0
        clear = np.abs(logits) > ARM_MAX_STEPS * step
        differ = (logits > 0) != page
        agree = float(1 - differ.mean())
        if (differ & clear).any():
            failures.append(
                f"the page's bits differ from the Python runner's on the downloaded PNG at bits {np.flatnonzero(differ & clear).tolist()}"
            )
    else:
        failures.append("no watermarked PNG was downloaded and detected")
    if down.get("verdict") != "Watermark detected" or not down.get("pvalue", 1) < DETECT_PVALUE:
        failures.append(f"the downloaded PNG: {down.get('verdict')!r} (p-value {down.get('pvalue')})")
    unmarked = e2e.get("detect_unmarked") or {}
    if unmarked.get("verdict") != "Watermark not detected":
        failures.append(f"the unmarked photo: {unmarked.get('verdict')!r} (p-value {unmarked.get('pvalue')})")
    if "is not an image" not in (e2e.get("not_an_image") or ""):
        failures.append(f"a non-image gave {e2e.get('not_an_image')!r}, not a named error")
    return {**e2e, "bits_agreement_with_python": agree, "failures": failures}


def web_check(
    bundle: Path, model_dir: Path | None, report_dir: Path, photo: Path, browsers: tuple[str, ...] = ("chromium", "firefox")
) -> dict[str, Any]:
    """Every browser on ``bundle``; the report in ``report_dir``; WebCheckError listing the failures."""
    model = json.loads((bundle / "model.json").read_text())
    golden = json.loads((bundle / "golden" / "golden.json").read_text())["variants"]
    egolden = json.loads((bundle / "golden" / "embedder" / "golden.json").read_text())["variants"] if model.get("embedder") else {}
    with working("setting up LiteRT.js and the browsers (once per machine)"):
        ensure_node_modules()
        found = ensure_browsers(browsers)
    message = "".join(str(b) for b in np.random.default_rng(7).integers(0, 2, model["nbits"]))
    extra = [n for n in NOT_IN_BROWSERS if model_dir is not None and (model_dir / n).is_file()]
    report: dict[str, Any] = {
        "model_id": model["model_id"],
        "random_init": model["random_init"],
        "machine": machine_description(),
        "packages": {**versions(), **json.loads((WEB / "package.json").read_text())["dependencies"]},
        "photo": photo.name,
        "message": message,
        "browsers": {},
    }
    failures: list[str] = []
    srv, url = serve_in_background(bundle, model_dir)
    try:
        with tempfile.TemporaryDirectory(prefix="web-check-") as tmp:
            not_image = Path(tmp) / "notes.png"
            not_image.write_text("these are notes, not a picture\n")
            for name, b in found.items():
                out = Path(tmp) / f"{name}.json"
                cmd = [
                    "node",
                    str(WEB / "check.mjs"),
                    name,
                    str(b.executable),
                    url,
                    str(out),
                    str(photo.resolve()),
                    str(not_image),
                    message,
                ]
                t0 = time.time()
                with working(f"{name}: the bundle's files on the golden vectors, then the page end to end"):
                    r = subprocess.run(
                        cmd + [f"{url}/extra/{n}" for n in extra],
                        capture_output=True,
                        text=True,
                        env={**os.environ, **b.env},
                        timeout=BROWSER_TIMEOUT_S,
                    )
                if not out.is_file():
                    raise WebCheckError(f"{name} ({b.executable}) did not run: {(r.stderr or r.stdout).strip()[-500:]}")
                got = json.loads(out.read_text())
                entry = {"version": got.get("version"), "seconds": round(time.time() - t0, 1), "failures": []}
                if got.get("error"):
                    entry["failures"].append(f"the page: {got['error']}")
                g = got.get("golden") or {}
                entry.update(threads=g.get("threads"), webgpu_adapter=g.get("webgpu"), not_loadable=g.get("not_loadable", {}))
                entry["extractor"] = {
                    v: judge_extractor(bundle, golden[v], model["variants"][v], x) for v, x in g.get("extractor", {}).items()
                }
                entry["embedder"] = {
                    v: judge_embedder(egolden[v], model["embedder"]["variants"][v], x) for v, x in g.get("embedder", {}).items()
                }
                for part, names in (("extractor", golden), ("embedder", egolden)):
                    for v in names:
                        if v not in entry[part] and not got.get("error"):
                            entry["failures"].append(f"{names[v]['file']}: {entry['not_loadable'].get(names[v]['file'], 'not run')}")
                if got.get("golden"):
                    entry["page"] = judge_page(bundle, model, got.get("e2e") or {}, message)
                    entry["failures"] += entry["page"]["failures"]
                for part in ("extractor", "embedder"):
                    fp32 = (entry[part].get("fp32") or {}).get("median_ms")
                    for f in entry[part].values():
                        f["ratio_to_fp32"] = round(f["median_ms"] / fp32, 2) if fp32 and f.get("median_ms") else None
                        entry["failures"] += [f"{f['file']}: {x}" for x in f["failures"]]
                failures += [f"{name}: {x}" for x in entry["failures"]]
                report["browsers"][name] = entry
    finally:
        srv.shutdown()
    report.update(passed=not failures, failures=failures)
    report_dir.mkdir(parents=True, exist_ok=True)
    write_json(report_dir / "web-check.json", report)
    write_text(report_dir / "web-check.md", render(report))
    if failures:
        raise WebCheckError("web-check: " + "; ".join(failures[:5]) + (f"; and {len(failures) - 5} more" if len(failures) > 5 else ""))
    return report


def render(r: dict[str, Any]) -> str:
    lines = [
        f"# web-check: {r['model_id']} in browsers (LiteRT.js, WASM)",
        "",
        ("**RANDOM WEIGHTS.** " if r["random_init"] else "")
        + f"Measured on {r['machine']}; packages {', '.join(f'{k} {v}' for k, v in r['packages'].items())}. Golden vectors: the x86 "
        "Python interpreter's outputs in the bundle; each file judged by its own band (docs/verification.md), integer outputs within "
        f"{ARM_MAX_STEPS} output steps. Times: median of 5 runs on one input, in the same page; ratio to fp32.",
        "",
        "| browser | file | max abs diff | in output steps | SNR vs golden (dB) | band (dB) | median ms | x fp32 | verdict |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, b in r["browsers"].items():
        for part in ("extractor", "embedder"):
            for f in b.get(part, {}).values():
                steps = f.get("diff_in_output_steps")
                lines.append(
                    f"| {name} {b['version']} | {f['file']} | {f['max_abs_diff']:.3g} | {'-' if steps is None else steps} | "
                    f"{'exact' if f['snr_db'] is None else f['snr_db']} | {f['band_db']:g} | {f['median_ms']:.1f} | "
                    f"{f.get('ratio_to_fp32') or '-'} | {'FAIL' if f['failures'] else 'pass'} |"
                )
        for file, why in (b.get("not_loadable") or {}).items():
            lines.append(f"| {name} {b['version']} | {file} | not loadable: {why} | | | | | | reported |")
    lines += ["", "## The page, end to end (choose a photo, embed, download, detect)", ""]
    for name, b in r["browsers"].items():
        p = b.get("page") or {}
        d, u = p.get("detect_downloaded") or {}, p.get("detect_unmarked") or {}
        lines.append(
            f"- **{name}** ({b['seconds']} s, {'threads' if b.get('threads') else 'one thread'}, WebGPU adapter: {bool(b.get('webgpu_adapter'))}): "
            f"embedded at {p.get('psnr_db')} dB PSNR; downloaded PNG: {d.get('verdict')}, {d.get('accuracy')}, p {d.get('pvalue')}, "
            f"bits agree with the Python runner {p.get('bits_agreement_with_python')}; unmarked photo: {u.get('verdict')} "
            f'(p {u.get("pvalue")}); a non-image: "{p.get("not_an_image")}"'
        )
    lines += ["", "PASSED" if r["passed"] else "FAILED:\n\n" + "\n".join(f"- {x}" for x in r["failures"]), ""]
    return "\n".join(lines)
