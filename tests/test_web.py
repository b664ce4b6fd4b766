"""The browser runtime (``web/``): the tiny pair's bundle in headless Chromium and Firefox ESR through LiteRT.js,
judged by the rule against the golden vectors, and the page used end to end; the bad cases by name."""

from __future__ import annotations

import json
import re
import shutil

import pytest

from tests.conftest import locked
from videoseal_litert.core.errors import BrowserSetupError, WebCheckError


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


def test_tiny_pair_in_chromium_and_firefox(tiny_bundle, pipeline, tmp_path):
    """Every file of the bundle in both browsers matches the golden vectors by the rule (integer outputs within two
    output steps); the page embeds a typed message into a photo of another size, the downloaded PNG is detected
    with the Python runner's bits, the unmarked photo is not, a non-image is a named error; an ``int8-full`` file
    (int8 input) is reported as not loadable in a browser."""
    from videoseal_litert.web.check import web_check

    bundle, photo = tiny_bundle
    mini = pipeline.quantized("videoseal_1.0-mini")  # a model folder with an int8-full file (int8 input and outputs)
    r = web_check(bundle, mini, tmp_path, photo)
    assert r["passed"] and set(r["browsers"]) == {"chromium", "firefox"}
    for name, b in r["browsers"].items():
        assert set(b["extractor"]) == {"fp32", "int8", "int8-dynamic"} and set(b["embedder"]) == {"fp32", "int8"}, name
        for f in [*b["extractor"].values(), *b["embedder"].values()]:
            assert f["failures"] == [] and f["median_ms"] > 0 and f["ratio_to_fp32"] > 0, (name, f)
        int8 = b["extractor"]["int8"]
        # The demo's int8 keeps its last ops float (accuracy control): no output step there, the noise cap bounds it.
        assert int8["clear_flips"] == [] and (int8["output_step"] is None or int8["diff_in_output_steps"] <= 2)
        assert b["extractor"]["fp32"]["max_abs_diff"] < 1e-3  # float kernels: rounding only
        assert "INT8 is not supported" in b["not_loadable"]["int8-full.tflite"]
        page = b["page"]
        assert page["embedded_bits"] == r["message"] and page["psnr_db"] > 30
        assert page["detect_downloaded"]["verdict"] == "Watermark detected" and page["detect_downloaded"]["pvalue"] < 1e-6
        assert page["bits_agreement_with_python"] == 1.0 and page["detect_downloaded"]["bits"] == r["message"]
        assert page["detect_unmarked"]["verdict"] == "Watermark not detected"
        assert page["not_an_image"] == "notes.png is not an image this browser can decode"
    md = (tmp_path / "web-check.md").read_text()
    assert md.count("| chromium") >= 6 and md.count("| firefox") >= 6 and md.rstrip().endswith("PASSED")


def test_tampered_golden_vector_and_unloadable_file_fail_by_name(tiny_bundle, tmp_path):
    """A golden vector whose decisions are all flipped (what a changed file or a wrong kernel gives) and a bundle file
    LiteRT.js cannot load each fail web-check, named; the report is still written."""
    from videoseal_litert.web.check import web_check

    bundle, photo = tiny_bundle
    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    golden = json.loads((copy / "golden" / "golden.json").read_text())
    vec = golden["variants"]["int8"]["vectors"][0]
    vec["bit_logits"] = [-t for t in vec["bit_logits"]]
    (copy / "golden" / "golden.json").write_text(json.dumps(golden))
    (copy / "int8-dynamic.tflite").write_bytes(b"TFL3" + b"\0" * 60)
    with pytest.raises(WebCheckError) as e:
        web_check(copy, None, tmp_path / "report", photo, ("chromium",))
    msg = str(e.value)
    flips = re.search(r"chromium: int8\.tflite: max \|diff\| [\d.]+ against the golden vectors' tolerance [\d.]+; (\d+) bits clear", msg)
    assert flips and int(flips.group(1)) >= 24, msg  # most of the 48 flipped decisions stand clear of the tolerance
    assert "chromium: int8-dynamic.tflite: int8-dynamic.tflite: LiteRT.js cannot load it" in msg
    assert json.loads((tmp_path / "report" / "web-check.json").read_text())["passed"] is False


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
