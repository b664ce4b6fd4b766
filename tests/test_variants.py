"""The variants table: every row complete, and a new variant is one row that every stage picks up."""

from __future__ import annotations

import json

import pytest

from tests.conftest import cli
from videoseal_litert.models.contracts import PART_NAMES
from videoseal_litert.models.registry import REGISTRY
from videoseal_litert.models.variants import VARIANTS, Variant, names, variant


@pytest.mark.parametrize("name", list(VARIANTS))
def test_every_variant_row_is_complete(name):
    v = VARIANTS[name]
    assert v.parts and set(v.parts) <= set(PART_NAMES) and v.precision in ("fp32", "fp16", "quantized")  # floors: test_gate.py
    assert v.io_dtype in ("float32", "int8") and (v.recipe is None) == (name == "fp32")


def test_the_benchmark_order_is_the_tables_and_a_row_may_set_its_own():
    assert names() == list(VARIANTS) and names()[0] == "fp32"
    assert names("embedder") == ["fp32", "fp16", "int8"]


@pytest.mark.parametrize("spec", REGISTRY, ids=lambda s: s.name)
def test_spec_floors_name_known_variants_of_the_right_part(spec):
    for part, floors in spec.verification.floors.items():
        for name in floors:
            assert part in variant(name).parts, (spec.name, part, name)


def test_unknown_variant_is_a_named_error():
    from videoseal_litert.core.errors import UsageError

    with pytest.raises(UsageError, match="unknown variant 'int9'; choose from fp32, fp16"):
        variant("int9")
    with pytest.raises(UsageError, match="does not apply to the embedder"):
        variant("int8-full", "embedder")


def recipe_int8_weights(q, policy, io_int8):
    """A variant the project does not have: int8 weights for the family's static ops, float compute."""
    from ai_edge_quantizer import qtyping

    for op in policy.static:
        q.add_weight_only_config(".*", qtyping.TFLOperationName[op], num_bits=8)


def test_a_new_variant_is_one_row(pipeline, tmp_path, monkeypatch):
    """Register a row (and its recipe): quantize writes and verifies it by the rule at its precision's floor, the
    benchmark times it and a bundle ships it, with no other change."""
    from videoseal_litert.models.contracts import EXTRACTOR

    row = Variant("int8-weights", recipe_int8_weights, (EXTRACTOR,), bench_order=9)  # precision "quantized": the 12 dB floor
    monkeypatch.setitem(VARIANTS, row.name, row)
    out, d = pipeline.copy(pipeline.converted("videoseal_1.0-mini"), tmp_path)
    card = pipeline.card("videoseal_1.0-mini")
    assert cli("quantize", "--model", card, "--out", out, "--variants", "int8-weights", "--untrained") == 0
    rep = json.loads((d / "verify-int8-weights.json").read_text())
    assert rep["passed"] and rep["rule"]["floor_db"] == 12.0 and rep["sqnr_db"] >= 12.0
    assert (d / "int8-weights.tflite").stat().st_size < 0.35 * (d / "fp32.tflite").stat().st_size
    # The shared folder this copies may hold the mini's other files, int8-full failed among them (random weights):
    # the bench takes them labelled; the new row is verified.
    bench = ("bench", "--model", card, "--out", out, "--runs", "1", "--warmup", "0", "--bench-threads", "1", "--untrained")
    assert cli(*bench, "--allow-unverified") == 0
    b = json.loads((d / "bench.json").read_text())
    assert "int8-weights" in b["latency"]["1"] and b["verification"]["int8-weights"] == "verified"
    assert cli("package", "--model", card, "--out", out, "--dist", tmp_path / "dist", "--variants", "int8-weights", "--untrained") == 0
    golden = json.loads((tmp_path / "dist" / "videoseal_1.0-mini" / "golden" / "golden.json").read_text())
    assert list(golden["variants"]) == ["int8-weights"]
