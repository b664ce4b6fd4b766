"""Every kind of bad input a user can give, through the command line: one named error, its exit code,
no traceback, and an OUT that holds no partial artifact afterwards (docs/errors.md).

The interrupted-stage cases run a real stage in a child process and kill it while it writes its
artifact (``VIDEOSEAL_TEST_HOLD_WRITE_S`` holds the written temporary file open to a rename).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from videoseal_litert.cli import main
from videoseal_litert.core.artifacts import HOLD_ENV, ModelDir, sha256_file
from videoseal_litert.core.errors import ImageError
from videoseal_litert.core.images import read_rgb

MINI = "videoseal_1.0-mini"


def run(capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main(list(args))
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def cli(capsys, *args: str) -> tuple[int, str]:
    rc, _, err = run(capsys, *args)
    return rc, err


def assert_named(err: str, name: str) -> None:
    """Exactly one ``error: <name>: ...`` line, and no traceback."""
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and lines[0].startswith(f"error: {name}: "), err[-2000:]
    assert "Traceback" not in err


def temporaries(root: Path) -> list[Path]:
    return [p for p in root.rglob(".*.tmp")] if root.exists() else []


def artifacts(root: Path) -> set[str]:
    """Files a stage produces (not the lock file, stage records or logs)."""
    if not root.exists():
        return set()
    return {p.name for p in root.rglob("*") if p.is_file() and p.name != ".lock" and p.parent.name not in ("records", "logs")}


@pytest.fixture(scope="module")
def mini_card(reference) -> Path:
    return reference / f"{MINI}.yaml"


@pytest.fixture(scope="module")
def converted(pipeline) -> Path:
    """The session's converted mini (load + export + tflite + verify); each test copies it."""
    return pipeline.converted(MINI)


def copy_of(converted: Path, tmp_path: Path) -> tuple[Path, Path]:
    out = tmp_path / "out"
    shutil.copytree(converted, out / MINI)
    return out, out / MINI


# --- corrupt or truncated artifacts ---------------------------------------------------------------


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.slow
@pytest.mark.parametrize("command", ["verify", "quantize", "bench"])
def test_truncated_tflite_is_refused_by_every_consumer(converted, mini_card, tmp_path, capsys, command):
    out, md = copy_of(converted, tmp_path)
    truncate(md / "fp32.tflite")
    before = artifacts(out)
    rc, err = cli(capsys, command, "--model", str(mini_card), "--out", str(out), "--untrained")
    assert rc == 2
    assert_named(err, "ArtifactCorruptError")
    assert "fp32.tflite" in err and "make " in err
    assert artifacts(out) == before and not temporaries(out)


def test_unrecorded_garbage_tflite_is_named_when_opened(converted, mini_card, tmp_path, capsys):
    """A file with no record (put there by hand) is refused when the interpreter cannot read it."""
    out, md = copy_of(converted, tmp_path)
    shutil.rmtree(md / "records")
    before = (md / "verify-fp32.json").read_bytes()  # the real file's report
    (md / "fp32.tflite").write_bytes(b"TFL3" + os.urandom(4000))
    rc, err = cli(capsys, "verify", "--model", str(mini_card), "--out", str(out), "--untrained")
    assert rc == 2
    assert_named(err, "ArtifactCorruptError")
    assert (md / "verify-fp32.json").read_bytes() == before and not temporaries(out)  # no report of the garbage


@pytest.mark.parametrize("name", ["model.onnx", "extractor.pt2"])
def test_truncated_export_artifact_is_redone_not_trusted(converted, mini_card, tmp_path, capsys, name):
    out, md = copy_of(converted, tmp_path)
    args = ("export", "--model", str(mini_card), "--out", str(out), "--untrained")
    rc, stdout, _ = run(capsys, *args)
    assert rc == 0 and f"export extractor {MINI}: up to date, skipped" in stdout
    truncate(md / name)
    rc, stdout, _ = run(capsys, *args)
    assert rc == 0 and f"export extractor {MINI}: done" in stdout
    record = json.loads((md / "records" / "export.json").read_text())
    assert sha256_file(md / name) == record["outputs"][name]
    assert not temporaries(out)


# --- images ------------------------------------------------------------------------------------------


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height (no pixel data): what a decompression bomb looks like."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


BAD_IMAGES = {
    "text.png": lambda p: p.write_text("this is not an image"),
    "empty.png": lambda p: p.write_bytes(b""),
    "bomb.png": lambda p: p.write_bytes(png_declaring(30000, 30000)),
    "tiny.png": lambda p: Image.new("RGB", (8, 8)).save(p),
    "float.tif": lambda p: Image.fromarray(np.zeros((64, 64), np.float32), mode="F").save(p),
}


