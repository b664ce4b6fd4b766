"""Strict checkpoint loading and every named error case."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from videoseal_litert.convert.load import load_extractor
from videoseal_litert.core.errors import CheckpointFormatError, CheckpointMismatchError, CheckpointNotFoundError, ZeroWeightError
from videoseal_litert.models.registry import resolve

MINI = "videoseal_1.0-mini"


@pytest.fixture(scope="module")
def mini_spec(reference):
    return resolve(str(reference / f"{MINI}.yaml"))


@pytest.fixture(scope="module")
def official(reference):
    return torch.load(reference / f"{MINI}.pth", weights_only=True)


def _logits(loaded, reference):
    x = torch.from_numpy(np.load(reference / f"{MINI}.npz")["images"][:1])
    with torch.no_grad():
        return loaded.module(x)


def test_missing_file_names_url_and_path(tmp_path):
    spec = resolve("videoseal")
    with pytest.raises(CheckpointNotFoundError) as e:
        load_extractor(spec, tmp_path / "nope.pth")
    assert "https://dl.fbaipublicfiles.com/videoseal/y_256b_img.pth" in str(e.value)
    assert str(tmp_path / "nope.pth") in str(e.value)


def test_default_checkpoint_path_is_named(monkeypatch, tmp_path):
    spec = resolve("chunkyseal")
    with pytest.raises(CheckpointNotFoundError) as e:
        load_extractor(spec)
    assert "models/checkpoints/chunkyseal_checkpoint.pth" in str(e.value)
    assert "chunkyseal/checkpoint.pth" in str(e.value)


def test_bare_and_safetensors_load_like_official(mini_spec, official, reference, tmp_path):
    ref = _logits(load_extractor(mini_spec, reference / f"{MINI}.pth"), reference)
    bare = {k.removeprefix("detector."): v for k, v in official["model"].items()}
    torch.save(bare, tmp_path / "bare.pth")
    save_file({k: v.contiguous() for k, v in bare.items()}, str(tmp_path / "w.safetensors"))
    for path in (tmp_path / "bare.pth", tmp_path / "w.safetensors"):
        loaded = load_extractor(mini_spec, path)
        torch.testing.assert_close(_logits(loaded, reference), ref, rtol=0, atol=0)
        assert len(loaded.checkpoint_sha256) == 64


def test_embedder_keys_are_ignored(mini_spec, official, tmp_path):
    state = dict(official["model"])
    state["embedder.unet.some.weight"] = torch.zeros(3)
    torch.save({"model": state}, tmp_path / "both.pth")
    load_extractor(mini_spec, tmp_path / "both.pth")


def test_wrong_keys_are_all_named(mini_spec, official, tmp_path):
    state = dict(official["model"])
    del state["detector.pixel_decoder.linear.bias"]
    state["detector.convnext.extra.weight"] = torch.zeros(2)
    state["detector.convnext.stages.0.0.dwconv.weight"] = torch.zeros(24, 1, 5, 5)
    torch.save({"model": state}, tmp_path / "bad.pth")
    with pytest.raises(CheckpointMismatchError) as e:
        load_extractor(mini_spec, tmp_path / "bad.pth")
    msg = str(e.value)
    assert "1 missing" in msg and "pixel_decoder.linear.bias" in msg
    assert "1 unexpected" in msg and "convnext.extra.weight" in msg
    assert "1 mis-shaped" in msg and "stages.0.0.dwconv.weight: checkpoint (24, 1, 5, 5) vs model (24, 1, 7, 7)" in msg


def test_checkpoint_of_another_model_is_refused(reference):
    with pytest.raises(CheckpointMismatchError, match="mis-shaped"):
        load_extractor(resolve(str(reference / "chunkyseal-mini.yaml")), reference / f"{MINI}.pth")


def test_truncated_file(reference, mini_spec, tmp_path):
    data = (reference / f"{MINI}.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointFormatError, match="truncated or corrupt"):
        load_extractor(mini_spec, tmp_path / "cut.pth")
    (tmp_path / "cut.safetensors").write_bytes(b'\x10\x00\x00\x00\x00\x00\x00\x00{"a":')
    with pytest.raises(CheckpointFormatError, match="safetensors"):
        load_extractor(mini_spec, tmp_path / "cut.safetensors")


class _RunsCode:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_that_would_run_code_is_refused(mini_spec, tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"model": {"x": _RunsCode(str(marker))}}, tmp_path / "evil.pth", pickle_protocol=pickle.DEFAULT_PROTOCOL)
    with pytest.raises(CheckpointFormatError, match="refused to unpickle"):
        load_extractor(mini_spec, tmp_path / "evil.pth")
    assert not marker.exists()


def test_all_zero_weight_is_refused_unless_allowed(mini_spec, official, tmp_path):
    state = dict(official["model"])
    state["detector.convnext.stages.1.0.pwconv1.weight"] = torch.zeros_like(state["detector.convnext.stages.1.0.pwconv1.weight"])
    state["detector.convnext.stages.1.0.pwconv1.bias"] = torch.zeros_like(state["detector.convnext.stages.1.0.pwconv1.bias"])
    torch.save({"model": state}, tmp_path / "zero.pth")
    with pytest.raises(ZeroWeightError) as e:
        load_extractor(mini_spec, tmp_path / "zero.pth")
    assert "convnext.stages.1.0.pwconv1.weight" in str(e.value) and "pwconv1.bias" not in str(e.value)
    assert load_extractor(mini_spec, tmp_path / "zero.pth", allow_zero_weights=True).random_init is False


def test_random_init_is_seeded_and_labelled(mini_spec):
    a, b = load_extractor(mini_spec, random_init=True), load_extractor(mini_spec, random_init=True)
    assert a.random_init and a.checkpoint_sha256 is None
    for (k, va), vb in zip(a.module.state_dict().items(), b.module.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k
