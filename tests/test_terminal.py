"""What a user sees: the demo's terminal output is short and ours; third-party output is in log files."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from videoseal_litert.cli import main

# Patterns of what the converters, the quantizer and the libraries under them print (seen in this
# project's logs): absl/C++ log prefixes, litert-torch's step timer, JAX lowering notes, Python warnings.
THIRD_PARTY = re.compile(
    r"^[IWEF]\d{4} |^WARNING: All log messages|\(\d\d:\d\d\) \[|Use JAX lowering|Warning:|torchvision|libtpu|"
    r"flatbuffer_export|Replaced initializer|The value '|^\s*warnings\.warn|Estimated count of arithmetic ops|%\|"
)


@pytest.mark.slow
def test_demo_prints_one_screen_of_our_own_lines(demo_run):
    out, rc, lines = demo_run
    assert rc == 0, "\n".join(lines[-40:])
    assert len(lines) <= 60, f"{len(lines)} lines:\n" + "\n".join(lines)
    chatter = [ln for ln in lines if THIRD_PARTY.search(ln)]
    assert not chatter, chatter
    assert lines[-1] == "PASSED"
    assert any(ln.strip().startswith("int8.tflite") and "pass" in ln for ln in lines)
    assert any(ln.strip().startswith("embedder-int8.tflite") and "pass" in ln for ln in lines)
    # What the tools said is one path away.
    text = (out / "demo" / "logs" / "watermark.log").read_text()
    assert THIRD_PARTY.search(text), "the converters' own output should be in the log"


def test_kernel_bench_prints_only_our_lines(tmp_path):
    """The converter and the interpreter say a lot while one layer is converted and timed: all of it goes
    to the log. In a fresh process, as a user runs it (in-process, pytest's capture would hide where prints go)."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIDEOSEAL_VERBOSE", "VIDEOSEAL_DEBUG")}
    args = ["kernel-bench", "--out", str(tmp_path), "--runs", "3", "--dim", "32", "--tokens", "4"]
    r = subprocess.run(
        [sys.executable, "-m", "videoseal_litert", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    assert r.returncode == 0, r.stdout[-3000:]
    lines = [ln for ln in r.stdout.splitlines() if ln.strip()]
    assert lines[0].startswith("kernel-bench: Linear 32 -> 128") and len(lines) <= 5, lines
    assert not [ln for ln in lines if THIRD_PARTY.search(ln)], lines
    r = json.loads((tmp_path / "kernel_bench.json").read_text())
    assert set(r["median_ms_by_threads"]["1"]) == {"fp32", "int8", "int8-dynamic", "int8_ratio_to_fp32", "int8-dynamic_ratio_to_fp32"}
    assert THIRD_PARTY.search((tmp_path / "logs" / "kernel-bench.log").read_text())


def test_failing_stage_shows_its_log_tail_and_path(reference, tmp_path, capsys, monkeypatch):
    card = str(reference / "videoseal_1.0-mini.yaml")

    def noisy_then_broken(opts, part):
        os.write(2, b"native library says: something went wrong deep inside\n")
        raise RuntimeError("unexpected")

    monkeypatch.setenv("VIDEOSEAL_VERBOSE", "0")
    monkeypatch.setattr("videoseal_litert.convert.stages.stage_load", noisy_then_broken)
    capsys.readouterr()
    assert main(["load", "--model", card, "--out", str(tmp_path), "--random-init"]) == 3
    err = capsys.readouterr().err
    log_path = tmp_path / "videoseal_1.0-mini" / "logs" / "load.log"
    assert "native library says: something went wrong deep inside" in log_path.read_text()
    assert f"--- full log: {log_path} ---" in err
    assert "native library says" in err  # the tail
    assert err.strip().splitlines()[-1].startswith("error: InternalError: RuntimeError: unexpected")


def test_summary_names_what_is_missing_and_fails(reference, tmp_path, capsys):
    card = str(reference / "videoseal_1.0-mini.yaml")
    capsys.readouterr()
    assert main(["summary", "--model", card, "--out", str(tmp_path), "--variant", "fp32,int8"]) == 2
    captured = capsys.readouterr()
    assert "FAILED: fp32: no file | int8: no file" in captured.out
    assert captured.err.strip().splitlines()[-1].startswith("error: VerificationError: FAILED: fp32: no file")
