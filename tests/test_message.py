"""One message format everywhere (issue 41): ``core/message.py`` in Python (the CLI, video, the bundle's scripts) and
``web/message.js`` on the page give the same bits and the same hex for the same text, and refuse the same text."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from videoseal_litert.core.message import MessageError, message_hex, parse_message

WEB = Path(__file__).resolve().parent.parent / "web"

# Written out by hand from the definition (bit 0 is the top bit of the first byte; the last byte padded with zeros).
KNOWN = [
    ([1, 0, 0, 0, 0, 0, 0, 0], "80"),
    ([0, 0, 0, 0, 0, 0, 0, 1], "01"),
    ([1, 0, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1], "b0f0"),  # 12 bits: the second byte padded
    ([1] * 13, "fff8"),
]
ACCEPTED = ["0xB0F0", "b0 f0", "1011_0000_1111", "101100001111"]  # all the 12-bit message above
REFUSED = ["b0f", "b0f1", "b0f0f0", "10110000111", "1011000011112", "xyz0", ""]  # short, bits past 12, too long, not hex


def test_known_messages_by_hand():
    for bits, hx in KNOWN:
        assert message_hex(np.array(bits)) == hx
        assert parse_message(hx, len(bits)).tolist() == bits
        assert parse_message("".join(map(str, bits)), len(bits)).tolist() == bits


def test_inputs_accepted_and_refused():
    for text in ACCEPTED:
        assert parse_message(text, 12).tolist() == [1, 0, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1], text
    for text in REFUSED:
        with pytest.raises(MessageError, match="12-bit message|more than 12 bits"):
            parse_message(text, 12)
    for nbits in (48, 96, 256, 1024):  # the released models' sizes round-trip
        bits = np.random.default_rng(nbits).integers(0, 2, nbits)
        assert (parse_message(message_hex(bits), nbits) == bits).all() and len(message_hex(bits)) == nbits // 4


def test_the_page_reads_and_writes_messages_as_python_does(tmp_path):
    rng = np.random.default_rng(0)
    cases = [(bits, len(bits)) for bits, _ in KNOWN] + [(rng.integers(0, 2, n).tolist(), n) for n in (48, 96, 256)]
    texts = [(t, 12) for t in ACCEPTED + REFUSED] + [(message_hex(np.array(b)), n) for b, n in cases]
    script = tmp_path / "check.mjs"
    script.write_text(
        f"import {{messageHex, parseMessage}} from {json.dumps((WEB / 'message.js').as_uri())};\n"
        f"const cases = {json.dumps([[list(map(int, b)), n] for b, n in cases])}, texts = {json.dumps(texts)};\n"
        "const hex = cases.map(([b]) => messageHex(b));\n"
        "const parsed = texts.map(([t, n]) => { try { return parseMessage(t, n); } catch (e) { return e.message; } });\n"
        "console.log(JSON.stringify({hex, parsed}));\n"
    )
    r = subprocess.run(["node", str(script)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    js = json.loads(r.stdout)
    assert js["hex"] == [message_hex(np.array(b)) for b, _ in cases]
    for (text, n), got in zip(texts, js["parsed"], strict=True):
        try:
            want = parse_message(text, n).tolist()
        except MessageError:
            assert isinstance(got, str) and ("-bit message" in got or "more than" in got), (text, got)
        else:
            assert got == want, text
