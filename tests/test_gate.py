"""The one rule (``models/gate.py``) on constructed outputs: what it fails, what it lets through, and its floors.

No conversion. Each case is a PyTorch reference shaped like the trained tiny pair's (mask logits about +-8.5 on
watermarked and clean photos, bit logits about +-9 on watermarked ones, noise around zero on clean ones) and a
"file" made from it by a stated change: the reviewer's cases of issue 38 at the real constants (the clear fraction
0.5, the near allowance floor(0.005 N), the variants table's floors). Each expected verdict follows from that
change and the rule's definition, not from the code's output. Then the property that matters most: moving any
output further from PyTorch's value never turns a FAIL into a PASS, over many seeded random cases."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from videoseal_litert.core.errors import CardError
from videoseal_litert.models.cards import parse_verification
from videoseal_litert.models.contracts import EMBEDDER, EXTRACTOR
from videoseal_litert.models.gate import (
    CLEAR_FRACTION,
    NEAR_FLIP_FRACTION,
    Floor,
    Rule,
    allowed_near_flips,
    judge_decisions,
    judge_embedder,
    judge_extractor,
    judge_runtime_difference,
)
from videoseal_litert.models.registry import REGISTRY, resolve
from videoseal_litert.models.variants import FLOORS, VARIANTS, FloorError, default_variants, rule_for

NBITS, PHOTOS = 48, 21
QUANTIZED = Rule(FLOORS[EXTRACTOR]["quantized"])  # 12 dB, the clear fraction 0.5, detection gated


def _pair(seed: int = 0, noise: float = 0.3) -> tuple[np.ndarray, np.ndarray, list[str], list[bool]]:
    """PyTorch's logits on 21 clean photos and their 21 watermarked twins (mask first), and a file's: the same plus
    Gaussian noise of RMS ``noise`` (about 30 dB under the signal: an honest INT8 file)."""
    rng = np.random.default_rng(seed)
    ref = np.zeros((2 * PHOTOS, 1 + NBITS))
    ref[0::2, 0] = -rng.uniform(6.0, 11.0, PHOTOS)  # clean: not detected
    ref[1::2, 0] = rng.uniform(6.0, 11.0, PHOTOS)  # watermarked: detected
    ref[0::2, 1:] = rng.normal(0.0, 1.0, (PHOTOS, NBITS))  # a clean photo's bits: noise, no message
    ref[1::2, 1:] = rng.choice([-1.0, 1.0], (PHOTOS, NBITS)) * rng.uniform(5.0, 13.0, (PHOTOS, NBITS))
    names = [f"photo{i // 2}:full" + ("+wm" if i % 2 else "") for i in range(2 * PHOTOS)]
    return ref, ref + rng.normal(0.0, noise, ref.shape), names, [bool(i % 2) for i in range(2 * PHOTOS)]


def _judge(ref: np.ndarray, got: np.ndarray, names: list[str], marked: list[bool], rule: Rule = QUANTIZED):
    return judge_extractor(ref, got, names, marked, rule)


def test_an_honest_file_passes_and_its_figures_are_the_definition():
    ref, got, names, marked = _pair()
    v = _judge(ref, got, names, marked)
    assert v.passed and [g.group for g in v.groups] == ["detection", "bits"]
    det, bits = v.groups
    assert det.decisions == 2 * PHOTOS and bits.decisions == PHOTOS * NBITS  # clean photos' bits are in no group
    s = math.sqrt(np.mean(ref[1::2, 1:] ** 2))
    assert bits.signal_rms == pytest.approx(s) and bits.clear_threshold == pytest.approx(0.5 * s)
    assert bits.noise_rms == pytest.approx(math.sqrt(np.mean((got - ref)[1::2, 1:] ** 2)))
    assert bits.near_flips_allowed == 5 and det.near_flips_allowed == 0  # floor(0.005 x 1008), floor(0.005 x 42)


def test_every_clean_photo_flagged_fails_detection_by_name():
    """The last layer's mask bias moved by +8: clean photos' mask logits about +0.3 (PyTorch -8.5)."""
    ref, got, names, marked = _pair()
    got[:, 0] = ref[:, 0] + 8.0
    v = _judge(ref, got, names, marked)
    assert not v.passed and v.group("bits").passed  # the bits are untouched: the failure is detection's alone
    (f,) = v.failures
    assert f.startswith("detection: ") and "inputs PyTorch finds unwatermarked flagged" in f and "photo" in f


@pytest.mark.parametrize(
    "case",
    ["15 of 21 watermarked missed", "20 of 21 clean flagged", "15 missed and 10 false positives", "mask offset -11.6"],
)
def test_the_reviewers_detection_cases_each_fail(case):
    ref, got, names, marked = _pair()
    wm, clean = np.arange(1, 2 * PHOTOS, 2), np.arange(0, 2 * PHOTOS, 2)
    if case == "15 of 21 watermarked missed":
        got[wm[:15], 0] = -0.5
    elif case == "20 of 21 clean flagged":
        got[clean[:20], 0] = 0.5
    elif case == "15 missed and 10 false positives":
        got[wm[:15], 0], got[clean[:10], 0] = -0.5, 0.5
    else:
        got[:, 0] = ref[:, 0] - 11.6
    v = _judge(ref, got, names, marked)
    assert not v.passed and not v.group("detection").passed and v.group("detection").clear_flips


def test_the_weakest_tenth_of_the_bits_flipped_fails():
    """90% agreement: the 10% of the watermarked bits nearest zero, each moved just across it."""
    ref, got, names, marked = _pair(noise=0.0)
    bits = ref[1::2, 1:]
    weak = np.abs(bits) <= np.quantile(np.abs(bits), 0.10)
    got[1::2, 1:] = np.where(weak, -0.01 * np.sign(bits), bits)
    v = _judge(ref, got, names, marked)
    assert not v.passed and v.group("bits").flips == int(weak.sum()) > 5


def test_one_bit_inverted_fails_however_far_it_moves():
    """The same bit moved just across zero and inverted at full margin: both fail (a larger error never excuses itself)."""
    ref, got, names, marked = _pair()
    i, j = 1, 1 + int(np.argmax(np.abs(ref[1, 1:])))  # watermarked photo 0's strongest bit
    for moved in (-0.05 * np.sign(ref[i, j]), -ref[i, j]):
        bad = got.copy()
        bad[i, j] = moved
        v = _judge(ref, bad, names, marked)
        assert not v.passed and v.group("bits").clear_flips[0]["input"] == "photo0:full+wm"


def test_a_bit_inverted_on_every_image_is_named_on_every_image():
    ref, got, names, marked = _pair()
    got[1::2, 4] = -ref[1::2, 4]
    v = _judge(ref, got, names, marked)
    assert not v.passed and {f["input"] for f in v.group("bits").clear_flips if f["output"] == "bit 3"} == set(names[1::2])


def test_clean_photos_bits_enter_no_statistic():
    """Errors, however large, on the bits of clean photos neither fail a file nor excuse a flip elsewhere."""
    ref, got, names, marked = _pair()
    noisy = got.copy()
    noisy[0::2, 1:] += 50.0  # the clean photos' bits, far off
    assert _judge(ref, noisy, names, marked).passed
    for g in (got.copy(), noisy):
        g[1, 1] = -ref[1, 1]  # one clear flip on a watermarked photo
        assert not _judge(ref, g, names, marked).passed


def test_near_flips_are_allowed_up_to_half_a_percent_of_the_group():
    """1008 bits: 5 near flips pass, 6 fail; 42 detections: none may flip."""
    ref, got, names, marked = _pair(noise=0.0)
    ref[1::2, 1:7] = 0.01  # six bits of photo 0 near zero (|PyTorch| << 0.5 S)
    got[1::2, 1:7] = 0.01
    five, six = got.copy(), got.copy()
    five[1, 1:6], six[1, 1:7] = -0.01, -0.01
    assert _judge(ref, five, names, marked).passed
    v = _judge(ref, six, names, marked)
    assert not v.passed and "6 near, at most 5 allowed" in v.failures[0]
    ref[1, 0], got[1, 0] = 0.01, -0.01  # one near detection flip among 42
    assert "detection" in _judge(ref, got, names, marked).failures[0]


def test_a_subset_is_allowed_the_near_flips_of_the_set_it_was_drawn_from():
    """arm-check re-runs 2 of the verification inputs: 96 bits allow no near flip on their own, yet x86 passed
    the same two flips within the 1008 bits' allowance of 5. Drawn from that set the subset passes them; a third
    (6 > 5 would fail x86 too) and any clear flip still fail; the rule survives its JSON round trip (the bundle)."""
    ref, got, names, marked = _pair(noise=0.0)
    ref, got, names, marked = ref[:4], got[:4], names[:4], marked[:4]  # 2 watermarked photos: 96 bits
    ref[1, 1:4] = [-0.1, -0.02, -0.05]
    got[1, 1:4] = [0.08, 0.004, -0.05]  # two near flips
    assert "2 near, at most 0 allowed" in _judge(ref, got, names, marked).failures[0]
    drawn = QUANTIZED.drawn({"bits": 1008, "detection": 42})
    assert _judge(ref, got, names, marked, drawn).passed
    assert Rule.from_dict(drawn.as_dict()) == drawn
    ref6, six = ref.copy(), got.copy()
    ref6[3, 1:5] = np.sign(ref6[3, 1:5]) * 0.03  # four more near decisions of PyTorch's, each flipped
    six[3, 1:5] = -ref6[3, 1:5]
    assert "6 near, at most 5 allowed" in _judge(ref6, six, names, marked, drawn).failures[0]
    clear = got.copy()
    clear[3, 10] = -ref[3, 10]  # one clear bit inverted
    assert not _judge(ref, clear, names, marked, drawn).passed
    assert drawn.allowance("bits / jpeg_50", 96) == 0  # a group the set did not have keeps its own


def test_mask_and_bits_are_judged_each_on_its_own():
    """One detection flip cannot hide among a thousand bits: it fails, though the bits are perfect."""
    ref, got, names, marked = _pair(noise=0.0)
    got[1, 0] = -ref[1, 0]
    v = _judge(ref, got, names, marked)
    assert not v.group("detection").passed and v.group("bits").passed and not v.passed


def test_the_snr_floor_fails_noise_that_flips_nothing():
    ref, got, names, marked = _pair(noise=0.0)
    s = math.sqrt(np.mean(ref[1::2, 1:] ** 2))
    err = s * 10 ** (-11.0 / 20)  # 11 dB: a quarter of S is 12 dB
    got[1::2, 1:] = ref[1::2, 1:] + err * np.sign(ref[1::2, 1:])  # pushed away from zero: no flip at all
    v = _judge(ref, got, names, marked)
    assert v.group("bits").flips == 0 and not v.passed and "SNR 11.00 dB < 12 dB" in v.failures[0]
    got[1::2, 1:] = ref[1::2, 1:] + s * 10 ** (-13.0 / 20) * np.sign(ref[1::2, 1:])
    assert _judge(ref, got, names, marked).passed


def test_attacked_views_are_groups_of_their_own():
    ref, got, names, marked = _pair()
    attacks = [None] * len(names)
    ref2, got2 = np.concatenate([ref, ref[1::2]]), np.concatenate([got, got[1::2]])
    names2 = names + [n + "/jpeg_50" for n in names[1::2]]
    attacks2 = attacks + ["jpeg_50"] * PHOTOS
    got2[-1, 0] = -ref2[-1, 0]  # the last attacked view's detection lost
    v = judge_extractor(ref2, got2, names2, marked + [True] * PHOTOS, QUANTIZED, attacks2)
    assert [g.group for g in v.groups] == ["detection", "bits", "detection / jpeg_50", "bits / jpeg_50"]
    assert [g.group for g in v.groups if not g.passed] == ["detection / jpeg_50"]


def test_an_untrained_mask_is_reported_not_gated():
    ref, got, names, marked = _pair()
    got[:, 0] = ref[:, 0] + 8.0
    v = _judge(ref, got, names, marked, dataclasses.replace(QUANTIZED, detection_gated=False))
    assert v.passed and v.notes and "reported, not gated" in v.notes[0]


def test_monotone_moving_outputs_further_never_turns_a_fail_into_a_pass():
    """Over seeded random cases (files of every quality, near and clear decisions, random groups), scaling each
    output's error by its own factor >= 1 never turns FAIL into PASS."""
    rng = np.random.default_rng(2026)
    seen = {True: 0, False: 0}
    for case in range(300):
        n, m = int(rng.integers(2, 12)), int(rng.integers(2, 40))
        ref = rng.normal(0.0, rng.uniform(0.5, 10.0), (n, 1 + m))
        ref[rng.random(ref.shape) < 0.05] = 0.0
        noise = rng.uniform(0.0, 1.5) * np.sqrt(np.mean(ref**2))
        err = rng.normal(0.0, noise, ref.shape) * (rng.random(ref.shape) < rng.uniform(0.05, 1.0))
        marked = list(rng.random(n) < 0.6)
        attacks = [None if rng.random() < 0.7 else "jpeg_50" for _ in range(n)]
        rule = Rule(Floor(float(rng.choice([0.0, 12.0, 40.0]))), float(rng.uniform(0.1, 0.5)))
        before = judge_extractor(ref, ref + err, [f"i{k}" for k in range(n)], marked, rule, attacks).passed
        seen[before] += 1
        scale = 1.0 + rng.exponential(1.0, ref.shape) * (rng.random(ref.shape) < 0.5)
        after = judge_extractor(ref, ref + err * scale, [f"i{k}" for k in range(n)], marked, rule, attacks).passed
        assert after <= before, f"case {case}: a worse file passed where the better one failed"
    assert seen[True] > 20 and seen[False] > 20  # both verdicts were exercised


