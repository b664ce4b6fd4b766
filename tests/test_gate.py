"""The one rule (``models/gate.py``) on constructed outputs: what it fails, what it lets through, and its bands.

No conversion: each case is a reference with a known noise added, so the expected verdict follows from the
rule's definition (band = 5 x the local noise, capped by the band's SNR), not from the code's output."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from videoseal_litert.models.gate import BAND_SIGMAS, Band, BandError, judge, judge_noise, local_noise
from videoseal_litert.models.parts import EMBEDDER, EXTRACTOR
from videoseal_litert.models.registry import REGISTRY, resolve
from videoseal_litert.models.variants import VARIANTS, band_for, default_variants

N, M = 16, 64  # inputs x outputs


def _case(noise: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Trained-looking logits (|value| >= 2, so nothing near zero) and the same plus Gaussian noise of RMS ``noise``."""
    rng = np.random.default_rng(seed)
    ref = rng.choice([-1.0, 1.0], (N, M)) * rng.uniform(2.0, 8.0, (N, M))
    return ref, ref + rng.normal(0.0, noise, (N, M))


def _judge(ref: np.ndarray, got: np.ndarray, min_snr_db: float = 20.0):
    return judge(ref, got, np.ones(ref.shape, bool), Band(min_snr_db, "test"), [f"img{i}" for i in range(len(ref))], lambda j: f"bit {j}")


def test_small_noise_passes_and_its_figures_are_the_definition():
    ref, got = _case(0.05)
    v = _judge(ref, got)
    err = got - ref
    assert v.passed and v.clear_flips == [] and v.band_flips == 0
    assert v.noise_rms == pytest.approx(np.sqrt(np.mean(err**2)))
    assert v.snr_db == pytest.approx(20 * np.log10(np.sqrt(np.mean(ref**2)) / np.sqrt(np.mean(err**2))))


def test_a_clear_flip_fails_and_is_named():
    ref, got = _case(0.05)
    got[3, 7] = -ref[3, 7]  # a value 2 or more from zero, the noise 0.05: no noise explains it
    v = _judge(ref, got)
    assert not v.passed and [(f["input"], f["output"]) for f in v.clear_flips] == [("img3", "bit 7")]
    assert any("clear-margin flip" in f and "img3 bit 7" in f for f in v.failures)


def test_a_flip_inside_the_noise_band_passes_and_is_counted():
    ref, got = _case(0.05)
    ref[5, 9], got[5, 9] = 0.01, -0.02  # within 5 x 0.05 of zero: the noise can flip it
    v = _judge(ref, got)
    assert v.passed and v.band_flips == 1 and v.in_band >= 1 and v.band_flip_list[0]["output"] == "bit 9"


def test_more_than_half_the_band_flipping_fails():
    ref, got = _case(0.05)
    ref[0, :4], got[0, :4] = 0.01, -0.01  # four outputs in the band, all flipped: biased, not noisy
    v = _judge(ref, got)
    assert v.in_band == 4 and v.band_flips == 4 and v.allowed_band_flips == 2
    assert not v.passed and "4 of 4 outputs in the noise band flipped" in v.failures[0]


def test_noise_over_the_cap_fails_however_few_values_are_near_zero():
    ref, got = _case(1.5)  # SNR about 11 dB; no value within 2 of zero: nothing that noise should flip
    got = np.where(np.sign(got) == np.sign(ref), got, ref)  # and no flip at all
    v = _judge(ref, got, min_snr_db=20.0)
    assert v.clear_flips == [] and v.band_flips == 0
    assert not v.passed and "watermark SNR" in v.failures[0] and "< 20 dB" in v.failures[0]
    assert _judge(ref, got, min_snr_db=10.0).passed  # the same file under a 10 dB band