@pytest.mark.parametrize("name", list(BAD_IMAGES))
def test_bad_image_is_a_named_error(tmp_path, name):
    p = tmp_path / name
    BAD_IMAGES[name](p)
    with pytest.raises(ImageError) as e:
        read_rgb(p)
    assert str(p) in str(e.value)
    if name == "bomb.png":
        assert "decompression bomb" in str(e.value)


# What each accepted kind of image reads as: (3, H, W) RGB in [0, 1].
GOOD_IMAGES = {
    # 16-bit grayscale: scaled by 65535, repeated to three channels
    "gray16.png": (Image.fromarray(np.full((64, 64), 32768, np.uint16)), (32768 / 65535,) * 3),
    # CMYK (no ink = white) converted to RGB
    "cmyk.jpg": (Image.new("CMYK", (64, 64), (0, 0, 0, 0)), (1.0, 1.0, 1.0)),
    # palette: the palette's colour, not the index
    "palette.png": (Image.new("RGB", (64, 64), (255, 0, 0)).convert("P"), (1.0, 0.0, 0.0)),
    # alpha: dropped, the colour used as stored
    "alpha.png": (Image.new("RGBA", (64, 64), (0, 128, 255, 10)), (0.0, 128 / 255, 1.0)),
}


@pytest.mark.parametrize("name", list(GOOD_IMAGES))
def test_unusual_but_valid_images_are_read_as_rgb(tmp_path, name):
    img, rgb = GOOD_IMAGES[name]
    p = tmp_path / name
    img.save(p)
    x = read_rgb(p)
    assert x.shape == (3, 64, 64) and x.dtype == np.float32
    np.testing.assert_allclose(x.reshape(3, -1).mean(axis=1), rgb, atol=2 / 255)


def test_images_dir_without_a_readable_image(converted, mini_card, tmp_path, capsys):
    out, md = copy_of(converted, tmp_path)
    images = tmp_path / "images"
    images.mkdir()
    for name, make in BAD_IMAGES.items():
        make(images / name)
    before = (md / "verify-fp32.json").read_bytes()
    rc, err = cli(capsys, "verify", "--model", str(mini_card), "--out", str(out), "--images", str(images), "--untrained")
    assert rc == 2
    assert_named(err, "ImageError")
    assert all(name in err for name in BAD_IMAGES)  # each rejected file named, with why
    assert (md / "verify-fp32.json").read_bytes() == before and not temporaries(out)


# --- cards ------------------------------------------------------------------------------------------


def edit(card: dict, dotted: str, value) -> dict:
    card = json.loads(json.dumps(card))
    *path, last = dotted.split(".")
    d = card
    for k in path:
        d = d[k]
    d[last] = value
    return card


# case -> (field, value, what the message must name)
CARD_CASES = {
    "zero nbits": ("args.nbits", 0, "args.nbits"),
    "negative nbits": ("args.nbits", -8, "args.nbits"),
    "nbits as text": ("args.nbits", "256", "args.nbits"),
    "nbits as bool": ("args.nbits", True, "args.nbits"),
    "zero dim": ("extractor.params.encoder.dims", [24, 0, 96, 192], "dims"),
    "negative depth": ("extractor.params.encoder.depths", [1, -1, 2, 1], "depths"),
    "dims not a list": ("extractor.params.encoder.dims", 24, "dims"),
    "unknown encoder key": ("extractor.params.encoder.dim", [24, 48, 96, 192], "'dim'"),
    "unknown params key": ("extractor.params.decoder", {}, "'decoder'"),
    "flag as text": ("extractor.params.pixel_decoder.sigmoid_output", "false", "sigmoid_output"),
    "bad upscale type": ("extractor.params.pixel_decoder.upscale_type", "lanczos", "upscale_type"),
    "zero image size": ("args.img_size_proc", 0, "img_size"),
}


@pytest.mark.parametrize("case", list(CARD_CASES))
def test_card_nonsense_is_a_named_error(mini_card, tmp_path, capsys, case):
    key, value, named = CARD_CASES[case]
    card = tmp_path / "bad.yaml"
    card.write_text(yaml.safe_dump(edit(yaml.safe_load(mini_card.read_text()), key, value)))
    out = tmp_path / "out"
    rc, err = cli(capsys, "load", "--model", str(card), "--out", str(out), "--random-init")
    assert rc == 2
    assert_named(err, "CardError")
    assert str(card) in err and named in err
    assert artifacts(out) == set()