def test_a_decision_group_s_and_clear_set_come_from_pytorch_alone():
    ref = np.array([[4.0, -4.0, 0.5, -0.5]])
    got_a = ref.copy()
    got_b = ref + np.array([[30.0, -30.0, 0.0, 0.0]])  # a file with a huge error, none flipped
    a = judge_decisions("bits", ref, got_a, ["x"], lambda j: f"bit {j}", QUANTIZED, None)
    b = judge_decisions("bits", ref, got_b, ["x"], lambda j: f"bit {j}", QUANTIZED, None)
    assert a.clear_threshold == b.clear_threshold == pytest.approx(0.5 * math.sqrt(np.mean(ref**2)))
    assert a.clear == b.clear == 2


def test_an_embedders_pixels_and_decoded_decisions():
    rng = np.random.default_rng(1)
    covers = rng.uniform(0.2, 0.8, (4, 8, 8, 3))
    ref = covers + rng.normal(0, 0.01, covers.shape)
    rule = Rule(FLOORS[EMBEDDER]["quantized"])
    ok = judge_embedder(covers, ref, ref + (ref - covers) * 0.05, rule)  # error 26 dB below the watermark
    bad = judge_embedder(covers, ref, ref + (ref - covers) * 0.5, rule)  # 6 dB below: under the 10 dB floor
    assert ok.passed and ok.groups[0].snr_db == pytest.approx(26.02, abs=0.01)
    assert not bad.passed and "pixels: SNR 6.02 dB < 10 dB" in bad.failures[0]
    dec = rng.choice([-1.0, 1.0], (4, 1 + 12)) * rng.uniform(4, 9, (4, 13))
    flipped = dec.copy()
    flipped[2, 5] *= -1
    v = judge_embedder(covers, ref, ref, rule, [f"c{i}" for i in range(4)], (dec, flipped))
    assert [g.group for g in v.groups] == ["pixels", "decoded detection", "decoded bits"]
    assert not v.passed and v.failures[0].startswith("decoded bits: ") and v.group("decoded bits").floor_db is None