def test_the_cap_bounds_the_band_so_a_noisy_file_flips_clear_values():
    """A file whose noise is far over the cap cannot widen its band with it: its flips beyond 5 x the
    cap's noise are clear-margin flips (named), besides the SNR failure."""
    ref, got = _case(4.0)
    v = _judge(ref, got, min_snr_db=20.0)
    cap = v.noise_cap_rms
    assert cap == pytest.approx(np.sqrt(np.mean(ref**2)) * 0.1)
    assert v.clear_flips and all(abs(f["pytorch"]) > BAND_SIGMAS * cap for f in v.clear_flips)
    assert len(v.failures) >= 2


def test_local_noise_is_the_larger_of_the_input_and_the_output_rms():
    err = np.zeros((3, 4))
    err[1, :] = 0.1  # a noisy input
    err[:, 2] = 1.0  # a noisy output
    got = local_noise(err)
    row = lambda i: np.sqrt(np.mean(err[i] ** 2))  # noqa: E731
    col = lambda j: np.sqrt(np.mean(err[:, j] ** 2))  # noqa: E731
    assert row(0) == pytest.approx(0.5) and col(0) == pytest.approx(np.sqrt(0.01 / 3))
    assert got[0, 0] == pytest.approx(0.5)  # input 0's RMS (its one noisy output) over output 0's
    assert got[1, 0] == pytest.approx(row(1)) and row(1) > col(0)  # input 1's RMS over its outputs
    assert got[0, 2] == pytest.approx(1.0) == col(2)  # output 2's RMS over the inputs


def test_an_embedders_pixels_are_judged_by_their_noise_alone():
    rng = np.random.default_rng(1)
    watermark = rng.normal(0, 0.01, (2, 8, 8, 3))
    ok = judge_noise(watermark, watermark * 0.05, Band(10.0), "pixels")  # error 26 dB below the watermark
    bad = judge_noise(watermark, watermark * 0.5, Band(10.0), "pixels")  # 6 dB below: over the 10 dB cap
    assert ok.passed and ok.snr_db == pytest.approx(26.02, abs=0.01)
    assert not bad.passed and "watermark SNR 6.02 dB < 10 dB" in bad.failures[0]


@pytest.mark.parametrize("name", list(VARIANTS))
def test_every_variant_has_trained_and_random_bands_for_its_parts(name):
    v = VARIANTS[name]
    for part in v.parts:
        bands = v.bands[part]
        for b in (bands.trained, bands.random):
            assert b.min_snr_db > 0 and b.source, (name, part)
        assert bands.trained.source.startswith("trained weights") and bands.random.source.startswith("random weights")


def test_trained_weights_get_the_trained_band_random_weights_the_random_one():
    spec = resolve("videoseal")
    for part, v in ((EXTRACTOR, "int8"), (EMBEDDER, "int8"), (EXTRACTOR, "int4")):
        bands = VARIANTS[v].bands[part]
        assert band_for(spec, part, VARIANTS[v], random_init=False) == bands.trained
        assert band_for(spec, part, VARIANTS[v], random_init=True) == bands.random


def test_a_spec_may_tighten_a_band_never_loosen_it():
    spec = resolve("videoseal")
    int8 = VARIANTS["int8"]
    default = band_for(spec, EXTRACTOR, int8, random_init=False)
    tight = dataclasses.replace(spec, bands={EXTRACTOR: {"int8": Band(default.min_snr_db + 5, "spec")}})
    assert band_for(tight, EXTRACTOR, int8, random_init=False).min_snr_db == default.min_snr_db + 5
    loose = dataclasses.replace(spec, bands={EXTRACTOR: {"int8": Band(default.min_snr_db - 5, "spec")}})
    with pytest.raises(BandError, match="looser than the measured default"):
        band_for(loose, EXTRACTOR, int8, random_init=False)


@pytest.mark.parametrize("spec", REGISTRY, ids=lambda s: s.name)
def test_every_registered_model_has_a_band_for_each_file_it_makes(spec):
    parts = [p for p, present in ((EXTRACTOR, spec.card.extractor_config is not None), (EMBEDDER, spec.card.has_embedder)) if present]
    for part in parts:
        for v in ("fp32", *default_variants(spec, part)):
            for random_init in (False, True):
                assert band_for(spec, part, VARIANTS[v], random_init).min_snr_db > 0