def test_sam_card_nonsense_is_a_named_error(reference, tmp_path, capsys):
    raw = yaml.safe_load((reference / "videoseal_0.0-mini.yaml").read_text())
    for key, value in (
        ("extractor.params.encoder.mlp_ratio", "four"),
        ("extractor.params.encoder.window_size", -8),
        ("extractor.params.encoder.global_attn_indexes", [1, 9]),
    ):
        card = tmp_path / "bad_sam.yaml"
        card.write_text(yaml.safe_dump(edit(raw, key, value)))
        rc, err = cli(capsys, "load", "--model", str(card), "--out", str(tmp_path / "out"), "--random-init")
        assert rc == 2, key
        assert_named(err, "CardError")


# --- weights ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nonfinite_weights_are_refused_and_flagged(reference, mini_card, tmp_path, capsys, bad):
    ckpt = torch.load(reference / f"{MINI}.pth", map_location="cpu", weights_only=True)
    key = next(k for k in ckpt["model"] if k.endswith("pwconv1.weight"))
    ckpt["model"][key] = ckpt["model"][key].clone()
    ckpt["model"][key][0, 0] = bad
    path = tmp_path / "bad.pth"
    torch.save(ckpt, path)
    out = tmp_path / "out"
    args = ("--model", str(mini_card), "--ckpt", str(path), "--out", str(out))
    rc, err = cli(capsys, "load", *args)
    assert rc == 2
    assert_named(err, "NonFiniteWeightError")
    assert key[len("detector.") :] in err and "ALLOW_NONFINITE_WEIGHTS" in err
    assert artifacts(out) == set() and not temporaries(out)
    # inspect reports it (and says convert refuses it) ...
    rc, _ = cli(capsys, "inspect", *args)
    assert rc == 0
    report = json.loads((out / MINI / "inspect.json").read_text())
    assert report["nonfinite_tensors"] == [key[len("detector.") :]]
    assert "NaN or infinity" in (out / MINI / "inspect.md").read_text()
    # ... and the user can go on when told to.
    rc, _ = cli(capsys, "load", *args, "--allow-nonfinite-weights")
    assert rc == 0


# --- OUT ----------------------------------------------------------------------------------------------


def test_out_that_is_a_file(mini_card, tmp_path, capsys):
    f = tmp_path / "afile"
    f.write_text("x")
    for out in (f, f / "below"):
        rc, err = cli(capsys, "load", "--model", str(mini_card), "--out", str(out), "--random-init")
        assert rc == 2
        assert_named(err, "OutputDirError")
    assert f.read_text() == "x"


def test_out_that_cannot_be_written(mini_card, capsys):
    # /proc refuses new directories even to root (a chmod'ed folder would not stop root).
    rc, err = cli(capsys, "load", "--model", str(mini_card), "--out", "/proc/videoseal-out", "--random-init")
    assert rc == 2
    assert_named(err, "OutputDirError")


# --- usage -------------------------------------------------------------------------------------------


def test_unknown_variant_and_command(converted, mini_card, tmp_path, capsys):
    """(An unknown model: tests/test_models.py for the message, tests/test_convert.py for the command line.)"""
    out, _ = copy_of(converted, tmp_path)
    rc, err = cli(capsys, "quantize", "--model", str(mini_card), "--out", str(out), "--variants", "int9", "--untrained")
    assert rc == 2
    assert_named(err, "UsageError")
    rc, err = cli(capsys, "frobnicate")
    assert rc == 2
    assert_named(err, "UsageError")


