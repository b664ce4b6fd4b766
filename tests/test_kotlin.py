"""The bundle's Kotlin compiled and run on the JVM (issue 41): ``package/android/*.kt`` against stand-ins for the Android
and LiteRT classes (``package/kotlin_check.py``), its pure parts computing what Python computes: the message format, the
p-value, the route's resize, the JND heatmap and the blend (same pixels to float32 rounding), detection's input."""

from __future__ import annotations

import numpy as np
import pytest

from videoseal_litert.core.message import MessageError, message_hex, parse_message
from videoseal_litert.core.metrics import binomial_pvalue
from videoseal_litert.runtime.route import embed, jnd_heatmap, resize_aa


@pytest.fixture(scope="module")
def kt():
    from videoseal_litert.package.kotlin_check import run_harness

    return run_harness


def _image(h: int, w: int, seed: int) -> np.ndarray:
    """A photo-like picture: smooth gradients with texture and edges (the JND's contrast masking sees both)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    img = np.stack([x, y, 0.5 + 0.4 * np.sin(9 * x) * np.cos(7 * y)], -1) + 0.05 * rng.standard_normal((h, w, 3))
    img[h // 3 : h // 2, w // 4 : w // 2] = 0.9  # a bright block: hard edges
    return np.clip(img, 0, 1).astype(np.float32)


def _write(path, a: np.ndarray) -> str:
    np.ascontiguousarray(a, "<f4").tofile(path)
    return str(path)


def _read(path, shape) -> np.ndarray:
    return np.fromfile(path, "<f4").reshape(shape)


def test_messages_and_pvalues_as_python(kt):
    texts = ["0xB0F0", "b0 f0", "1011_0000_1111", "101100001111", "b0f", "b0f1", "b0f0f0", "10110000111", "xyz0"]
    lines = kt("messages", 12, *texts).splitlines()
    for text, line in zip(texts, lines, strict=True):
        try:
            want = "".join(map(str, parse_message(text, 12)))
        except MessageError:
            assert line.startswith("error: "), (text, line)
        else:
            assert line == want, text
    bits = np.random.default_rng(3).integers(0, 2, 48)
    assert kt("hex", "".join(map(str, bits))).strip() == message_hex(bits)
    for k, n in ((44, 48), (24, 48), (200, 256)):
        assert float(kt("pvalue", k, n)) == pytest.approx(binomial_pvalue(k, n), rel=1e-9)


def test_bitmap_round_trip_keeps_alpha(kt):
    # fromBitmap then toBitmap: the colour back as it was (to the byte), each pixel's alpha untouched.
    assert kt("bitmap").split() == ["ff0000", "80123456", "ff00ff00", "ffabcdef"]


@pytest.mark.parametrize(("channels", "attenuation"), [(1, True), (3, False)])
def test_the_kotlin_route_computes_python_pixels(kt, tmp_path, channels, attenuation):
    """EmbedWatermark.embed on a 240 x 320 photo, the file's residual the same on both sides (the model is not the
    question here: the code around it is): resize in, residual back to full size, JND of the full image, blend, clamp."""
    img = _image(240, 320, channels)
    res = (0.5 * np.random.default_rng(7).standard_normal((256, 256, channels))).astype(np.float32)
    bits = np.random.default_rng(1).integers(0, 2, 48)
    route = {"scaling_w": 0.2, "scaling_i": 1.0, "attenuation": "jnd" if attenuation else None}
    want = embed(lambda feeds: {"residual": res[None]}, route, 256, img, bits)
    args = [_write(tmp_path / "img.f32", img), 240, 320, _write(tmp_path / "res.f32", res), channels, 0.2, 1.0, int(attenuation)]
    kt("embed", *args, message_hex(bits), tmp_path / "out.f32")
    got = _read(tmp_path / "out.f32", want.shape)
    assert np.abs(got - want).max() < 2e-6 and np.abs(got - img).max() > 0.01  # the same pixels; a watermark was added
    kt("resize", tmp_path / "img.f32", 240, 320, 3, 256, 256, tmp_path / "small.f32")
    assert np.abs(_read(tmp_path / "small.f32", (256, 256, 3)) - resize_aa(img, 256, 256)).max() < 1e-6
    kt("jnd", tmp_path / "img.f32", 240, 320, tmp_path / "jnd.f32")
    assert np.abs(_read(tmp_path / "jnd.f32", (240, 320)) - jnd_heatmap(img)[..., 0]).max() < 1e-6


def test_the_kotlin_detector_feeds_the_route_resize_and_reads_bits(kt, tmp_path):
    img = _image(300, 200, 5)
    logits = np.random.default_rng(2).standard_normal(49).astype(np.float32)
    out = kt("detect", _write(tmp_path / "img.f32", img), 300, 200, _write(tmp_path / "lg.f32", logits), 48, tmp_path / "fed.f32")
    assert out.strip() == message_hex(logits[1:] > 0)
    assert np.abs(_read(tmp_path / "fed.f32", (256, 256, 3)) - resize_aa(img, 256, 256)).max() < 1e-6