def test_another_runtime_may_differ_from_x86_by_two_steps_or_one_percent():
    base = np.zeros((2, 5))
    assert judge_runtime_difference(base, base + 0.02, 1.0, 0.01)["failures"] == []  # two steps of 0.01
    assert "over 2 output steps" in judge_runtime_difference(base, base + 0.021, 1.0, 0.01)["failures"][0]
    assert judge_runtime_difference(base, base + 0.009, 1.0, None)["failures"] == []  # under 1% of S = 1
    assert "over 1% of PyTorch's RMS" in judge_runtime_difference(base, base + 0.011, 1.0, None)["failures"][0]


def test_the_constants():
    assert CLEAR_FRACTION == 0.5 and NEAR_FLIP_FRACTION == 0.005
    assert allowed_near_flips(42) == 0 and allowed_near_flips(1008) == 5 and allowed_near_flips(200) == 1
    assert {k: f.snr_db for k, f in FLOORS[EXTRACTOR].items()} == {"fp32": 80.0, "fp16": 40.0, "quantized": 12.0}
    assert {k: f.snr_db for k, f in FLOORS[EMBEDDER].items()} == {"fp32": 80.0, "fp16": 30.0, "quantized": 10.0}
    assert all(f.why for per in FLOORS.values() for f in per.values())