def test_debug_shows_the_traceback_and_bugs_exit_3(mini_card, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("VIDEOSEAL_DEBUG", "0")  # --debug sets it to 1; the fixture restores the original at teardown
    rc, err = cli(capsys, "--debug", "load", "--model", "videosea", "--out", str(tmp_path))
    assert rc == 2 and "Traceback" in err and "error: UnknownModelError: " in err
    monkeypatch.setenv("VIDEOSEAL_DEBUG", "0")

    def broken(opts, part):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr("videoseal_litert.convert.stages.stage_load", broken)
    rc, err = cli(capsys, "load", "--model", str(mini_card), "--out", str(tmp_path), "--random-init")
    assert rc == 3
    assert_named(err, "InternalError")
    assert "ZeroDivisionError" in err and "--debug" in err


# --- interrupted stages and concurrent runs --------------------------------------------------------


class Stage:
    """A real stage in a child process; its stderr is read as it comes (a thread keeps the pipe drained)."""

    def __init__(self, args: list[str], hold: str = "60") -> None:
        env = {**os.environ, HOLD_ENV: hold}
        env.pop("VIDEOSEAL_DEBUG", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "videoseal_litert", *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        self.pid = self.proc.pid
        self.lines: list[str] = []
        self.reader = threading.Thread(target=lambda: self.lines.extend(self.proc.stderr), daemon=True)
        self.reader.start()

    def wait_until_writing(self, name: str, timeout: float = 180.0) -> Path:
        """Block until the stage has written ``name`` to its temporary file and not yet renamed it."""
        t0 = time.time()
        while time.time() - t0 < timeout:
            for line in list(self.lines):
                if line.startswith("[test hold]") and f"/.{name}." in line:
                    return Path(line.split()[2])
            assert self.proc.poll() is None, "".join(self.lines)[-3000:]
            time.sleep(0.05)
        self.proc.kill()
        raise AssertionError(f"the stage never wrote {name}")

    def finish(self, timeout: float = 300.0) -> tuple[int, str]:
        self.proc.wait(timeout=timeout)
        self.reader.join(timeout=10)
        return self.proc.returncode, "".join(self.lines)


# The load stage is the one killed: it writes its artifact (model.json) through the same atomic path
# as every stage, in seconds rather than a conversion's tens of seconds.
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGKILL, -9)])
def test_stage_killed_while_writing_leaves_the_previous_artifact(converted, mini_card, tmp_path, capsys, sig, code):
    out, md = copy_of(converted, tmp_path)
    before = sha256_file(md / "model.json")
    stage = Stage(["load", "--model", str(mini_card), "--out", str(out), "--force"])
    tmp = stage.wait_until_writing("model.json")
    assert tmp.stat().st_size > 0 and tmp.exists()
    stage.proc.send_signal(sig)
    rc, err = stage.finish()
    assert rc == code
    if sig != signal.SIGKILL:
        assert_named(err, {signal.SIGINT: "Interrupted", signal.SIGTERM: "Terminated"}[sig])
        assert not temporaries(out)
    else:
        assert temporaries(out)  # nothing can clean up after SIGKILL ...
    # ... but the previous complete artifact is what a later stage sees, and it is intact.
    assert sha256_file(md / "model.json") == before
    rc, _ = cli(capsys, "export", "--model", str(mini_card), "--out", str(out), "--untrained")
    assert rc == 0
    assert not temporaries(out)  # the next stage to take the lock removed the debris
    # A rerun completes.
    rc, _ = cli(capsys, "load", "--model", str(mini_card), "--out", str(out), "--force", "--untrained")
    assert rc == 0 and not temporaries(out)


def test_stage_killed_before_its_first_artifact_leaves_none(converted, mini_card, tmp_path, capsys):
    out, md = copy_of(converted, tmp_path)
    (md / "model.json").unlink()
    stage = Stage(["load", "--model", str(mini_card), "--out", str(out)])
    stage.wait_until_writing("model.json")
    stage.proc.send_signal(signal.SIGTERM)
    rc, err = stage.finish()
    assert rc == 143
    assert not (md / "model.json").exists() and not temporaries(out)
    rc, err = cli(capsys, "export", "--model", str(mini_card), "--out", str(out), "--untrained")
    assert rc == 2
    assert_named(err, "ArtifactMissingError")
    assert cli(capsys, "load", "--model", str(mini_card), "--out", str(out), "--untrained")[0] == 0
    assert (md / "model.json").exists()


def test_second_run_on_the_same_out_is_refused_by_name(converted, mini_card, tmp_path):
    out, md = copy_of(converted, tmp_path)
    release = tmp_path / "release"  # the first run holds its write open until the second has been refused
    first = Stage(["load", "--model", str(mini_card), "--out", str(out), "--force"], hold=f"until:{release}")
    first.wait_until_writing("model.json")
    second = subprocess.run(
        [sys.executable, "-m", "videoseal_litert", "load", "--model", str(mini_card), "--out", str(out), "--force"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert second.returncode == 2
    assert_named(second.stderr, "ArtifactsLockedError")
    assert f"pid {first.pid}" in second.stderr
    release.touch()
    rc, err = first.finish()
    assert rc == 0, err[-2000:]
    # The first run's artifact is whole and recorded: the second touched nothing.
    record = json.loads((md / "records" / "load.json").read_text())
    assert sha256_file(md / "model.json") == record["outputs"]["model.json"]
    assert not temporaries(out)


def test_lock_held_by_another_process_is_named_and_released_after(converted, mini_card, tmp_path):
    out, _ = copy_of(converted, tmp_path)
    load = [sys.executable, "-m", "videoseal_litert", "load", "--model", str(mini_card), "--out", str(out), "--force"]
    md = ModelDir(out, MINI)
    with md.exclusive("a test holding the lock"):
        with md.exclusive("re-entrant within one process"):
            refused = subprocess.run(load, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2
    assert_named(refused.stderr, "ArtifactsLockedError")
    assert "a test holding the lock" in refused.stderr
    done = subprocess.run(load, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
