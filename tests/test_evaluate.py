"""``videoseal-litert evaluate``: the official attacks checked against their formulas, and both engines.

The attack checks compare each implementation with an independent one on fixed inputs (PIL's JPEG,
``colorsys``, ``np.rot90``, a direct convolution, a direct median, the numpy resize of
``runtime/route.py``). The engine tests run the shipped tiny pair's files (from the demo run) over
20 small photos and an unreadable file with three attacks: local and Ray (with a worker killed
mid-run) must write identical rows, each exactly once, and an interrupted local run must resume
to the same rows.
"""

from __future__ import annotations

import builtins
import colorsys
import io
import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from videoseal_litert.calibration_data import attacks as A
from videoseal_litert.core.errors import UsageError


def _img(h: int = 24, w: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).random((3, h, w), dtype=np.float32))


def test_official_suite_lists_the_official_strengths():
    suite = A.official_suite()
    per = {}
    for a in suite:
        per.setdefault(a.family, []).append(a.strength)
    # get_validation_augs(is_video=False): strengths per family as the official list gives them.
    assert per["jpeg"] == [40, 50, 60, 70, 80, 90]
    assert per["rotate"] == [5, 10, 30, 45, 90]
    assert len(per["resize"]) == len(per["crop"]) == 10 and per["crop"][0] == 0.32
    assert len(per["perspective"]) == 8 and len(per["brightness"]) == len(per["contrast"]) == 9 and len(per["hue"]) == 10
    assert per["gaussian_blur"] == per["median_filter"] == [3, 5, 9, 13, 17]
    assert per["jpeg_crop_brightness"] == [40, 60, 80]
    assert {"identity", "hflip", "grayscale"} <= set(per)
    assert len({a.name for a in suite}) == len(suite) == 83


def test_attack_lists_resolve_and_bad_names_are_named_errors():
    assert [a.name for a in A.resolve_attacks("quick")] == list(A.PRESETS["quick"])
    assert [a.name for a in A.resolve_attacks("jpeg")] == [f"jpeg_{q}" for q in (40, 50, 60, 70, 80, 90)]
    extra = A.resolve_attacks("resize_0.5,crop_0.71")  # a strength the suite does not list, and one it does
    x = _img(40, 60)
    assert extra[0](x, torch.Generator()).shape == (3, 20, 30)
    for bad in ("jpeg_high", "sharpen_3", "jpeg_50,jpeg_50"):
        with pytest.raises(UsageError):
            A.resolve_attacks(bad)


