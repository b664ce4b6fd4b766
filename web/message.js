// The one message format (core/message.py, the same rules; model.json's message_format says them): a message is
// nbits bits, bit 0 first. As text it is hex, the display form: the bits packed most significant bit first (bit 0 is
// the top bit of the first byte), the last byte padded with zero bits. Every input also takes nbits characters of
// 0/1 (bit 0 first); spaces, '_', a 0x prefix and upper case are allowed. No imports: node tests it as it is.

export function hexDigits(nbits) {
  return 2 * Math.ceil(nbits / 8);
}

/** Bits (array of 0/1, bit 0 first) as the message's hex. */
export function messageHex(bits) {
  let out = '';
  for (let i = 0; i < bits.length; i += 8) {
    let byte = 0;
    for (let k = 0; k < 8; k++) byte = (byte << 1) | (i + k < bits.length && bits[i + k] ? 1 : 0);
    out += byte.toString(16).padStart(2, '0');
  }
  return out;
}

/** Text (hex or 0/1) as an array of nbits 0/1; an Error saying what was expected otherwise. */
export function parseMessage(text, nbits) {
  let t = String(text).replace(/[\s_]/g, '').toLowerCase();
  if (t.startsWith('0x')) t = t.slice(2);
  const digits = hexDigits(nbits);
  if (t.length === nbits && /^[01]+$/.test(t)) return Array.from(t, Number);
  if (t.length !== digits || !/^[0-9a-f]+$/.test(t)) {
    throw new Error(`'${text}' is not a ${nbits}-bit message: give ${digits} hex digits (e.g. ${'0'.repeat(digits)}) or ${nbits} characters of 0/1`);
  }
  const bits = [];
  for (let i = 0; i < t.length; i += 2) {
    const byte = parseInt(t.slice(i, i + 2), 16);
    for (let k = 7; k >= 0; k--) bits.push((byte >> k) & 1);
  }
  if (bits.slice(nbits).some((b) => b)) {
    throw new Error(`'${text}' holds more than ${nbits} bits: the last ${bits.length - nbits} bits of the hex must be zero`);
  }
  return bits.slice(0, nbits);
}
