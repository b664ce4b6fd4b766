"""The one message format, for every input and output that carries a message: the CLI and video ``--message``, the
bundle scripts' ``--bits`` and their output, the page (``web/message.js`` is the same rules in JavaScript), the Kotlin
helpers, and ``model.json`` (``MESSAGE_FORMAT``).

A message is ``nbits`` bits, bit 0 first: the embedder's ``message[i]`` and the extractor's ``bit_logits[i] > 0``.
Written as text it is hex, the display form: the bits packed into bytes most significant bit first (bit 0 is the top
bit of the first byte), the last byte padded with zero bits, two lower-case digits a byte. Every input also takes a
string of ``nbits`` characters of 0 and 1 (bit 0 first); spaces, ``_``, a ``0x`` prefix and upper case are allowed.

numpy only: this file ships in the deployment bundle beside the runners.
"""

from __future__ import annotations

import numpy as np

MESSAGE_FORMAT = (
    "bit i is message[i] for the embedder and bit_logits[i] > 0 for the extractor; as text, hex: the bits packed most "
    "significant bit first (bit 0 is the top bit of the first byte), the last byte padded with zero bits; inputs take "
    "that hex or nbits characters of 0/1 (bit 0 first)"
)


class MessageError(ValueError):
    """A message that is neither this model's hex nor its string of 0/1 (the text says what was expected)."""


def hex_digits(nbits: int) -> int:
    """Hex digits of an ``nbits`` message: two per byte, the last byte padded."""
    return 2 * ((nbits + 7) // 8)


def message_hex(bits: np.ndarray) -> str:
    """Bits (bit 0 first; any values, nonzero is 1) as the message's hex."""
    return np.packbits(np.asarray(bits).astype(bool).astype(np.uint8)).tobytes().hex()


def parse_message(text: str, nbits: int) -> np.ndarray:
    """``text`` (hex or 0/1, see the module) as (nbits,) int64 of 0/1; MessageError naming what was expected."""
    t = "".join(str(text).split()).replace("_", "").lower().removeprefix("0x")
    digits = hex_digits(nbits)
    if len(t) == nbits and set(t) <= {"0", "1"}:  # a string of 0/1 (never as long as the hex of the same bits)
        return np.array([c == "1" for c in t], np.int64)
    if len(t) != digits or any(c not in "0123456789abcdef" for c in t):
        raise MessageError(
            f"{text!r} is not a {nbits}-bit message: give {digits} hex digits (e.g. {'0' * digits}) or {nbits} characters of 0/1"
        )
    bits = np.unpackbits(np.frombuffer(bytes.fromhex(t), np.uint8))
    if bits[nbits:].any():
        raise MessageError(f"{text!r} holds more than {nbits} bits: the last {len(bits) - nbits} bits of the hex must be zero")
    return bits[:nbits].astype(np.int64)
