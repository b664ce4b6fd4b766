"""One command-line parser: the same flags, spelled and checked the same, on every command that takes a model."""

from __future__ import annotations

import pytest

from videoseal_litert.cli import COMMANDS, MODEL, build_parser
from videoseal_litert.core.errors import UsageError

MODEL_FLAGS = {"--model", "--part", "--ckpt", "--random-init", "--allow-zero-weights", "--allow-nonfinite-weights", "--images", "--force"}


def model_commands() -> list[str]:
    return [name for name, (_, parents, _, _) in COMMANDS.items() if MODEL in parents]


def test_the_model_flags_are_one_set():
    assert {s for a in MODEL._actions for s in a.option_strings} >= MODEL_FLAGS


@pytest.mark.parametrize("command", model_commands())
def test_every_model_command_takes_the_same_flags(command):
    """`make quantize` after `make convert ALLOW_ZERO_WEIGHTS=1` once failed: quantize lacked the flag."""
    a = build_parser().parse_args(
        [command, "--model", "tiny", "--part", "extractor", "--ckpt", "c.pth", "--random-init", "--allow-zero-weights"]
        + ["--allow-nonfinite-weights", "--images", "photos", "--force", "--out", "o", "--threads", "1"]
    )
    assert (a.model, a.part, str(a.ckpt), a.random_init, a.allow_zero_weights, a.allow_nonfinite_weights) == (
        "tiny",
        "extractor",
        "c.pth",
        True,
        True,
        True,
    )
    assert (str(a.images), a.force, str(a.out), a.threads) == ("photos", True, "o", 1)


def test_commands_that_make_stages_need_a_model_and_the_main_ones_have_one():
    assert {"convert", "load", "export", "tflite", "verify", "quantize", "embedder", "bench", "package", "calib-sweep"} <= set(
        model_commands()
    )


def test_a_bad_option_is_a_named_usage_error():
    with pytest.raises(UsageError, match="--part: invalid choice: 'decoder'"):
        build_parser().parse_args(["convert", "--model", "tiny", "--part", "decoder"])
    with pytest.raises(UsageError, match="the following arguments are required: --model"):
        build_parser().parse_args(["quantize"])


@pytest.mark.parametrize(
    ("part", "flag", "value", "says"),
    [
        ("extractor", "--target-agreement", "1.5", "not a fraction"),
        ("embedder", "--target-watermark-snr", "-3", "is negative"),
    ],
)
def test_accuracy_control_targets_are_checked_before_any_work(part, flag, value, says, tmp_path, capsys):
    from videoseal_litert.cli import main

    assert main(["quantize", "--model", "tiny", "--part", part, "--out", str(tmp_path), flag, value]) == 2
    err = capsys.readouterr().err
    assert "error: UsageError: " in err and says in err and flag in err
    assert not any(tmp_path.rglob("*.tflite"))


def test_accuracy_control_target_reaches_the_stage(monkeypatch, tmp_path):
    """`make quantize TARGET_AGREEMENT=0.999` on any model: the flag is the extractor stage's target."""
    import argparse

    from videoseal_litert import handlers
    from videoseal_litert.quantize import quantize_stage as stage

    seen = {}
    monkeypatch.setattr(stage, "stage_quantize", lambda opts, part, calib, io, variants, target: seen.update(target=target))
    a = build_parser().parse_args(["quantize", "--model", "videoseal", "--out", str(tmp_path), "--target-agreement", "0.999"])
    assert isinstance(a, argparse.Namespace)
    part = type("P", (), {"name": "extractor"})()
    for call in handlers._quantize_calls(a, None, part, ("int8",)):
        call()
    assert seen == {"target": 0.999}
