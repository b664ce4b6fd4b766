"""``make web-check``: the bundle's files in real browsers (LiteRT.js), on each backend the page uses, judged by the project's rule.

For each browser (headless Chromium and Firefox ESR, ``web/browsers.py``), ``web/check.mjs`` opens the page
(``web/index.html``, served by ``web/serve.py`` with the headers that allow threads) and

1. runs every extractor and embedder file of the bundle on the bundle's golden vectors (the embedder's
   odd-size cover through the page's port of the official route), timing each file, on the WASM backend and,
   where the browser has a WebGPU adapter (Chromium's SwiftShader one here), on WebGPU: the page picks WebGPU
   whenever there is an adapter. A file WebGPU cannot load or run falls back to WASM, as the page does, and
   the report says so;
2. uses the page as a person would: chooses a photo, embeds a message, downloads the watermarked PNG,
   detects it again, detects the unmarked photo, and is given a file that is not an image;
3. tries files a bundle does not ship (``int8-full``: the JS API has no int8 tensors) and reports them.

Every file is judged by the one rule (``models/gate.py``, docs/verification.md) against PyTorch's outputs on
the same golden inputs (which the bundle carries): an extractor's detection and bits groups, an embedder's
pixels. Its difference from the x86 outputs of the same file is reported beside the rule's runtime bound (two output
steps of an integer output, 1% of PyTorch's RMS of a float one) but not gated here: the browsers run other kernels
than x86's XNNPACK (WebGPU's shaders; WASM's builds, whose INT8 embedder differs from Python's builtin kernels by
far more than the bound) and measured one step of the bound beyond it on int8-dynamic under WebGPU while every
decision held; arm-check and the bundle's self-tests gate the bound, where the same XNNPACK kernels run on another
CPU. Files the bundle marks unverified, or whose sha256 is
not in its manifest, are refused unless ``allow_unverified``. The page's bits on the downloaded PNG must equal
the Python runner's on the same bytes but where the Python logit lies within two output steps of zero. Report:
``OUT/<model>/web-check.{json,md}``, timings as ratios to fp32 in the same page.
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
from videoseal_litert.convert.options import RunOptions
from videoseal_litert.convert.part import gate_line
from videoseal_litert.convert.parts import ExtractorPart
from videoseal_litert.convert.verify import failed_path
from videoseal_litert.core.artifacts import machine_description, write_json, write_text
from videoseal_litert.core.console import working
from videoseal_litert.core.errors import UnverifiedFileError, WebCheckError
from videoseal_litert.core.message import message_hex, parse_message
from videoseal_litert.models.gate import PIXELS, Rule, Verdict, judge_extractor, judge_runtime_difference, signal_verdict
from videoseal_litert.runtime.litert_runner import LiteRTRunner, unverified_files
from videoseal_litert.runtime.route import resize_aa
from videoseal_litert.runtime.run_extractor import check_manifest
from videoseal_litert.web.browsers import ensure_browsers, ensure_node_modules, versions
from videoseal_litert.web.serve import serve_in_background

log = logging.getLogger(__name__)
WEB = Path(__file__).resolve().parent
NOT_IN_BROWSERS = (ExtractorPart.file("int8-full"),)  # tried from the model folder when there: reported, not a failure
BROWSER_TIMEOUT_S = 900
DETECT_PVALUE = 1e-6  # the page's threshold (web/app.js)


def _rule(golden: dict[str, Any]) -> Rule:
    return Rule.from_dict(golden["rule"])


def judge_extractor_run(golden: dict[str, Any], got: dict[str, Any]) -> dict[str, Any]:
    """One extractor file's browser outputs: by the rule against PyTorch's on the golden images, and against the
    x86 outputs of the same file by the runtime bound."""
    vecs = golden["vectors"]
    torch_ = np.array([[v["pytorch"]["mask_logit"], *v["pytorch"]["bit_logits"]] for v in vecs], np.float64)
    x86 = np.array([[v["mask_logit"], *v["bit_logits"]] for v in vecs], np.float64)
    out = np.array([[r["mask_logit"], *r["bit_logits"]] for r in got["vectors"]], np.float64)
    verdict = judge_extractor(torch_, out, [v["image"] for v in vecs], [v["watermarked"] for v in vecs], _rule(golden))
    signal = min(g.signal_rms for g in verdict.groups if g.signal_rms > 0)
    diff = judge_runtime_difference(x86, out, signal, golden.get("output_step"))
    return {
        "file": golden["file"],
        "ran_on": got.get("ran_on"),
        "fell_back": got.get("fell_back"),
        "gate": verdict.as_dict(),
        "to_x86": diff,
        "snr_db": min((g["snr_db"] for g in verdict.as_dict()["groups"].values() if g["snr_db"] is not None), default=None),
        "bits_equal_to_x86": bool(((out[:, 1:] > 0) == (x86[:, 1:] > 0)).all()),
        "median_ms": got["median_ms"],
        "failures": verdict.failures,
    }


def judge_embedder_run(golden: dict[str, Any], got: dict[str, Any]) -> dict[str, Any]:
    """One embedder file's browser outputs: the pixels group of the rule against PyTorch's watermarked output on the
    same covers (from the sums the page returns), and the largest difference from the x86 outputs by the runtime bound."""
    rule = _rule(golden)
    failures = [
        f"{r['image']}: output {r['shape']} != golden {r['expected_shape']}" for r in got["vectors"] if r["shape"] != r["expected_shape"]
    ]
    n = sum(r["n"] for r in got["vectors"])
    g = signal_verdict(
        PIXELS,
        (sum(r["watermark_sq_sum"] for r in got["vectors"]) / n) ** 0.5,
        (sum(r["error_sq_sum"] for r in got["vectors"]) / n) ** 0.5,
        rule.floor.snr_db,
    )
    largest = max(r["max_abs_diff_x86"] for r in got["vectors"])
    diff = judge_runtime_difference(np.zeros(1), np.array([largest]), g.signal_rms, None)
    return {
        "file": got["file"],
        "ran_on": got.get("ran_on"),
        "fell_back": got.get("fell_back"),
        "gate": Verdict(rule, [g]).as_dict(),
        "to_x86": diff,
        "snr_db": g.as_dict()["snr_db"],
        "median_ms": got["median_ms"],
        "failures": failures + g.failures,
    }


def python_bits(path: Path, png: Path) -> np.ndarray:
    """The Python interpreter's bit logits on a PNG, resized as the page does (torch's antialiased bilinear)."""
    runner = LiteRTRunner(path, 2)
    size = runner.input_shapes["image"][1]
    img = np.asarray(Image.open(png).convert("RGB"), np.float32) / 255
    return runner({"image": resize_aa(img, size, size)[None]})["bit_logits"].reshape(-1)


def judge_page(bundle: Path, model: dict[str, Any], e2e: dict[str, Any], message: str) -> dict[str, Any]:
    failures = []
    # The extractor the page said it loaded (its pick from the bundle's ship table).
    ex_file = (
        e2e.get("extractor_file") or model["variants"]["int8" if "int8" in model["variants"] else next(iter(model["variants"]))]["file"]
    )
    down = e2e.get("detect_downloaded") or {}
    if e2e.get("embed_error"):
        failures.append(f"embedding failed on the page: {e2e['embed_error']}")
    typed = message_hex(parse_message(message, model["nbits"]))  # the page shows messages as hex, the one display form
    if e2e.get("embedded_bits") != typed:
        failures.append(f"the page embedded {e2e.get('embedded_bits')!r}, not the message typed ({typed})")
    agree = None
    if e2e.get("downloaded") and Path(e2e["downloaded"]).is_file() and down.get("bits"):
        logits = python_bits(bundle / ex_file, Path(e2e["downloaded"]))
        page = parse_message(down["bits"], model["nbits"]).astype(bool)
        step = output_steps(bundle / ex_file, "bit_logits") or 0.0
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
    rt, bad = e2e.get("detect_retyped") or {}, e2e.get("detect_bad_message") or {}
    if rt.get("bits") and rt.get("typed"):  # the verdict follows the message typed (as hex, upper case), not a stale one
        read, typed_bits = parse_message(rt["bits"], model["nbits"]), parse_message(rt["typed"], model["nbits"])
        k = int((read == typed_bits).sum())
        if rt.get("against") != "the message typed above" or not str(rt.get("accuracy", "")).startswith(f"{k}/"):
            failures.append(
                f"after typing {rt['typed'].upper()}: tested against {rt.get('against')!r}, accuracy {rt.get('accuracy')!r} (expected {k}/...)"
            )
        if bad.get("against") != "the message embedded above" or bad.get("accuracy") != down.get("accuracy"):
            failures.append(f"with a message box that holds no message: {bad.get('against')!r}, {bad.get('accuracy')!r}")
    else:
        failures.append("the page did not re-judge the detection when the message was typed")
    if e2e.get("width_at_390", 0) > 390:
        failures.append(f"at 390 px wide the page is {e2e['width_at_390']} px wide: something runs off the screen")
    unmarked = e2e.get("detect_unmarked") or {}
    if unmarked.get("verdict") != "Watermark not detected":
        failures.append(f"the unmarked photo: {unmarked.get('verdict')!r} (p-value {unmarked.get('pvalue')})")
    if "is not an image" not in (e2e.get("not_an_image") or ""):
        failures.append(f"a non-image gave {e2e.get('not_an_image')!r}, not a named error")
    return {**e2e, "bits_agreement_with_python": agree, "failures": failures}


MAX_GAP_MS = 300  # the page's own thread may not stall longer than this while a photo is embedded (a frozen page: seconds)
LARGE = (3000, 2000)  # the large case: 6 megapixels (a 24-megapixel photo takes four times as long, on the same worker)


CAMERA = "VideoSeal web-check"


def photo_cases(photo: Path, folder: Path) -> dict[str, str]:
    """The photos people bring, made from ``photo``: a large one, one with transparency, a phone photo stored sideways
    with EXIF orientation 6 and a colour profile, and a grayscale scan (web/check.mjs embeds each on the page)."""
    from PIL import ImageCms

    with Image.open(photo) as im:
        rgb = im.convert("RGB")
    rgb.resize(LARGE, Image.BILINEAR).save(folder / "large-photo.jpg", quality=92)
    logo = np.dstack([np.asarray(rgb.resize((400, 300), Image.BILINEAR)), np.full((300, 400), 255, np.uint8)])
    logo[:, :130, 3] = 0  # a clear left third
    logo[100:120, :, 3] = 128  # a half-transparent band
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = CAMERA  # Make: a tag the page must carry over
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    Image.fromarray(logo, "RGBA").save(folder / "logo.png", icc_profile=icc)  # a PNG's iCCP chunk
    rgb.resize((300, 200), Image.BILINEAR).save(folder / "phone.jpg", quality=95, exif=exif.tobytes(), icc_profile=icc)
    rgb.convert("L").resize((320, 240), Image.BILINEAR).save(folder / "scan.png")
    cases = {"large": "large-photo.jpg", "transparent": "logo.png", "rotated": "phone.jpg", "grayscale": "scan.png"}
    return {k: str(folder / v) for k, v in cases.items()}


def judge_cases(cases: dict[str, str], got: dict[str, Any]) -> dict[str, Any]:
    """Each photo case as the page handled it: named after its source, the page never frozen, the button disabled while
    it worked; the large photo at its own size, transparency carried untouched, the phone photo upright (as Python's
    readers turn it: core.images.read_rgb), its EXIF and colour profile carried over as run_embedder.py does."""
    from PIL import ImageOps

    from videoseal_litert.core.images import read_rgb

    out: dict[str, Any] = {}
    for name, src in cases.items():
        c, failures = got.get(name) or {}, []
        stem = Path(src).stem
        if not c or c.get("embed_error") or not c.get("file"):
            out[name] = {**c, "failures": [f"not embedded: {c.get('embed_error') or 'no result'}"]}
            continue
        if c.get("download_name") != f"{stem}-watermarked.png":
            failures.append(f"download named {c.get('download_name')!r}, not {stem}-watermarked.png")
        # Asked while it works: a small photo can finish before the question arrives, the large one cannot.
        if name == "large" and (not c.get("disabled_while_working") or not c.get("progress_while_working")):
            failures.append("the Embed button stayed enabled, or no progress was shown, while the page worked")
        if c.get("max_gap_ms", 1e9) > MAX_GAP_MS:
            failures.append(f"the page froze for {c.get('max_gap_ms'):.0f} ms (at most {MAX_GAP_MS})")
        with Image.open(c["file"]) as im, Image.open(src) as s:
            upright = ImageOps.exif_transpose(s)
            if im.size != upright.size or read_rgb(src).shape[1:] != (im.size[1], im.size[0]):
                failures.append(f"came back {im.size[0]}x{im.size[1]}, not {upright.size[0]}x{upright.size[1]} as shown (EXIF orientation)")
            if s.mode == "RGBA" and (im.mode != "RGBA" or not np.array_equal(np.asarray(im)[..., 3], np.asarray(s)[..., 3])):
                failures.append("the transparency did not come back untouched")
            icc, make = s.info.get("icc_profile"), s.getexif().get(0x010F)
            if icc and im.info.get("icc_profile") != icc:
                failures.append("the colour profile (ICC) did not come back")
            if make and (im.getexif().get(0x010F) != make or im.getexif().get(0x0112, 1) != 1):
                failures.append("the EXIF did not come back (with orientation 1: the saved pixels are upright)")
            if s.mode == "L" and (im.mode not in ("RGB", "RGBA") or "saved as 8-bit RGB" not in c.get("download_info", "")):
                failures.append(f"a grayscale photo came back {im.mode} without the page saying it is saved as RGB")
        out[name] = {**c, "failures": failures}
    return out


def refuse_unverified(bundle: Path, allow_unverified: bool) -> list[str]:
    """The bundle's files that are not the verified ones (changed since the manifest, or shipped unverified):
    UnverifiedFileError unless ``allow_unverified``; the list either way."""
    bad = check_manifest(bundle) + unverified_files(bundle, "extractor") + unverified_files(bundle, "embedder")
    if bad and not allow_unverified:
        raise UnverifiedFileError(
            f"web-check: {bundle} holds files that are not the verified ones: {'; '.join(bad[:5])}. It checks verified files "
            "only; --allow-unverified (ALLOW_UNVERIFIED=1) runs them anyway and the report says so"
        )
    return bad


def judge_backend(run: dict[str, Any], golden: dict[str, Any], egolden: dict[str, Any]) -> dict[str, Any]:
    """Every file one backend ran (``goldenRun``'s result), judged; files it could not load named."""
    b: dict[str, Any] = {
        "threads": run.get("threads"),
        "not_loadable": run.get("not_loadable", {}),
        "extractor": {v: judge_extractor_run(golden[v], x) for v, x in run.get("extractor", {}).items()},
        "embedder": {v: judge_embedder_run(egolden[v], x) for v, x in run.get("embedder", {}).items()},
        "failures": [],
    }
    for part, names in (("extractor", golden), ("embedder", egolden)):
        for v in names:
            if v not in b[part]:
                b["failures"].append(f"{names[v]['file']}: {b['not_loadable'].get(names[v]['file'], 'not run')}")
    for part in ("extractor", "embedder"):
        fp32 = (b[part].get("fp32") or {}).get("median_ms")
        for f in b[part].values():
            f["ratio_to_fp32"] = round(f["median_ms"] / fp32, 2) if fp32 and f.get("median_ms") else None
            b["failures"] += [f"{f['file']}: {x}" for x in f["failures"]]
    return b


def _one_browser(name: str, b: Any, url: str, tmp: Path, args: list[str], ctx: tuple, env: dict[str, str] | None = None) -> dict[str, Any]:
    """One browser through web/check.mjs (the golden vectors on each backend, then the page end to end), judged:
    its report entry, with its failures. ``ctx``: (bundle, model.json, golden, embedder golden, message, backends)."""
    bundle, model, golden, egolden, message, backends = ctx
    out = tmp / f"{name}.json"
    t0 = time.time()
    with working(f"{name}: the bundle's files on the golden vectors, then the page end to end"):
        r = subprocess.run(
            ["node", str(WEB / "check.mjs"), name, str(b.executable), url, str(out), *args],
            capture_output=True,
            text=True,
            env={**os.environ, **b.env, **(env or {})},
            timeout=BROWSER_TIMEOUT_S,
        )
    if not out.is_file():
        raise WebCheckError(f"{name} ({b.executable}) did not run: {(r.stderr or r.stdout).strip()[-500:]}")
    got = json.loads(out.read_text())
    entry: dict[str, Any] = {"version": got.get("version"), "seconds": round(time.time() - t0, 1), "failures": []}
    if got.get("error"):
        entry["failures"].append(f"the page: {got['error']}")
    g = got.get("golden") or {}
    entry.update(threads=g.get("threads"), webgpu_adapter=g.get("webgpu"), backends={})
    for backend, run in (got.get("backends") or {}).items():
        if run.get("error"):
            entry["failures"].append(f"{backend}: the golden run failed: {run['error']}")
            continue
        entry["backends"][backend] = judge_backend(run, golden, egolden)
        entry["failures"] += [f"{backend}: {x}" for x in entry["backends"][backend]["failures"]]
    if "webgpu" in backends and not g.get("webgpu"):
        entry["backends"]["webgpu"] = {"no_adapter": f"{name} has no WebGPU adapter here: the page runs WASM"}
    if got.get("golden") and (got.get("e2e") or {}).get("skipped"):
        entry["page"] = {"skipped": got["e2e"]["skipped"]}
    elif got.get("golden"):
        entry["page"] = judge_page(bundle, model, got.get("e2e") or {}, message)
        entry["failures"] += entry["page"]["failures"]
        cases = json.loads((env or {}).get("VIDEOSEAL_WEB_CASES", "{}"))
        entry["page"]["cases"] = judge_cases(cases, (got.get("e2e") or {}).get("cases") or {})
        entry["failures"] += [f"page, {k}: {x}" for k, c in entry["page"]["cases"].items() for x in c["failures"]]
    return entry


def web_check(
    opts: RunOptions,
    bundle: Path,
    photo: Path,
    browsers: tuple[str, ...] = ("chromium", "firefox"),
    backends: tuple[str, ...] = ("wasm", "webgpu"),
    report_dir: Path | None = None,
) -> dict[str, Any]:
    """Every browser, every backend the page uses, on ``bundle`` (``make package``'s, of the run's model); the report in
    ``report_dir`` (default the model's folder); WebCheckError listing the failures. UnverifiedFileError, before any
    browser runs, for files that are not the verified ones (unless the run allows them). The model's folder also lends
    the files a bundle never holds (``NOT_IN_BROWSERS``), where it has them, to report whether a browser loads them."""
    unverified = refuse_unverified(bundle, opts.allow_unverified)
    model_dir = opts.model_dir.path
    report_dir = report_dir or opts.model_dir.path
    model = json.loads((bundle / "model.json").read_text())
    golden = json.loads((bundle / "golden" / "golden.json").read_text())["variants"]
    egolden = json.loads((bundle / "golden" / "embedder" / "golden.json").read_text())["variants"] if model.get("embedder") else {}
    with working("setting up LiteRT.js and the browsers (once per machine)"):
        ensure_node_modules()
        found = ensure_browsers(browsers)
    message = "".join(str(b) for b in np.random.default_rng(7).integers(0, 2, model["nbits"]))
    # A file kept under its failed name (int8-full on random weights) is tried all the same: what is asked is whether it loads.
    extra = [f.name for n in NOT_IN_BROWSERS for f in (model_dir / n, failed_path(model_dir / n)) if f.is_file()][: len(NOT_IN_BROWSERS)]
    report: dict[str, Any] = {
        "model_id": model["model_id"],
        "random_init": model["random_init"],
        "machine": machine_description(),
        "packages": {**versions(), **json.loads((WEB / "package.json").read_text())["dependencies"]},
        "photo": photo.name,
        "message": message,
        "unverified_files": unverified,
        "browsers": {},
    }
    failures: list[str] = []
    srv, url = serve_in_background(bundle, model_dir)
    try:
        with tempfile.TemporaryDirectory(prefix="web-check-") as tmp:
            not_image = Path(tmp) / "notes.png"
            not_image.write_text("these are notes, not a picture\n")
            cases = photo_cases(photo, Path(tmp)) if model.get("embedder") else {}
            report_dir.mkdir(parents=True, exist_ok=True)
            for name, b in found.items():
                cmd = [str(photo.resolve()), str(not_image), message, ",".join(backends), *[f"{url}/extra/{n}" for n in extra]]
                env = {"VIDEOSEAL_WEB_CASES": json.dumps(cases), "VIDEOSEAL_WEB_SHOTS": str(report_dir)}
                entry = _one_browser(name, b, url, Path(tmp), cmd, (bundle, model, golden, egolden, message, backends), env)
                failures += [f"{name}: {x}" for x in entry["failures"]]
                report["browsers"][name] = entry
    finally:
        srv.shutdown()
    report.update(passed=not failures, failures=failures, screenshots=[str(p) for p in sorted(report_dir.glob("page-*.png"))])
    report_dir.mkdir(parents=True, exist_ok=True)
    write_json(report_dir / "web-check.json", report)
    write_text(report_dir / "web-check.md", render(report))
    if failures:
        raise WebCheckError("web-check: " + "; ".join(failures[:5]) + (f"; and {len(failures) - 5} more" if len(failures) > 5 else ""))
    return report


def render(r: dict[str, Any]) -> str:
    lines = [
        f"# web-check: {r['model_id']} in browsers (LiteRT.js: WASM and WebGPU)",
        "",
        ("**RANDOM WEIGHTS.** " if r["random_init"] else "")
        + (f"**UNVERIFIED FILES (--allow-unverified): {'; '.join(r['unverified_files'])}.** " if r.get("unverified_files") else "")
        + f"Measured on {r['machine']}; packages {', '.join(f'{k} {v}' for k, v in r['packages'].items())}. Each file on each backend "
        "the page uses, judged by the rule against PyTorch's outputs on the bundle's golden inputs (docs/verification.md); its "
        f"difference from the x86 outputs of the same file is reported beside the runtime bound ({ARM_MAX_STEPS} output steps of an "
        "integer output, 1% of PyTorch's RMS of a float one), gated on ARM64 and in the bundle's self-tests, not here (other "
        "kernels). A file WebGPU cannot run falls back to WASM, as the page does (column `ran on`). Times: median of a few "
        "runs on one input, in the same page; ratio to fp32 on the same backend (WebGPU here is SwiftShader, a software adapter: "
        "its times say nothing of a GPU).",
        "",
        "| browser | backend | file | ran on | rule against PyTorch | max diff to x86 (the bound, reported) | median ms | x fp32 | verdict |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, b in r["browsers"].items():
        for backend, x in b.get("backends", {}).items():
            if "no_adapter" in x:
                lines.append(f"| {name} {b['version']} | {backend} | - | - | {x['no_adapter']} | | | | not run |")
                continue
            for part in ("extractor", "embedder"):
                for f in x.get(part, {}).values():
                    d = f["to_x86"]
                    ran = f["ran_on"] + (f" (fell back: {f['fell_back']})" if f.get("fell_back") else "")
                    ms = "-" if f["median_ms"] is None else f"{f['median_ms']:.1f}"
                    lines.append(
                        f"| {name} {b['version']} | {backend} | {f['file']} | {ran} | {gate_line(f['gate'])} | "
                        f"{d['max_abs_diff']:.3g} ({d['bound']:.3g}) | {ms} | {f.get('ratio_to_fp32') or '-'} | "
                        f"{'FAIL' if f['failures'] else 'pass'} |"
                    )
            for file, why in (x.get("not_loadable") or {}).items():
                lines.append(f"| {name} {b['version']} | {backend} | {file} | not loadable: {why} | | | | | reported |")
    lines += ["", "## The page, end to end (choose a photo, embed, download, detect; WASM)", ""]
    for name, b in r["browsers"].items():
        p = b.get("page") or {}
        if p.get("skipped"):
            lines.append(f"- **{name}**: not run ({p['skipped']})")
            continue
        d, u = p.get("detect_downloaded") or {}, p.get("detect_unmarked") or {}
        lines.append(
            f"- **{name}** ({b['seconds']} s, {'threads' if b.get('threads') else 'one thread'}, WebGPU adapter: {bool(b.get('webgpu_adapter'))}): "
            f"embedded at {p.get('psnr_db')} dB PSNR; downloaded PNG: {d.get('verdict')}, {d.get('accuracy')}, p {d.get('pvalue')}, "
            f"bits agree with the Python runner {p.get('bits_agreement_with_python')}; unmarked photo: {u.get('verdict')} "
            f'(p {u.get("pvalue")}); a non-image: "{p.get("not_an_image")}"'
        )
    lines += ["", "## The photos people bring (embedded on the page, downloaded, judged)", ""]
    for name, b in r["browsers"].items():
        for case, c in ((b.get("page") or {}).get("cases") or {}).items():
            lines.append(
                f"- **{name}, {case}**: `{c.get('download_name')}` {c.get('download_info', '')}; longest stall of the page's thread "
                f"{c.get('max_gap_ms', 0):.0f} ms while the worker ran ({c.get('progress_done', '')}); "
                + ("ok" if not c["failures"] else "FAILED: " + "; ".join(c["failures"]))
            )
    shots = sorted(Path(p).name for p in r.get("screenshots", []))
    if shots:
        lines += ["", "Screenshots beside this report: " + ", ".join(f"`{x}`" for x in shots)]
    lines += ["", "PASSED" if r["passed"] else "FAILED:\n\n" + "\n".join(f"- {x}" for x in r["failures"]), ""]
    return "\n".join(lines)
