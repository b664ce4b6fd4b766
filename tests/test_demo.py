"""The demo on the shipped tiny pair: real watermarks decoded by PyTorch, FP32 and INT8 TFLite."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from tests.conftest import locked
from videoseal_litert.calibration_data.photos import HELDOUT_PHOTOS, heldout_paths
from videoseal_litert.calibration_data.pool import photos as pool_photos
from videoseal_litert.core.errors import UnverifiedFileError, UsageError, VerificationError
from videoseal_litert.core.message import message_hex, parse_message
from videoseal_litert.core.metrics import binomial_pvalue
from videoseal_litert.demo.watermark import run_demo


def demo_opts(out, images):
    """The demo's run object, as ``make demo IMAGES=`` builds it."""
    from videoseal_litert.convert.options import RunOptions
    from videoseal_litert.models.registry import resolve

    return RunOptions(spec=resolve("tiny"), out=out, images=images)


def test_binomial_pvalue():
    assert binomial_pvalue(4, 4) == 1 / 16
    assert binomial_pvalue(3, 4) == 5 / 16
    assert binomial_pvalue(0, 4) == 1.0


@pytest.fixture(scope="module")
def demo(demo_run, tmp_path_factory):
    """The run's demo (a fresh process, as `make demo`): a private copy of its OUT (these tests run
    stages on it, which the other test worker must not meet) and its report."""
    out, rc, lines = demo_run
    assert rc == 0, "\n".join(lines[-40:])
    copy = tmp_path_factory.mktemp("demo-copy") / "artifacts"
    with locked(out.parent / ".lock"):
        shutil.copytree(out, copy)
    return copy, json.loads((copy / "demo" / "demo.json").read_text())


@pytest.mark.slow
def test_demo_decodes_real_watermarks_as_pytorch_does(demo):
    out, saved = demo
    assert saved["random_init"] is False and saved["passed"] is True and saved["rejected"] == []
    n_eval = len(pool_photos("evaluation"))
    assert n_eval >= 30 and saved["num_images"] == 2 * n_eval and saved["nbits"] == 48  # the evaluation split x 2 messages
    assert {nm.split(":")[0] for nm in saved["image_names"]} >= {p.rsplit(".", 1)[0] for p in HELDOUT_PHOTOS}
    # The targets, on photos the pair never saw and nothing was chosen on.
    assert saved["pytorch_bit_accuracy"] >= 0.99 and saved["int8_bit_accuracy"] >= 0.99
    assert abs(saved["int8_bit_accuracy"] - saved["pytorch_bit_accuracy"]) <= 0.001
    assert saved["psnr_db_min"] >= 32.0
    assert saved["fp32_bit_agreement_with_pytorch"] == 1.0 and saved["fp32_bit_accuracy"] == saved["pytorch_bit_accuracy"]
    assert saved["int8_bit_agreement_with_pytorch"] >= 0.999
    # Unwatermarked photos match a random message no better than chance would.
    assert len(saved["false_positive_pvalues"]) == 2 * n_eval and min(saved["false_positive_pvalues"]) >= 1e-3
    # Every rate with its 95% Wilson interval, which holds the rate; agreement by margin sums to all bits.
    for name, r in saved["rates"].items():
        assert r["n"] > 0 and r["k"] == round(r["rate"] * r["n"]) and r["wilson95"][0] <= r["rate"] <= r["wilson95"][1], name
    agree = saved["rates"]["int8_agreement_with_pytorch"]
    assert agree["n"] == 2 * n_eval * 48 and agree["wilson95"][0] < 1.0  # 3168 bits cannot prove 100%
    assert sum(b["n"] for b in saved["int8_agreement_by_margin"]) == agree["n"]
    assert max(saved["watermarked_pvalue_max"].values()) < 1e-9
    assert (out / "tiny" / "int8.tflite").is_file() and (out / "tiny" / "int8-dynamic.tflite").is_file()


