"""ARM64 kernels under emulation (``runtime/arm.py``, ``convert/arm_check.py``).

The ARM-x86 bound is tested on constructed outputs (no emulator; the rule itself in ``test_gate.py``); the
tiny pair's files on the four emulated CPU models run in ``test_tiny_pair_on_arm64`` (the emulator set-up
happens once per machine, into ``.cache/arm64``)."""

from __future__ import annotations

import numpy as np
import pytest

from videoseal_litert.convert.arm_check import arm_x86_figures
from videoseal_litert.core.errors import ArmRunError
from videoseal_litert.models.gate import Band
from videoseal_litert.runtime.arm import CPU_MODELS, Toolchain


def _part(name: str):
    from pathlib import Path

    from videoseal_litert.convert.options import RunOptions
    from videoseal_litert.convert.parts import make_part
    from videoseal_litert.models.registry import resolve

    return make_part(RunOptions(spec=resolve("tiny"), out=Path("/nonexistent")), name)


def test_arm_x86_difference_is_bounded_in_output_steps_and_by_the_band():
    """The ARM-x86 difference has an absolute bound: at most two steps of an integer output, and as noise
    no more than the band's cap on the rule's signal; it does not grow with the error."""
    part = _part("extractor")
    rng = np.random.default_rng(0)
    x86 = {"mask_logit": rng.normal(0, 5, (4, 1)), "bit_logits": rng.normal(0, 5, (4, 48))}
    band, signal = Band(20.0), 5.0  # cap: 0.1 x the signal's RMS = 0.5
    step = 0.02
    one_step = {k: v + step for k, v in x86.items()}
    f = arm_x86_figures(part, x86, one_step, band, step, signal)
    assert f["diff_in_output_steps"] == pytest.approx(1.0) and f["failures"] == [] and f["noise_cap_rms"] == pytest.approx(0.5)
    three = {k: v.copy() for k, v in x86.items()}
    three["bit_logits"][2, 5] += 3 * step
    f = arm_x86_figures(part, x86, three, band, step, signal)
    assert f["diff_in_output_steps"] == pytest.approx(3.0) and "3.00 output steps (at most 2)" in f["failures"][0]
    # A float output (no step): an ARM file noisier than the band allows, however its errors fall.
    noisy = {k: v + rng.normal(0, 1.0, v.shape) for k, v in x86.items()}
    f = arm_x86_figures(part, x86, noisy, band, None, signal)
    assert f["output_step"] is None and "over the band's cap" in f["failures"][0]
    assert arm_x86_figures(part, x86, {k: v.copy() for k, v in x86.items()}, band, None, signal)["exact"]


def test_an_embedders_arm_difference_is_measured_against_its_watermark():
    part = _part("embedder")
    rng = np.random.default_rng(1)
    marked = rng.uniform(0.2, 0.8, (2, 8, 8, 3))
    band, watermark_rms = Band(10.0), 0.01  # cap: the watermark's RMS / 3.16
    close = arm_x86_figures(part, {"watermarked": marked}, {"watermarked": marked + 0.001}, band, None, watermark_rms)
    far = arm_x86_figures(part, {"watermarked": marked}, {"watermarked": marked + 0.01}, band, None, watermark_rms)
    assert close["failures"] == [] and close["arm_x86_snr_db"] == pytest.approx(20.0, abs=0.01)
    assert far["failures"] and far["arm_x86_snr_db"] == pytest.approx(0.0, abs=0.01)


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