@pytest.mark.parametrize("name", list(VARIANTS))
def test_every_variant_has_a_floor_for_its_parts(name):
    v = VARIANTS[name]
    for part in v.parts:
        assert v.floor(part) is FLOORS[part][v.precision]


def test_a_card_may_raise_a_floor_or_lower_the_clear_fraction_never_the_reverse():
    spec = resolve("tiny")
    int8 = VARIANTS["int8"]
    assert rule_for(spec, EXTRACTOR, int8) == Rule(FLOORS[EXTRACTOR]["quantized"])
    raised = dataclasses.replace(spec, floors={EXTRACTOR: {"int8": 20.0}})
    assert rule_for(raised, EXTRACTOR, int8).floor.snr_db == 20.0
    with pytest.raises(FloorError, match="a card may raise a floor, never lower it"):
        rule_for(dataclasses.replace(spec, floors={EXTRACTOR: {"int8": 11.0}}), EXTRACTOR, int8)
    assert parse_verification({"clear_fraction": 0.3}, "card").clear_fraction == 0.3
    with pytest.raises(CardError, match="clear_fraction must be a number in"):
        parse_verification({"clear_fraction": 1.5}, "card")
    with pytest.raises(CardError, match="unknown key"):
        parse_verification({"floor": {}}, "card")


def test_the_released_cards_say_their_mask_head_was_not_trained():
    for name in ("videoseal", "pixelseal", "chunkyseal", "videoseal_0.0"):
        assert rule_for(resolve(name), EXTRACTOR, VARIANTS["int8"]).detection_gated is False, name
    for name in ("tiny", "fixture"):  # trained with a weight on the mask here
        assert rule_for(resolve(name), EXTRACTOR, VARIANTS["int8"]).detection_gated is True, name


@pytest.mark.parametrize("spec", REGISTRY, ids=lambda s: s.name)
def test_every_registered_model_has_a_rule_for_each_file_it_makes(spec):
    parts = [p for p, present in ((EXTRACTOR, spec.card.extractor_config is not None), (EMBEDDER, spec.card.has_embedder)) if present]
    for part in parts:
        for v in ("fp32", *default_variants(spec, part)):
            assert rule_for(spec, part, VARIANTS[v]).floor.snr_db > 0