def test_demo_on_your_own_photos_at_any_size(demo, tmp_path, capsys):
    out, _ = demo
    photos = tmp_path / "photos"
    photos.mkdir()
    src = heldout_paths()
    shutil.copy(src[0], photos / "a.png")  # 512x512
    Image.open(src[1]).convert("RGB").resize((411, 287)).save(photos / "b.jpg", quality=95)  # odd, not square
    (photos / "notes.txt").write_text("not an image")
    from tests.test_bad_inputs import png_declaring

    (photos / "bomb.png").write_bytes(png_declaring(30000, 30000))  # refused, named, counted; the rest goes on
    capsys.readouterr()
    builtin_report = (out / "demo" / "demo.md").read_text()
    r = run_demo(demo_opts(out, photos))
    # Its own report folder, named after the photos' folder, with the photos watermarked at their own sizes; the
    # held-out photos' report is left as it was.
    assert (out / "demo" / "demo.md").read_text() == builtin_report and (out / "demo" / "photos" / "demo.md").is_file()
    saved = {p.name: Image.open(p).size for p in (out / "demo" / "photos" / "watermarked").iterdir()}
    assert saved == {"a-watermarked.png": (512, 512), "b-watermarked.png": (411, 287)}
    assert r["num_images"] == 4 and r["image_names"][0] == "a.png#0"
    assert sorted(x["file"] for x in r["rejected"]) == ["bomb.png", "notes.txt"]
    assert "skipped bomb.png: refused as a possible decompression bomb" in capsys.readouterr().out
    assert r["pytorch_bit_accuracy"] >= 0.99 and r["int8_bit_agreement_with_pytorch"] >= 0.999
    assert r["psnr_db_min"] >= 32.0


def test_demo_gate_failure_is_a_named_error(demo, tmp_path, monkeypatch):
    """A gate the demo misses (here one no file can meet: INT8's accuracy within -1 pp of PyTorch's) is a named
    error naming it; on one photo of your own, as `make demo IMAGES=` runs."""
    out, _ = demo
    import videoseal_litert.demo.watermark as dw
    from videoseal_litert.calibration_data.photos import heldout_paths

    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(heldout_paths()[0], photos / "p.png")
    monkeypatch.setitem(dw.GATES, "max_int8_accuracy_pp", -1.0)
    with pytest.raises(VerificationError, match="int8 bit accuracy vs PyTorch"):
        run_demo(demo_opts(out, photos))


def test_demo_all_tflite_row(demo):
    """The whole job on TFLite: INT8 embedder, INT8 extractor, within 0.1 pp of all-PyTorch."""
    out, report = demo
    a = report["all_tflite"]
    assert abs(a["bit_accuracy"] - a["all_pytorch_bit_accuracy"]) <= 0.001 and a["bit_accuracy"] >= 0.99
    assert a["psnr_db_min"] >= 32.0
    assert report["gates"]["INT8 embedder + INT8 extractor vs all-PyTorch"]["passed"]
    assert "INT8 TFLite embedder -> INT8 TFLite extractor" in (out / "demo" / "demo.md").read_text()


