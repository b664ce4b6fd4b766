"""ARM64 kernels under emulation (``runtime/arm.py``, ``convert/arm_check.py``).

The ARM-x86 bound (the rule's runtime bound) is tested on constructed outputs (no emulator; the rule itself in ``test_gate.py``); the
tiny pair's files on the four emulated CPU models run in ``test_tiny_pair_on_arm64`` (the emulator set-up
happens once per machine, into ``.cache/arm64``)."""

from __future__ import annotations

import numpy as np
import pytest

from videoseal_litert.convert.arm_check import arm_x86_figures
from videoseal_litert.core.errors import ArmRunError
from videoseal_litert.runtime.arm import CPU_MODELS, Toolchain


def _part(name: str):
    from pathlib import Path

    from videoseal_litert.convert.options import RunOptions
    from videoseal_litert.convert.parts import make_part
    from videoseal_litert.models.registry import resolve

    return make_part(RunOptions(spec=resolve("tiny"), out=Path("/nonexistent")), name)


def _gate(*signals: float) -> dict:
    """The groups of a verdict as arm-check reads them: only their PyTorch RMS matters here."""
    return {"groups": {f"g{i}": {"signal_rms": s} for i, s in enumerate(signals)}}


def test_arm_x86_difference_is_bounded_in_output_steps_or_a_percent_of_s():
    """The ARM-x86 difference has an absolute bound, the rule's runtime bound: at most two steps of an integer
    output, and for a float output 1% of the smallest S of the file's groups (PyTorch's RMS, never the file's)."""
    part = _part("extractor")
    rng = np.random.default_rng(0)
    x86 = {"mask_logit": rng.normal(0, 5, (4, 1)), "bit_logits": rng.normal(0, 5, (4, 48))}
    step = 0.02
    one_step = {k: v + step for k, v in x86.items()}
    f = arm_x86_figures(part, x86, one_step, step, _gate(5.0, 8.0))
    assert f["diff_in_output_steps"] == pytest.approx(1.0) and f["failures"] == []
    three = {k: v.copy() for k, v in x86.items()}
    three["bit_logits"][2, 5] += 3 * step
    f = arm_x86_figures(part, x86, three, step, _gate(5.0, 8.0))
    assert f["diff_in_output_steps"] == pytest.approx(3.0) and "over 2 output steps" in f["failures"][0]
    # A float output (no step): 1% of the smallest S, 0.05 here.
    close = {k: v + 0.04 for k, v in x86.items()}
    far = {k: v + 0.06 for k, v in x86.items()}
    assert arm_x86_figures(part, x86, close, None, _gate(5.0, 8.0))["failures"] == []
    f = arm_x86_figures(part, x86, far, None, _gate(5.0, 8.0))
    assert f["output_step"] is None and "over 1% of PyTorch's RMS 5" in f["failures"][0]
    assert arm_x86_figures(part, x86, {k: v.copy() for k, v in x86.items()}, None, _gate(5.0))["exact"]


def test_an_embedders_arm_difference_is_measured_against_its_watermark():
    part = _part("embedder")
    rng = np.random.default_rng(1)
    marked = rng.uniform(0.2, 0.8, (2, 8, 8, 3))
    gate = _gate(0.01, 9.0)  # the pixels' S (the watermark's RMS) and the decoded bits': the smaller bounds pixels
    close = arm_x86_figures(part, {"watermarked": marked}, {"watermarked": marked + 0.00009}, None, gate)
    far = arm_x86_figures(part, {"watermarked": marked}, {"watermarked": marked + 0.001}, None, gate)
    assert close["failures"] == [] and far["failures"] and far["bound"] == pytest.approx(1e-4)


def test_unknown_cpu_model_is_a_named_error(tmp_path):
    with pytest.raises(ArmRunError, match="unknown ARM64 CPU model"):
        Toolchain(tmp_path).command("cortex-x9", ["-c", "pass"])
    assert set(CPU_MODELS) == {"cortex-a53", "neoverse-n1", "neoverse-v1", "max"}


def test_failed_setup_is_named_and_leaves_nothing(tmp_path, monkeypatch):
    """An unreachable package mirror: ArmSetupError naming the step and how to retry; no partial cache."""
    from videoseal_litert.core.errors import ArmSetupError
    from videoseal_litert.runtime import arm

    monkeypatch.setattr(arm, "_mirror", lambda: "http://127.0.0.1:9/debian")  # nothing listens on port 9
    cache = tmp_path / "cache" / "arm64"
    with pytest.raises(ArmSetupError, match=r"(?s)reading the Debian package lists.*make arm-check"):
        arm.ensure_toolchain(cache)
    assert not cache.exists() and list((tmp_path / "cache").iterdir()) == []
