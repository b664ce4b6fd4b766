"""The tiny demo model's training script: smoke run, exact resume, strict-loading export."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from convert.load import load_extractor
from models.registry import resolve
from models.train_tiny import blend, main

SMOKE = ["--batch", "2", "--size", "64", "--aug-from", "0", "--image-loss-from", "0", "--ramp", "1", "--log-every", "1", "--seed", "3"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("train")
    assert main(["--steps", "3", "--ckpt-dir", str(d / "straight"), "--export", str(d / "export"), *SMOKE]) == 0
    assert main(["--steps", "2", "--ckpt-dir", str(d / "parts"), *SMOKE]) == 0
    assert main(["--steps", "3", "--ckpt-dir", str(d / "parts"), *SMOKE]) == 0
    return d


def test_run_in_parts_equals_run_in_one_go(runs):
    a = torch.load(runs / "straight" / "state.pt", weights_only=True)
    b = torch.load(runs / "parts" / "state.pt", weights_only=True)
    assert a["step"] == b["step"] == 3
    for part in ("embedder", "extractor"):
        for k, v in a[part].items():
            torch.testing.assert_close(b[part][k], v, rtol=0, atol=1e-6, msg=f"{part}.{k}")
    init = torch.load(runs / "parts" / "state.pt", weights_only=True)["extractor"]
    assert any(float(v.float().abs().sum()) > 0 for v in init.values())


def test_export_loads_strictly_through_the_card_reader(runs):
    card = runs / "export" / "tiny.yaml"
    loaded = load_extractor(resolve(str(card)))
    assert loaded.config.nbits == 48 and not loaded.random_init
    sd = load_file(str(runs / "export" / "extractor.safetensors"))
    state = torch.load(runs / "straight" / "state.pt", weights_only=True)["extractor"]
    assert set(sd) == set(state) and all(torch.equal(sd[k], state[k]) for k in sd)
    record = json.loads((runs / "export" / "training_record.json").read_text())
    assert record["steps"] == 3 and record["seed"] == 3 and "CPU" in record["hardware"]
    m = record["heldout_metrics_256"]
    assert m["num_images"] == 7 and 0.0 <= m["bit_accuracy"] <= 1.0 and m["psnr_db"] > 10


def test_blend_is_the_official_formula_clamped():
    img = torch.tensor([[[[0.0, 0.5, 0.95]]]])
    res = torch.tensor([[[[-1.0, 0.5, 1.0]]]])
    assert torch.allclose(blend(img, res), torch.tensor([[[[0.0, 0.6, 1.0]]]]))
