// The one message format (model.json "message_format"; core/message.py, web/message.js): a message is nbits bits, bit 0
// first (the embedder's message[i], the extractor's bit_logits[i] > 0). As text it is hex, the display form: the bits
// packed most significant bit first (bit 0 is the top bit of the first byte), the last byte padded with zero bits.
// Every input also takes nbits characters of 0/1; spaces, '_', a 0x prefix and upper case are allowed.

fun hexDigits(nbits: Int): Int = 2 * ((nbits + 7) / 8)

/** Bits (0/1, bit 0 first) as the message's hex. */
fun messageHex(bits: IntArray): String {
    val sb = StringBuilder()
    var i = 0
    while (i < bits.size) {
        var byte = 0
        for (k in 0 until 8) byte = (byte shl 1) or (if (i + k < bits.size && bits[i + k] != 0) 1 else 0)
        sb.append(String.format("%02x", byte))
        i += 8
    }
    return sb.toString()
}

/** Text (hex or 0/1) as nbits bits; IllegalArgumentException saying what was expected otherwise. */
fun parseMessage(text: String, nbits: Int): IntArray {
    var t = text.filterNot { it.isWhitespace() || it == '_' }.lowercase()
    if (t.startsWith("0x")) t = t.substring(2)
    val digits = hexDigits(nbits)
    if (t.length == nbits && t.all { it == '0' || it == '1' }) return IntArray(nbits) { t[it] - '0' }
    require(t.length == digits && t.all { it in '0'..'9' || it in 'a'..'f' }) {
        "'$text' is not a $nbits-bit message: give $digits hex digits or $nbits characters of 0/1"
    }
    val bits = IntArray(digits * 4)
    for (i in 0 until digits / 2) {
        val byte = t.substring(2 * i, 2 * i + 2).toInt(16)
        for (k in 0 until 8) bits[8 * i + k] = (byte shr (7 - k)) and 1
    }
    require((nbits until bits.size).all { bits[it] == 0 }) { "'$text' holds more than $nbits bits: the padding bits must be zero" }
    return bits.copyOf(nbits)
}
