"""The browser runtime (``web/``): the tiny pair's bundle in headless Chromium and Firefox ESR through LiteRT.js, on
WASM and WebGPU, judged by the rule against PyTorch on the golden inputs, and the page used end to end; the bad cases
(unverified, tampered and edited files, an unloadable one, a missing browser) by name."""

from __future__ import annotations

import json
import re
import shutil

import pytest

from tests.conftest import locked
from videoseal_litert.core.errors import BrowserSetupError, WebCheckError
from videoseal_litert.core.message import message_hex, parse_message


def tiny_run(out, **kw):
    """The run object of web-check on the tiny pair's bundle, as the command line builds it."""
    from videoseal_litert.convert.options import RunOptions
    from videoseal_litert.models.registry import resolve

    return RunOptions(spec=resolve("tiny"), out=out, **kw)


@pytest.fixture(scope="module")
def tiny_bundle(demo_run, tmp_path_factory):
    """The demo's tiny pair packaged (extractor fp32, int8, int8-dynamic; embedder fp32, int8): (bundle, photo)."""
    from videoseal_litert.calibration_data import pool
    from videoseal_litert.convert.options import RunOptions
    from videoseal_litert.models.registry import resolve
    from videoseal_litert.package.bundle import build_bundle

    out, rc, _ = demo_run
    assert rc == 0
    copy = tmp_path_factory.mktemp("web") / "artifacts"
    with locked(out.parent / ".lock"):
        shutil.copytree(out / "tiny", copy / "tiny")
    dist = copy.parent / "dist"
    build_bundle(RunOptions(spec=resolve("tiny"), out=copy), ("fp32", "int8", "int8-dynamic"), dist, embedder_variants=("fp32", "int8"))
    photo = min(pool.photos("evaluation"), key=lambda p: p["size"][0] * p["size"][1])
    return dist / "tiny", pool.pool_dir() / photo["name"]


@pytest.mark.platforms
def test_tiny_pair_in_chromium_and_firefox(tiny_bundle, pipeline, tmp_path):
    """Every file of the bundle in both browsers, on each backend the page uses (WASM; WebGPU where the browser has an
    adapter: Chromium's SwiftShader here, Firefox ESR none), passes the rule against PyTorch on the golden inputs and
    stays within the runtime bound of the x86 outputs; the page embeds a typed message into a photo of another size,
    the downloaded PNG is detected with the Python runner's bits, the unmarked photo is not, a non-image is a named
    error; an ``int8-full`` file (int8 input) is reported as not loadable in a browser."""
    from videoseal_litert.convert.options import RunOptions
    from videoseal_litert.models.registry import resolve
    from videoseal_litert.web.check import web_check

    bundle, photo = tiny_bundle
    mini = pipeline.quantized("videoseal_1.0-mini")  # a model folder with an int8-full file (int8 input and outputs)
    # The run names the mini, whose model folder lends an int8-full file the bundle never holds (to report it unloadable).
    r = web_check(RunOptions(spec=resolve(str(pipeline.card("videoseal_1.0-mini"))), out=mini.parent), bundle, photo, report_dir=tmp_path)
    assert r["passed"] and set(r["browsers"]) == {"chromium", "firefox"}
    assert set(r["browsers"]["chromium"]["backends"]) == {"wasm", "webgpu"} and "webgpu" not in r["browsers"]["chromium"]["failures"]
    webgpu = r["browsers"]["chromium"]["backends"]["webgpu"]
    assert "no_adapter" not in webgpu and {f["ran_on"] for f in webgpu["extractor"].values()} >= {"webgpu"}
    assert "no_adapter" in r["browsers"]["firefox"]["backends"]["webgpu"]
    for name, b in r["browsers"].items():
        wasm = b["backends"]["wasm"]
        assert set(wasm["extractor"]) == {"fp32", "int8", "int8-dynamic"} and set(wasm["embedder"]) == {"fp32", "int8"}, name
        for backend in (x for x in b["backends"].values() if "no_adapter" not in x):
            for f in [*backend["extractor"].values(), *backend["embedder"].values()]:
                assert f["failures"] == [] and f["gate"]["passed"] and f["median_ms"] > 0 and f["ratio_to_fp32"] > 0, (name, f)
        assert wasm["extractor"]["fp32"]["to_x86"]["max_abs_diff"] < 1e-3  # float kernels: rounding only
        assert "INT8 is not supported" in next(why for f, why in wasm["not_loadable"].items() if f.startswith("int8-full"))
        page = b["page"]
        typed = message_hex(parse_message(r["message"], 48))  # typed as 0/1, shown as hex (the one display form)
        assert page["embedded_bits"] == typed and page["psnr_db"] > 30
        assert page["detect_downloaded"]["verdict"] == "Watermark detected" and page["detect_downloaded"]["pvalue"] < 1e-6
        assert page["bits_agreement_with_python"] == 1.0 and page["detect_downloaded"]["bits"] == typed
        assert page["detect_retyped"]["against"] == "the message typed above" and page["detect_retyped"]["accuracy"].startswith("44/")
        # The photos people bring: named after the source, never frozen, sizes, orientation and transparency kept.
        cases = page["cases"]
        assert set(cases) == {"large", "transparent", "rotated", "grayscale"} and all(not c["failures"] for c in cases.values()), cases
        assert cases["large"]["download_name"] == "large-photo-watermarked.png" and cases["large"]["max_gap_ms"] < 300
        assert (
            "transparency kept" in cases["transparent"]["download_info"] and "colour profile kept" in cases["transparent"]["download_info"]
        )
        assert "EXIF kept, colour profile kept" in cases["rotated"]["download_info"]  # and judge_cases read both back
        assert page["detect_unmarked"]["verdict"] == "Watermark not detected"
        assert page["not_an_image"] == "notes.png is not an image this browser can decode"
    assert (tmp_path / "page-chromium-embedded.png").is_file() and (tmp_path / "page-firefox-detected.png").is_file()
    assert r["browsers"]["chromium"]["page"]["width_at_390"] <= 390
    md = (tmp_path / "web-check.md").read_text()
    assert md.count("| chromium") >= 10 and "| webgpu | int8.tflite | webgpu |" in md and md.rstrip().endswith("PASSED")


