"""ARM64 kernels under emulation (``runtime/arm.py``, ``convert/arm_check.py``).

The margin check and the gates are tested on constructed logits (no emulator); the tiny pair's files on
the four emulated CPU models run in ``test_tiny_pair_on_arm64`` (the emulator set-up happens once per
machine, into ``.cache/arm64``)."""

from __future__ import annotations

import numpy as np
import pytest

from videoseal_litert.calibration_data.build import WATERMARK_SUFFIX
from videoseal_litert.convert.arm_check import _gate, extractor_figures, near_flips
from videoseal_litert.convert.parts import InputSet
from videoseal_litert.models.errors import ArmRunError
from videoseal_litert.runtime.arm import CPU_MODELS, Toolchain


def _inputs(n: int, suffix: str = "") -> InputSet:
    from videoseal_litert.calibration_data.images import Tally

    return InputSet([f"img{i}{suffix}" for i in range(n)], [{} for _ in range(n)], Tally(), [])


def test_near_flip_is_a_bit_within_twice_the_difference():
    x86 = np.array([[0.5, -0.01, 2.0], [-0.03, 1.0, -1.0]], np.float32)
    arm = x86 + np.array([[0.0, 0.02, 0.0], [0.0, 0.0, 0.0]], np.float32)  # bit 1 of img0 flips by 0.02
    found = near_flips(["a", "b"], x86, arm, diff=0.02)
    # |logit| < 0.04: (a, 1) at 0.01 (flipped) and (b, 0) at 0.03 (not flipped); smallest margin first
    assert [(f["image"], f["bit"], f["flipped"]) for f in found] == [("a", 1, True), ("b", 0, False)]


def test_flip_beyond_the_kernel_difference_fails_the_gate():
    from pathlib import Path

    from videoseal_litert.convert.options import RunOptions
    from videoseal_litert.convert.parts import make_part
    from videoseal_litert.models.registry import resolve

    part = make_part(RunOptions(spec=resolve("tiny"), out=Path("/nonexistent")), "extractor")
    x86 = {"bit_logits": np.array([[0.5, -0.01], [1.0, -2.0]], np.float32), "mask_logit": np.array([[1.0], [1.0]], np.float32)}
    ref = {"bit_logits": x86["bit_logits"].copy()}
    # Kernel noise of 0.02 on two bits; the one at -0.01 flips: explained, allowed on random weights only.
    noisy = {"bit_logits": x86["bit_logits"] + np.array([[0, 0.02], [0.02, 0]], np.float32), "mask_logit": x86["mask_logit"]}
    f = extractor_figures(_inputs(2, WATERMARK_SUFFIX), ref, x86, noisy, steps=0.01)
    assert f["bits_flipped_vs_x86"] == 1 and not f["unexplained_flips"]
    assert f["diff_in_output_steps"] == pytest.approx(2.0)
    assert _gate(part, "int8", "cortex-a53", f, random_init=True) == []
    assert len(_gate(part, "int8", "cortex-a53", f, random_init=False)) == 1  # a trained model: a watermarked bit may not flip
    # The same flip on clean photos (no message in their bits) follows the near-flip rule only.
    f = extractor_figures(_inputs(2), ref, x86, noisy, steps=0.01)
    assert f["watermarked_inputs"] == 0 and f["bits_flipped_on_watermarked"] == 0
    assert _gate(part, "int8", "cortex-a53", f, random_init=False) == []
    # A bit at 1.0 flips while every other bit moved 0.02 at most: not kernel noise, fails on any model.
    gross = {"bit_logits": x86["bit_logits"] + np.array([[0.02, 0.02], [-2.5, 0]], np.float32), "mask_logit": x86["mask_logit"]}
    f = extractor_figures(_inputs(2), ref, x86, gross, steps=None)
    assert [(u["image"], u["bit"]) for u in f["unexplained_flips"]] == [("img1", 0)]
    assert _gate(part, "int8", "cortex-a53", f, random_init=True)
    exact = extractor_figures(_inputs(2), ref, x86, {k: v.copy() for k, v in x86.items()}, steps=None)
    assert exact["exact"] and exact["bits_flipped_vs_x86"] == 0 and exact["near_flips"] == []


def test_unknown_cpu_model_is_a_named_error(tmp_path):
    with pytest.raises(ArmRunError, match="unknown ARM64 CPU model"):
        Toolchain(tmp_path).command("cortex-x9", ["-c", "pass"])
    assert set(CPU_MODELS) == {"cortex-a53", "neoverse-n1", "neoverse-v1", "max"}


def test_failed_setup_is_named_and_leaves_nothing(tmp_path, monkeypatch):
    """An unreachable package mirror: ArmSetupError naming the step and how to retry; no partial cache."""
    from videoseal_litert.models.errors import ArmSetupError
    from videoseal_litert.runtime import arm

    monkeypatch.setattr(arm, "_mirror", lambda: "http://127.0.0.1:9/debian")  # nothing listens on port 9
    cache = tmp_path / "cache" / "arm64"
    with pytest.raises(ArmSetupError, match=r"(?s)reading the Debian package lists.*make arm-check"):
        arm.ensure_toolchain(cache)
    assert not cache.exists() and list((tmp_path / "cache").iterdir()) == []