def test_bundle_ships_both_halves(demo, tmp_path):
    import subprocess
    import sys

    import numpy as np

    from videoseal_litert.convert.options import RunOptions
    from videoseal_litert.models.registry import resolve
    from videoseal_litert.package.bundle import build_bundle
    from videoseal_litert.video.route_graph import build_route_graph

    out, _ = demo
    opts = RunOptions(spec=resolve("tiny"), out=out)
    build_route_graph(RunOptions(spec=resolve("tiny"), out=out, threads=1), 320, 256, runs=1)  # a small frame size
    build_bundle(opts, ("int8", "fp32"), tmp_path / "dist")
    b = tmp_path / "dist" / "tiny"
    manifest = json.loads((b / "manifest.json").read_text())
    for f in (
        "embedder-int8.tflite",
        "embedder-fp32.tflite",
        "run_embedder.py",
        "route.py",
        "litert_runner.py",
        "android/EmbedWatermark.kt",
        "golden/embedder/golden.json",
        "route-320x256.tflite",
        "golden/route/frame-320x256.png",
        "golden/route/residual-320x256.f32",
        "golden/route/watermarked-320x256.png",
    ):
        assert f in manifest["files"], f
    model = json.loads((b / "model.json").read_text())
    assert model["embedder"]["contract"]["inputs"][1] == {
        "name": "message",
        "shape": [1, 48],
        "dtype": "float32",
        "meaning": "the message bits as float32 0.0 / 1.0",
        "range": [0.0, 1.0],
    }
    golden = json.loads((b / "golden" / "embedder" / "golden.json").read_text())["variants"]["int8"]["vectors"]
    assert any("320x240" in v["image"] for v in golden)  # the route for other sizes is in the self-test
    assert np.load(b / golden[-1]["watermarked"]).shape == (240, 320, 3)
    # The runner's self-test, without torch in the process.
    code = "import runpy, sys; sys.argv = ['run_embedder.py', '--selftest']\ntry:\n    runpy.run_path('run_embedder.py', run_name='__main__')\nexcept SystemExit as e:\n    assert 'torch' not in sys.modules; raise"
    r = subprocess.run([sys.executable, "-c", code], cwd=b, capture_output=True, text=True)
    assert r.returncode == 0 and "all embedder golden vectors pass the rule" in r.stdout and r.stdout.count("ok  ") == 7, (
        r.stdout + r.stderr
    )
    assert "ok   route-320x256.tflite: the route at 320x256 against its golden output" in r.stdout
    assert model["embedder"]["route_graphs"][0]["inputs"] == {"frame": [1, 256, 320, 3], "residual": [1, 256, 256, 3]}
    assert "`route-320x256.tflite`" in (b / "README.md").read_text()
    # The golden arrays also as raw little-endian float32 of the stated shape (for readers without numpy).
    v = golden[-1]
    raw = np.fromfile(b / v["watermarked_f32"], "<f4").reshape(v["shape"])
    assert np.array_equal(raw, np.load(b / v["watermarked"])) and v["message_hex"] == message_hex(parse_message(v["message"], 48))
    # One message format: the bundle's embedder takes the hex the extractor prints, and the extractor reads it back.
    hx = "e07ff66e5007"
    photo = b / "golden" / golden[-1]["image"]
    r = subprocess.run([sys.executable, "run_embedder.py", "embedder-int8.tflite", str(photo), "--bits", hx.upper(), "--out", str(tmp_path / "m.png")],
                       cwd=b, capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0 and f"message {hx} (48 bits)" in r.stdout, r.stdout + r.stderr
    r = subprocess.run([sys.executable, "run_extractor.py", "int8.tflite", str(tmp_path / "m.png")], cwd=b, capture_output=True, text=True)
    assert f"bits (48) {hx}" in r.stdout and "ran on the Python interpreter" in r.stdout, r.stdout + r.stderr
    # The native runner reads the photo itself, as the phone shows it: the watermarked PNG stored turned a quarter (EXIF
    # orientation 6 says how to show it upright) and as a JPEG decode the same hex through the LiteRT C library.
    from videoseal_litert.runtime.native_build import build_x86

    marked = Image.open(tmp_path / "m.png")
    exif = Image.Exif()
    exif[0x0112] = 6
    marked.transpose(Image.Transpose.ROTATE_90).save(tmp_path / "m-turned.png", exif=exif.tobytes())
    marked.save(tmp_path / "m.jpg", quality=95)
    for f, orientation in (("m-turned.png", 6), ("m.jpg", 1)):
        r = subprocess.run(
            [str(build_x86()), "int8.tflite", "--image", str(tmp_path / f), str(tmp_path)], cwd=b, capture_output=True, text=True
        )
        line = json.loads(r.stdout.strip().splitlines()[-1])
        assert line["message"] == hx and line["image"]["exif_orientation"] == orientation, (f, line)
        assert (line["image"]["width"], line["image"]["height"]) == marked.size
    r = subprocess.run(
        [sys.executable, "run_extractor.py", "int8.tflite", str(tmp_path / "m-turned.png")], cwd=b, capture_output=True, text=True
    )
    assert f"bits (48) {hx}" in r.stdout, r.stdout + r.stderr  # the Python runner turns it the same way
    r = subprocess.run([sys.executable, "run_embedder.py", "embedder-int8.tflite", str(photo), "--bits", "e07f", "--out", str(tmp_path / "x.png")],
                       cwd=b, capture_output=True, text=True)  # fmt: skip
    assert (
        r.returncode == 2 and "--bits 'e07f' is not a 48-bit message: give 12 hex digits" in r.stderr and not (tmp_path / "x.png").exists()
    )
    # A changed golden output fails the self-test: the embedder's, and the route graph's (a corner 3 levels brighter).
    wm = b / "golden" / "route" / "watermarked-320x256.png"
    px = np.asarray(Image.open(wm)).copy()
    px[:8, :8] = np.clip(px[:8, :8].astype(int) + 3, 0, 255)
    Image.fromarray(px).save(wm)
    r = subprocess.run([sys.executable, "run_embedder.py", "--selftest"], cwd=b, capture_output=True, text=True)
    assert r.returncode == 1 and "FAIL route-320x256.tflite" in r.stdout and "levels from the golden output" in r.stdout, r.stdout
    np.save(b / golden[0]["watermarked"], np.load(b / golden[0]["watermarked"]) + 0.1)
    r = subprocess.run([sys.executable, "run_embedder.py", "--selftest"], cwd=b, capture_output=True, text=True)
    assert r.returncode == 1 and "FAIL int8" in r.stdout
    # An embedder file whose verification failed is refused when asked for.
    rep = out / "tiny" / "verify-embedder-int8.json"
    original = rep.read_text()
    try:
        rep.write_text(json.dumps({**json.loads(original), "passed": False, "failures": ["forced"]}))
        with pytest.raises(UnverifiedFileError, match="embedder-int8.tflite failed verification"):
            build_bundle(opts, ("fp32",), tmp_path / "dist2", embedder_variants=("int8",))
        assert not (tmp_path / "dist2" / "tiny").exists()
    finally:
        rep.write_text(original)


def test_accuracy_control_on_the_trained_pair(demo, tmp_path):
    """The demo's INT8 extractor was quantized under the accuracy control (target: every validation bit):
    the report names the groups kept float, the curve reaches the target and the rule on the validation split
    (attacked views included), and the file holds those ops in float."""
    from videoseal_litert.runtime.litert_runner import LiteRTRunner

    out, _ = demo
    q = json.loads((out / "tiny" / "quantize.json").read_text())["variants"]["int8"]
    high = q["accuracy_control"]
    assert high["target"] == 1.0 and high["validation_inputs"] >= 40  # the validation split's watermarked views
    assert json.loads((out / "tiny" / "control-int8.json").read_text())["random_init"] is False
    assert high["reached"] and high["curve"][-1]["value"] == 1.0 and high["curve"][-1]["rule_failures"] == 0
    assert high["start"]["failures"]  # all-INT8 failed the rule on the validation split: the control acted
    assert high["kept_float_groups"] == [c["added"] for c in high["curve"][1:]]
    # The kept ops run float in the file: their output tensors are float32, not int8.
    details = {d["name"]: d for d in LiteRTRunner(out / "tiny" / "int8.tflite").interpreter.get_tensor_details()}
    assert all(details[t]["dtype"].__name__ == "float32" for t in high["kept_float_ops"] if t in details)
    assert sum(t in details for t in high["kept_float_ops"]) >= len(high["kept_float_groups"])
    for ext in ("json", "md", "png"):
        assert (out / "tiny" / f"control-int8.{ext}").is_file()
    assert (out / "tiny" / "control-int8.png").read_bytes()[:4] == b"\x89PNG"

    # The path to a lower target is a prefix of this one: tests/test_quantize.py::test_the_control_path_is_greedy_and_lazy.


def test_watermark_error_report_follows_the_watermark(demo):
    """Per op: the quantized file's watermark trace against the float file's, and the bits that flip."""
    out, _ = demo
    rep = json.loads((out / "tiny" / "watermark-error-int8.json").read_text())
    rows = [r for r in rep["ops"] if r["watermark_sqnr_db"] is not None]
    assert len(rep["pairs"]) >= 2 and all(not p.endswith("+wm") for p in rep["pairs"])
    assert len(rows) > 50
    # The watermark is faint against the image content at the front of the network (the hypothesis).
    front = [r for r in rep["ops"] if "Sequential_0/" in r["tensor"] and r["watermark_to_content_db"] is not None]
    assert front and front[0]["op"] == "CONV_2D" and front[0]["watermark_to_content_db"] < -15  # the stem, first in graph order
    assert float(np.median([r["watermark_to_content_db"] for r in front])) < -10
    assert isinstance(rep["flipped_bits"], list)
    assert (out / "tiny" / "watermark-error-int8.png").read_bytes()[:4] == b"\x89PNG"


def _arm_files(r: dict, cpus: tuple[str, ...] | None = None) -> tuple[dict, dict]:
    from videoseal_litert.runtime.arm import CPU_MODELS

    assert r["passed"] is True and r["random_init"] is False and r["failures"] == []
    ex, em = r["parts"]["extractor"]["files"], r["parts"]["embedder"]["files"]
    for per in (*ex.values(), *em.values()):
        assert set(per) == set(cpus or CPU_MODELS)
    for f in em["embedder-int8.tflite"].values():  # the embedder gated on ARM as on x86: pixels and the bits they decode to
        g = f["gate"]["groups"]
        assert g["pixels"]["passed"] and g["decoded bits"]["passed"] and g["decoded detection"]["passed"] and f["failures"] == []
    return ex, em


@pytest.mark.platforms
def test_tiny_pair_on_arm64(demo, tmp_path):
    """The trained tiny pair's INT8 extractor and INT8 embedder (the files whose kernels differ by CPU) on the
    four emulated ARM64 CPU models pass the rule against PyTorch as on x86, within the ARM-x86 bound, and its
    bundle's torch-free self-tests pass under the aarch64 Python and through the aarch64 LiteRT C library
    (``litert_run``); a changed bundle fails there by name. (FP32
    too, on SME's slow float kernels: `test_tiny_pair_fp32_on_arm64`, fullsize.)"""
    from tests.conftest import cli
    from videoseal_litert.convert.options import RunOptions
    from videoseal_litert.core.errors import ArmRunError
    from videoseal_litert.models.registry import resolve
    from videoseal_litert.package.bundle import build_bundle
    from videoseal_litert.runtime.arm import bundle_selftests

    out, _ = demo
    # The three integer-kernel families (NEON mlal, dot product, i8mm); SME (`max`) under fullsize with FP32.
    cpus = ("cortex-a53", "neoverse-n1", "neoverse-v1")
    assert (
        cli("arm-check", "--model", "tiny", "--out", out, "--files", "int8,embedder-int8", "--inputs", "2", "--cpus", ",".join(cpus)) == 0
    )
    ex, em = _arm_files(json.loads((out / "tiny" / "arm64.json").read_text()), cpus)
    assert set(ex) == {"int8.tflite"} and set(em) == {"embedder-int8.tflite"}
    for f in ex["int8.tflite"].values():
        # Judged against PyTorch by the rule, as on x86: every group (attacked views too) without a clear flip, at its floor.
        assert (
            f["gate"]["passed"]
            and f["failures"] == []
            and {"detection", "detection / jpeg_50", "bits / jpeg_50"} <= set(f["gate"]["groups"])
        )
        assert all(g["clear_flips"] == 0 and (g["snr_db"] is None or g["snr_db"] >= g["floor_db"]) for g in f["gate"]["groups"].values())
        assert f["diff_in_output_steps"] is None or f["diff_in_output_steps"] <= 2
    assert (out / "tiny" / "arm64.md").read_text().count("| int8.tflite |") >= 3

    opts = RunOptions(spec=resolve("tiny"), out=out)
    # One golden image (and its covers): each vector costs an emulated process per runtime.
    build_bundle(opts, ("int8",), tmp_path / "dist", golden=1, embedder_variants=("int8",), arm_cpus=("neoverse-n1",))
    b = tmp_path / "dist" / "tiny"
    checked = json.loads((b / "manifest.json").read_text())["golden_checked_on"]
    assert [c["cpu"].split(" (")[0] for c in checked][2:] == ["ARM64 neoverse-n1"] and "x86" in checked[0]["kernels"]
    # The self-tests ran through the LiteRT C library on x86 and on the emulated CPU (aarch64 libLiteRt.so).
    assert "LiteRT C library" in checked[1]["kernels"] and any("C library" in r for r in checked[2]["runtimes"])
    golden = b / "golden" / "golden.json"
    g = json.loads(golden.read_text())
    g["variants"]["int8"]["vectors"][0]["bit_logits"][0] += 5.0  # the x86 reference moved: the runtime bound fails
    golden.write_text(json.dumps(g))
    with pytest.raises(ArmRunError, match="run_extractor.py --selftest on emulated cortex-a53"):
        bundle_selftests(b, ("cortex-a53",), ("run_extractor.py",))


@pytest.mark.fullsize
def test_tiny_pair_fp32_on_arm64(demo):
    """The tiny pair's FP32 extractor on the four emulated CPU models (SME's float kernels take half a minute)."""
    from tests.conftest import cli

    out, _ = demo
    assert cli("arm-check", "--model", "tiny", "--out", out, "--files", "fp32,embedder-int8") == 0
    ex, _ = _arm_files(json.loads((out / "tiny" / "arm64.json").read_text()))
    for f in ex["fp32.tflite"].values():
        assert f["max_abs_diff_to_x86"] < 1e-3 and f["output_step"] is None and f["gate"]["passed"]


def test_video_bench_times_both_routes_side_by_side(demo):
    """``make video-bench`` on the trained pair (a small clip here; the figures come from the command, not from a
    test): both routes run end to end and stage by stage, watermark alike, and the report names machine and threads."""
    from videoseal_litert.convert.options import RunOptions
    from videoseal_litert.models.registry import resolve
    from videoseal_litert.video.video_bench import run_video_bench

    out, _ = demo
    r = run_video_bench(RunOptions(spec=resolve("tiny"), out=out, threads=1), ["256x144"], 32, rss=False)
    assert (out / "video" / "video-bench.md").is_file() and json.loads((out / "video" / "video-bench.json").read_text()) == r
    assert r["machine"] and r["threads"]["litert"] == 1 and r["files"] == {"embedder": "embedder-int8.tflite", "extractor": "int8.tflite"}
    (x,) = r["sizes"]
    assert x["size"] == "256x144" and x["frames"] == 32
    for what in ("embed", "detect"):
        for route in ("project", "official"):
            assert x[what][route]["frames"] == 32 and x[what][route]["fps"] > 0
        assert x[what]["speedup"] == pytest.approx(x[what]["project"]["fps"] / x[what]["official"]["fps"], rel=0.02)
    stages = x["embed"]["project"]["ms_per_stage"]
    assert {"decode", "resize", "model", "blend", "encode"} <= set(stages) and "jnd" not in stages  # the tiny pair has no JND
    assert set(x["detect"]["official"]["ms_per_stage"]) >= {"decode", "convert", "resize", "model"}
    # The same watermark either way: INT8 against PyTorch differs by a level at most, and both read the message back.
    assert x["embed"]["pixels_vs_official"]["max_levels"] <= 2
    acc = x["detect"]["bit_accuracy"]
    assert acc["project"] == acc["official"] >= 0.9 and x["detect"]["aggregated_bits_agree"], acc
    # The CPU floor: no route beats cores x 1000 / (decode + model CPU ms a frame), the measured one included.
    f = x["detect"]["cpu_floor"]
    ms, official = f["cpu_ms_per_frame"], x["detect"]["official"]["fps"]
    floor = ms["decode"] + ms["model, 1 LiteRT thread"]
    assert min(ms.values()) > 0 and f["fps_bound_resize_free"] == pytest.approx(f["cores"] * 1000 / floor, rel=0.01)
    assert f["fps_bound_with_resize"] == pytest.approx(f["cores"] * 1000 / (floor + ms["resize"]), rel=0.01)
    assert x["detect"]["project"]["fps"] <= 1.15 * f["fps_bound_resize_free"]
    assert f["target_reachable"] == (f["cpu_ms_left_at_target"] >= 0) == (f["fps_bound_resize_free"] >= 3 * official)
    assert "fastest detection this machine allows" in (out / "video" / "video-bench.md").read_text()
    with pytest.raises(UsageError, match="video-bench size '720i'"):
        run_video_bench(RunOptions(spec=resolve("tiny"), out=out), ["720i"], 32)


def test_route_graph_is_the_python_route_and_a_wrong_graph_fails(demo, tmp_path):
    """``route-<W>x<H>.tflite``: the trained pair's route at a frame size passes the rule against the Python route, and so
    does a JND graph against the JND route; a graph with the blend's scaling 2% off, or with JND where the route has
    none, fails it on the same inputs;
    video frames through the graph are numpy's pixels to one level; video embed takes it only when recorded faster."""
    import torch

    from videoseal_litert.convert.embedder import EmbedderPart
    from videoseal_litert.convert.options import RunOptions
    from videoseal_litert.convert.tflite import convert_fp32
    from videoseal_litert.models.registry import resolve
    from videoseal_litert.runtime.litert_runner import LiteRTRunner
    from videoseal_litert.video.key_frames import KeyFrames
    from videoseal_litert.video.route_graph import RouteGraph, _check_inputs, build_route_graph, verify, video_graph

    out, _ = demo
    opts = RunOptions(spec=resolve("tiny"), out=out, threads=1)
    r = build_route_graph(opts, 384, 256, runs=3)
    assert r["verification"]["passed"] and r["file"] == "route-384x256.tflite" and r["inputs"]["residual"] == [1, 256, 256, 3]
    assert json.loads((out / "tiny" / "route-384x256.json").read_text()) == r
    part = EmbedderPart(opts)
    route, checks = part.family.route(opts.spec.card.embedder), _check_inputs(part, 384, 256)
    sample = {"frame": torch.zeros(1, 256, 384, 3), "residual": torch.zeros(1, 256, 256, 3)}
    # The JND families' route (the VideoSeal embedders): a JND graph is that route too; the same graph judged against a
    # route without JND fails, and so does a graph whose blend scales the residual 2% too much.
    jnd = {**route, "attenuation": "jnd_1_1"}
    convert_fp32(RouteGraph(256, 384, jnd).eval(), sample, tmp_path / "jnd.tflite")
    jnd_graph, floor = LiteRTRunner(tmp_path / "jnd.tflite", 1), r["verification"]["floor_db"]
    assert all(g.passed for g in verify(jnd_graph, jnd, checks, floor))
    assert not any(g.passed for g in verify(jnd_graph, route, checks, floor))
    # Frames through the graph in the video route: numpy's pixels to one level, the key frames as numpy makes them.
    graph = LiteRTRunner(out / "tiny" / "route-384x256.tflite", 1)

    def scaled(inputs):  # the verified graph with its residual's share 2% too large (a file's scaling off by 2%)
        x, y = inputs["frame"], graph(inputs)["watermarked"]
        return {"watermarked": np.clip(route["scaling_i"] * x + 1.02 * (y - route["scaling_i"] * x), 0, 1)}

    assert all(g.passed for g in verify(graph, route, checks, floor))
    assert not any(g.passed for g in verify(scaled, route, checks, floor))
    frame = (checks[0][1] * 255).round().astype(np.uint8)
    run = lambda inputs: {"residual": checks[0][2][None]}  # noqa: E731
    a = KeyFrames(run, route, 256, np.zeros(48), 4)
    b = KeyFrames(run, route, 256, np.zeros(48), 4, graphs={(256, 384): graph})
    for i in range(5):
        d = np.abs(a.mark(i, frame).astype(int) - b.mark(i, frame))
        assert d.max() <= 1 and (d > 0).mean() < 0.01
    assert a.keys == b.keys == 2
    # video embed's choice: only a graph recorded as verified and faster for video, unchanged since.
    rec = out / "tiny" / "route-384x256.json"
    rec.write_text(json.dumps({**r, "faster_for_video": False}))
    assert video_graph(out / "tiny", 384, 256, 1) is None
    rec.write_text(json.dumps({**r, "faster_for_video": True}))
    assert video_graph(out / "tiny", 384, 256, 1)[1] == "route-384x256.tflite"
    rec.write_text(json.dumps({**r, "faster_for_video": True, "sha256": "0" * 64}))
    assert video_graph(out / "tiny", 384, 256, 1) is None
    rec.write_text(json.dumps(r))