def test_jpeg_is_pil_jpeg_of_the_8_bit_image():
    x = _img()
    u8 = (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    buf = io.BytesIO()
    Image.fromarray(u8).save(buf, format="JPEG", quality=40)
    want = np.asarray(Image.open(io.BytesIO(buf.getvalue())), dtype=np.float32) / 255
    assert np.array_equal(A.jpeg(x, 40).permute(1, 2, 0).numpy(), want)


def test_value_attacks_follow_their_formulas():
    x = _img()
    r, g, b = x.numpy()
    assert torch.equal(A.brightness(x, 1.5), (x * 1.5).clamp(0, 1))
    mean = float(np.mean(0.2989 * r + 0.587 * g + 0.114 * b))
    assert np.allclose(A.contrast(x, 0.5).numpy(), np.clip(0.5 * x.numpy() + 0.5 * mean, 0, 1), atol=1e-6)
    gray = A.grayscale(x).numpy()
    assert np.allclose(gray, np.broadcast_to(0.299 * r + 0.587 * g + 0.114 * b, gray.shape), atol=1e-6)
    assert np.array_equal(A.hflip(x).numpy(), x.numpy()[:, :, ::-1])
    for f in (-0.3, 0.25, 0.5):
        got = A.hue(x, f).numpy()
        for i, j in ((0, 0), (5, 7), (23, 31), (11, 2)):
            h, s, v = colorsys.rgb_to_hsv(r[i, j], g[i, j], b[i, j])
            want = colorsys.hsv_to_rgb((h + f) % 1.0, s, v)
            assert np.allclose(got[:, i, j], want, atol=1e-5), (f, i, j)


def test_geometric_attacks():
    x = _img(16, 16)
    # 90 degrees counter-clockwise on a square image moves every pixel exactly (nearest neighbour).
    assert np.array_equal(A.rotate(x, 90).numpy(), np.rot90(x.numpy(), 1, axes=(1, 2)))
    assert torch.equal(A.rotate(x, 0), x)
    # Perspective at distortion 0 moves no corner: the identity (bilinear at the pixel centres).
    assert torch.allclose(A.perspective(x, 0.0, torch.Generator().manual_seed(1)), x, atol=1e-5)
    # ... and at 0.5 the corners move inwards: zeros appear at the border, never inside a straight line's reach.
    y = A.perspective(torch.ones(3, 64, 64), 0.5, torch.Generator().manual_seed(3))
    assert y.shape == (3, 64, 64) and float(y[:, 32, 32].min()) == pytest.approx(1.0) and float(y.min()) == 0.0
    # Resize: the official size rule and torch's antialiased bilinear (the numpy one the route ships agrees).
    from videoseal_litert.runtime.route import resize_aa

    big = _img(40, 50, seed=2)
    got = A.resize(big, 0.63)
    assert got.shape == (3, int(0.63 * 40), int(0.63 * 50))
    assert np.allclose(got.permute(1, 2, 0).numpy(), resize_aa(big.permute(1, 2, 0).numpy(), 25, 31), atol=1e-5)
    # Crop: the official size rule, a window of the image, the same window for the same seed.
    c1, c2 = (A.crop(big, 0.71, torch.Generator().manual_seed(7)) for _ in range(2))
    assert c1.shape == (3, int(0.71 * 40), int(0.71 * 50)) and torch.equal(c1, c2)
    hits = [(i, j) for i in range(40 - 28 + 1) for j in range(50 - 35 + 1) if torch.equal(big[:, i : i + 28, j : j + 35], c1)]
    assert len(hits) == 1


def test_blur_and_median_match_direct_computations(monkeypatch):
    monkeypatch.setattr(A, "MEDIAN_STRIP_BYTES", 3 * 20 * 3 * 4 * 8)  # strips of 8 rows: they must join seamlessly
    x = _img(70, 20, seed=4)
    k = 5
    sigma = 0.3 * ((k - 1) * 0.5 - 1) + 0.8
    t = np.arange(k) - (k - 1) / 2
    g1 = np.exp(-0.5 * (t / sigma) ** 2)
    g2 = np.outer(g1, g1) / g1.sum() ** 2
    xp = np.pad(x.numpy(), ((0, 0), (2, 2), (2, 2)), mode="reflect")
    want = np.zeros_like(x.numpy())
    for dy in range(k):
        for dx in range(k):
            want += g2[dy, dx] * xp[:, dy : dy + 70, dx : dx + 20]
    assert np.allclose(A.gaussian_blur(x, k).numpy(), want, atol=1e-5)
    k = 3
    xp = np.pad(x.numpy(), ((0, 0), (1, 1), (1, 1)))  # zeros, as the official F.pad
    want = np.zeros_like(x.numpy())
    for c in range(3):
        for i in range(70):
            for j in range(20):
                win = xp[c, i : i + k, j : j + k]  # rows of the window
                meds = np.sort(win, axis=1)[:, (k - 1) // 2]  # the median along each row's columns
                want[c, i, j] = np.sort(meds)[(k - 1) // 2]  # then over the rows
    assert np.array_equal(A.median_filter(x, k).numpy(), want)
    with pytest.raises(UsageError):
        A.median_filter(x, 4)


def test_ray_missing_is_a_named_error_with_the_install_command(monkeypatch):
    from videoseal_litert.evaluate import engines

    real = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(engines.MissingDependencyError, match=r"videoseal-litert\[scale\]"):
        engines.import_ray()


# ---- the engines on the shipped tiny pair ---------------------------------------------------------------

ATTACKS = "identity,jpeg_50,crop_0.71"
N_IMAGES = 20


@pytest.fixture(scope="module")
def setup_eval(demo_run, tmp_path_factory):
    """20 small photos of the evaluation split (varied sizes) plus one unreadable file, and the demo's files: made once
    per run in a folder both workers see (the local run below is shared the same way)."""
    from tests.conftest import locked, shared_dir
    from videoseal_litert.calibration_data.pool import split_paths

    out, rc, lines = demo_run
    assert rc == 0, "\n".join(lines[-30:])
    root = shared_dir(tmp_path_factory, "evaluate")
    photos = root / "photos"
    with locked(root / ".lock-photos"):
        if not (photos / "zz-broken.jpg").is_file():
            photos.mkdir(exist_ok=True)
            src = split_paths("evaluation")
            for i in range(N_IMAGES):
                with Image.open(src[i % len(src)]) as im:
                    im.convert("RGB").resize((96 + 8 * (i % 5), 80 + 16 * (i % 3))).save(photos / f"p{i:02d}.{'jpg' if i % 2 else 'png'}")
            (photos / "zz-broken.jpg").write_bytes(b"not a jpeg")
    md = out / "tiny"
    variants = ",".join(["pytorch", *(str(md / f) for f in ("fp32.tflite", "int8.tflite", "embedder-int8.tflite"))])
    return root, photos, variants


VIDEO_ATTACKS = "none,h264_crf28,fps_half"


def _evaluate(setup_eval, name, engine="local", **kw):
    """The 20 photos, and the video pass on the first 4 frames of a real clip (176 x 144) with three video attacks."""
    from videoseal_litert.convert.options import RunOptions
    from videoseal_litert.evaluate.evaluation import EvalRequest, run_evaluate
    from videoseal_litert.models.registry import resolve
    from videoseal_litert.video.clips import clip_path

    root, photos, variants = setup_eval
    out = root / f"art-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}"
    opts = RunOptions(spec=resolve("tiny"), out=out, images=photos, variants=variants, threads=1)
    req = EvalRequest(attacks=ATTACKS, engine=engine, eval_dir=root / name, videos=str(clip_path("carphone_pristine.mp4")),
                      video_attacks=VIDEO_ATTACKS, video_frames=4, **kw)  # fmt: skip
    return run_evaluate(opts, req)


def _rows(setup_eval, name, rows="rows"):
    from videoseal_litert.evaluate.engines import read_rows

    return read_rows(setup_eval[0] / name / rows)


def _same(a, b) -> None:
    assert a.num_rows == b.num_rows and a.schema.names == b.schema.names
    for n in a.schema.names:
        x, y = a.column(n).to_numpy(zero_copy_only=False), b.column(n).to_numpy(zero_copy_only=False)
        same = np.array_equal(x, y, equal_nan=True) if x.dtype.kind == "f" else bool(np.all(x == y))
        assert same, n


@pytest.fixture(scope="module")
def local_run(setup_eval):
    """The local engine's run, once per test run whichever worker asks first (the other waits on the lock)."""
    from tests.conftest import locked

    root = setup_eval[0]
    with locked(root / ".lock-local"):
        if not (root / "local" / "summary.json").is_file():
            _evaluate(setup_eval, "local")
    return json.loads((root / "local" / "summary.json").read_text())


@pytest.mark.slow
def test_local_rows_and_summary(setup_eval, local_run):
    root = setup_eval[0]
    t = _rows(setup_eval, "local")
    # 20 photos x 1 message x 2 embedders (PyTorch, INT8 file) x 3 attacks x 3 decoders, plus one row for the broken file.
    assert t.num_rows == N_IMAGES * 2 * 3 * 3 + 1
    keys = list(zip(*(t.column(k).to_pylist() for k in ("image_index", "message_index", "embedder", "attack", "variant")), strict=True))
    assert len(set(keys)) == len(keys)
    assert not any(t.column("random_weights").to_pylist())  # the shipped, trained pair: every row says so
    err = [r for r in t.to_pylist() if r["error"]]
    assert len(err) == 1 and err[0]["image"].endswith("zz-broken.jpg") and "not a readable image" in err[0]["error"]
    s = json.loads((root / "local" / "summary.json").read_text())
    assert s["errors"] and (root / "local" / "summary.png").read_bytes()[:4] == b"\x89PNG"
    by = {(e["embedder"], e["attack"], e["variant"]): e for e in s["table"]}
    assert len(by) == 2 * 3 * 3
    # The trained pair reads its own unattacked watermark (the demo's >= 99% on these photos), FP32 as PyTorch.
    ident = by[("pytorch", "identity", "pytorch")]
    assert ident["bit_accuracy"]["rate"] >= 0.97 and ident["bit_accuracy"]["n"] == N_IMAGES * 48
    assert by[("pytorch", "identity", "fp32")]["agreement_with_pytorch"]["rate"] == 1.0
    assert ident["detected_p<0.001"]["rate"] >= 0.9
    # Rates recomputed from the rows: the summary is the rows' arithmetic.
    rows = [r for r in t.to_pylist() if r["attack"] == "jpeg_50" and r["variant"] == "int8" and r["embedder"] == "embedder-int8"]
    e = by[("embedder-int8", "jpeg_50", "int8")]
    assert e["bit_accuracy"]["k"] == sum(48 - r["bit_errors"] for r in rows) and e["images"] == N_IMAGES
    lo, hi = e["bit_accuracy"]["wilson95"]
    assert lo <= e["bit_accuracy"]["rate"] <= hi
    assert "| attack family |" in (root / "local" / "summary.md").read_text()
    # The video pass: 1 clip x 2 embedders x 3 video attacks x 3 decoders, the image rows' columns.
    v = _rows(setup_eval, "local", "video-rows")
    assert v.num_rows == 2 * 3 * 3 and v.schema.names == t.schema.names
    assert [r["family"] for r in v.to_pylist()[:9:3]] == ["none", "h264", "frame_rate"]
    vs = {(e["embedder"], e["attack"], e["variant"]): e for e in s["video"]["table"]}
    assert vs[("pytorch", "none", "pytorch")]["bit_accuracy"]["rate"] == 1.0  # its own unattacked watermark, 4 frames
    assert vs[("pytorch", "none", "fp32")]["agreement_with_pytorch"]["rate"] == 1.0
    assert all(r["width"] == 176 and r["height"] == 144 and 30 < r["psnr_db"] < 50 for r in v.to_pylist())
    assert "## Video: 1 clip(s)" in (root / "local" / "summary.md").read_text()


@pytest.mark.slow
@pytest.mark.platforms
def test_ray_engine_survives_a_killed_worker_with_the_same_rows(setup_eval, local_run, tmp_path, monkeypatch):
    # The set-up's sentinel records the extras it installed: with 'scale' (make setup's default, CI's) Ray must
    # import; only a set-up made with EXTRAS=dev (no Ray, by choice) skips, and says why.
    sentinel = Path(sys.prefix) / ".installed"  # the venv running the tests
    extras = sentinel.read_text().strip().removeprefix("extras=").split(",") if sentinel.is_file() else ["scale"]
    if "scale" not in extras:
        pytest.skip(f"the set-up installed extras {','.join(extras)} (EXTRAS=dev: no Ray); make setup EXTRAS=dev,scale to run it")
    import ray  # noqa: F401 - the set-up said it installed Ray: a missing one fails here

    kill = tmp_path / "kill"
    kill.mkdir()
    from videoseal_litert.evaluate.batches import KILL_ONCE_ENV

    monkeypatch.setenv(KILL_ONCE_ENV, str(kill))  # the Ray workers started by this run inherit it
    s = _evaluate(setup_eval, "ray", engine="ray")
    assert (kill / "killed").is_file(), "no worker was killed: the test did not test a failure"
    assert s["timing"]["engine"] == "ray"
    _same(_rows(setup_eval, "ray"), _rows(setup_eval, "local"))  # every row exactly once, identical to the local engine
    _same(_rows(setup_eval, "ray", "video-rows"), _rows(setup_eval, "local", "video-rows"))  # the video pass too


@pytest.mark.slow
def test_interrupted_local_run_resumes_without_duplicates(setup_eval, local_run, monkeypatch):
    from videoseal_litert.evaluate import evaluation as run_mod

    def one_chunk_then_interrupt(items, **_):
        yield items[0]
        raise KeyboardInterrupt

    monkeypatch.setattr(run_mod, "progress", one_chunk_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        _evaluate(setup_eval, "resumed")
    partial = _rows(setup_eval, "resumed")
    assert 0 < partial.num_rows < _rows(setup_eval, "local").num_rows
    monkeypatch.undo()
    s = _evaluate(setup_eval, "resumed")
    assert s["timing"]["resumed_past"] == len(set(partial.column("image_index").to_pylist()))
    _same(_rows(setup_eval, "resumed"), _rows(setup_eval, "local"))
    # Other settings in the same folder are refused, not mixed in: another seed, or another file under the same name.
    with pytest.raises(UsageError, match="other settings"):
        _evaluate(setup_eval, "resumed", seed=1)
    # ... or the same settings over other bytes: the record holds each file's sha256 (a re-quantized
    # int8.tflite under the same name); here the record is made to say fp32.tflite had other bytes.
    run_json = setup_eval[0] / "resumed" / "run.json"
    rec = json.loads(run_json.read_text())
    assert len(rec["sha256"]["fp32"]) == 64
    rec["sha256"]["fp32"] = "0" * 64
    run_json.write_text(json.dumps(rec))
    with pytest.raises(UsageError, match=r"other settings \(sha256\)"):
        _evaluate(setup_eval, "resumed")


@pytest.mark.slow
def test_robustness_is_a_preset_of_evaluate(setup_eval, demo_run, tmp_path, capsys):
    import shutil

    from videoseal_litert.cli import main

    out = tmp_path / "artifacts"
    shutil.copytree(demo_run[0] / "tiny", out / "tiny")  # a private copy: the other test worker reads the demo's
    rc = main(["robustness", "--out", str(out), "--images", str(setup_eval[1]), "--eval-dir", str(tmp_path / "rob"), "--threads", "1"])
    assert rc == 0
    s = json.loads((tmp_path / "rob" / "summary.json").read_text())
    assert s["attacks"] == list(A.PRESETS["robustness"])
    assert [e["variant"] for e in s["table"][:4]] == ["pytorch", "fp32", "int8", "int8-dynamic"]
    term = capsys.readouterr().out
    assert "| attack family | pytorch | fp32 | int8 | int8-dynamic |" in term
    assert not any(w in term for w in ("INFO", "WARNING", "Traceback"))
    assert math.isfinite(s["timing"]["wall_s"])