def test_tampered_bundle_is_refused_and_judged_by_the_rule_when_allowed(tiny_bundle, tmp_path):
    """A bundle whose files are not the verified ones is refused before any browser runs; with --allow-unverified the
    rule judges it: PyTorch's reference changed on every decision of one golden image (what a wrong file would show)
    fails the int8 file's groups by name, and a file LiteRT.js cannot load fails named; the report is still written."""
    from videoseal_litert.core.errors import UnverifiedFileError
    from videoseal_litert.web.check import web_check

    bundle, photo = tiny_bundle
    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    golden = json.loads((copy / "golden" / "golden.json").read_text())
    vec = golden["variants"]["int8"]["vectors"][1]  # a watermarked golden image
    vec["pytorch"]["bit_logits"] = [-t for t in vec["pytorch"]["bit_logits"]]
    (copy / "golden" / "golden.json").write_text(json.dumps(golden))
    (copy / "int8-dynamic.tflite").write_bytes(b"TFL3" + b"\0" * 60)
    with pytest.raises(UnverifiedFileError, match=r"golden/golden.json: sha256 differs from manifest.json; int8-dynamic.tflite: sha256"):
        web_check(tiny_run(tmp_path), copy, photo, ("chromium",), report_dir=tmp_path / "report")
    with pytest.raises(WebCheckError) as e:
        web_check(tiny_run(tmp_path, allow_unverified=True), copy, photo, ("chromium",), ("wasm",), tmp_path / "report")
    msg = str(e.value)
    flips = re.search(r"chromium: wasm: int8\.tflite: bits: (\d+) of \d+ decisions flipped \(clear", msg)
    assert flips and int(flips.group(1)) >= 40, msg  # nearly all 48 decisions of that image stand clear
    assert "chromium: wasm: int8-dynamic.tflite: int8-dynamic.tflite: LiteRT.js cannot load it" in msg
    assert json.loads((tmp_path / "report" / "web-check.json").read_text())["passed"] is False


@pytest.mark.slow
def test_edited_files_fail_web_check_by_the_rule(demo_run, tmp_path):
    """The tiny pair's int8 extractor edited in its last layer (tests/degrade.py: the mask bias moved, shipped as
    int8; one bit negated, shipped as int8-dynamic) with --allow-unverified, no embedder: web-check refuses the
    bundle, and with --allow-unverified judges both in the browser by the same rule, each failing the group its edit
    breaks (clean photos flagged; one bit inverted); the page, which needs an embedder, is skipped by name."""
    from tests.degrade import negate_bit, shift_mask_bias
    from videoseal_litert.calibration_data import pool
    from videoseal_litert.convert.options import RunOptions
    from videoseal_litert.core.errors import UnverifiedFileError
    from videoseal_litert.models.registry import resolve
    from videoseal_litert.package.bundle import build_bundle
    from videoseal_litert.web.check import web_check

    out, rc, _ = demo_run
    assert rc == 0
    photo = pool.pool_dir() / min(pool.photos("evaluation"), key=lambda p: p["size"][0] * p["size"][1])["name"]
    copy = tmp_path / "artifacts"
    with locked(out.parent / ".lock"):
        shutil.copytree(out / "tiny", copy / "tiny", ignore=shutil.ignore_patterns("evaluate", "robustness"))
    d = copy / "tiny"
    shift_mask_bias(d / "int8.tflite", d / "int8.tflite", 8.0)
    negate_bit(d / "int8.tflite", d / "int8-dynamic.tflite", 3)  # from the original int8 (mask edit reverted below)
    shift_mask_bias(d / "int8-dynamic.tflite", d / "int8-dynamic.tflite", -8.0)
    dist = tmp_path / "dist"
    build_bundle(RunOptions(spec=resolve("tiny"), out=copy, allow_unverified=True), ("int8", "int8-dynamic"), dist, embedder_variants=())
    with pytest.raises(UnverifiedFileError, match="int8.tflite: not verified"):
        web_check(tiny_run(tmp_path), dist / "tiny", photo, ("chromium",), report_dir=tmp_path / "report")
    with pytest.raises(WebCheckError) as e:
        web_check(tiny_run(tmp_path, allow_unverified=True), dist / "tiny", photo, ("chromium",), ("wasm",), tmp_path / "report")
    msg = str(e.value)
    assert "chromium: wasm: int8.tflite: detection: " in msg and "inputs PyTorch finds unwatermarked flagged" in msg, msg
    assert "chromium: wasm: int8-dynamic.tflite: bits: " in msg, msg
    rep = json.loads((tmp_path / "report" / "web-check.json").read_text())
    assert rep["browsers"]["chromium"]["page"]["skipped"].startswith("the bundle has no embedder")


def test_missing_browser_and_unknown_browser_are_named(monkeypatch, tmp_path):
    from videoseal_litert.web.browsers import ensure_browsers

    monkeypatch.setenv("CHROMIUM", str(tmp_path / "no-such-chromium"))
    with pytest.raises(BrowserSetupError, match="CHROMIUM=.*no-such-chromium does not exist"):
        ensure_browsers(("chromium",))
    with pytest.raises(BrowserSetupError, match="unknown browser.*safari"):
        ensure_browsers(("safari",))


def test_page_and_route_agree_with_the_python_route():
    """The page's port of the official route (web/watermark.js) holds the same constants and steps as runtime/route.py:
    the JND kernels, the antialiased resize's support rule and the blend (a change to one must reach the other)."""
    from pathlib import Path

    js = (Path(__file__).resolve().parent.parent / "web" / "watermark.js").read_text()
    for needle in (
        "const KLUM = [[1, 1, 1, 1, 1], [1, 2, 2, 2, 1], [1, 2, 0, 2, 1], [1, 2, 2, 2, 1], [1, 1, 1, 1, 1]];",
        "const KX = [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]];",
        "support = Math.max(scale, 1.0)",
        "0.117 * ((16 * cm ** 2.4) / (cm * cm + 26 * 26))",
        "route.scaling_i * img.data[i] + route.scaling_w * r",
    ):
        assert needle in js, needle


def test_the_launcher_starts_an_unpacked_browser_with_its_libraries(monkeypatch, tmp_path):
    """`make web-setup` prints a command that starts the browser as it is: for an unpacked one (which needs its libraries
    on LD_LIBRARY_PATH) a script that sets them, keeping the caller's own LD_LIBRARY_PATH after them."""
    import subprocess

    from videoseal_litert.web.browsers import Browser, launcher

    monkeypatch.setenv("VIDEOSEAL_BROWSER_CACHE", str(tmp_path / "cache"))
    lib = tmp_path / "cache" / "root" / "usr" / "lib" / "x86_64-linux-gnu"
    lib.mkdir(parents=True)
    (lib / "libfake.so.1").write_bytes(b"")
    probe = tmp_path / "probe.sh"
    probe.write_text('#!/bin/sh\necho "$LD_LIBRARY_PATH|$*"\n')
    probe.chmod(0o755)
    assert launcher(Browser("chromium", probe, {})) == probe  # a system binary needs nothing
    script = launcher(Browser("chromium", probe, {"LD_LIBRARY_PATH": str(lib)}))
    assert script == tmp_path / "cache" / "bin" / "chromium"
    r = subprocess.run([str(script), "--version"], capture_output=True, text=True, env={"LD_LIBRARY_PATH": "/mine", "PATH": "/bin"})
    assert r.stdout.strip() == f"{lib}:/mine|--version"


def test_serving_names_a_taken_port_and_stops_cleanly_on_ctrl_c(tiny_bundle, tmp_path):
    """`make web` on a port another program holds: a named error with the port and PORT=; serving stopped by Ctrl-C
    (SIGINT) ends with exit 0 and says so, not as an interrupted job."""
    import signal
    import socket
    import subprocess
    import sys

    from videoseal_litert.core.errors import PortInUseError
    from videoseal_litert.web.serve import server

    bundle, _ = tiny_bundle
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(PortInUseError, match=rf"port {port} on 127\.0\.0\.1 is already in use.*make web PORT={port + 1}"):
            server(bundle, port=port)
    cmd = [sys.executable, "-m", "videoseal_litert", "web", "--dist", str(bundle.parent), "--port", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith(f"serving {bundle} at http://127.0.0.1:"), line
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0 and "stopped serving" in out and "error" not in err, (proc.returncode, out, err)
