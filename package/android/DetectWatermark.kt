// Detect a VideoSeal-family watermark on Android with a converted extractor (the file model.json's "ship" names for
// your target), written against the LiteRT (TensorFlow Lite) Interpreter API. It follows run_extractor.py: any size is
// resized to the file's input with the official route's antialiased resize (WatermarkImage.kt), the file runs through
// its signature ("serving_default": input "image" [1, 256, 256, 3] float32 RGB in [0, 1]; outputs "mask_logit" [1, 1]
// and "bit_logits" [1, nbits]), bit i = bit_logits[i] > 0, and a message is detected when the number of its bits read
// back would happen by chance with probability below model.json's detection.pvalue_threshold (1e-3).

import org.tensorflow.lite.Interpreter
import java.io.File
import java.nio.ByteBuffer
import java.nio.ByteOrder
import kotlin.math.exp
import kotlin.math.ln

class WatermarkDetector(model: File, threads: Int = 2) {
    private val interpreter = Interpreter(model, Interpreter.Options().setNumThreads(threads))
    private val size = interpreter.getInputTensorFromSignature("image", "serving_default").shape()[1]
    val nbits = interpreter.getOutputTensorFromSignature("bit_logits", "serving_default").shape()[1]

    class Result(val maskLogit: Float, val bitLogits: FloatArray) {
        val bits: IntArray get() = IntArray(bitLogits.size) { if (bitLogits[it] > 0f) 1 else 0 }
        val hex: String get() = messageHex(bits)
    }

    fun detect(img: WatermarkImage): Result {
        val x = resizeAA(img, 3, size, size)
        val image = ByteBuffer.allocateDirect(4 * size * size * 3).order(ByteOrder.nativeOrder())
        x.px.forEach { image.putFloat(it) }
        image.rewind()
        val mask = ByteBuffer.allocateDirect(4).order(ByteOrder.nativeOrder())
        val bits = ByteBuffer.allocateDirect(4 * nbits).order(ByteOrder.nativeOrder())
        interpreter.runSignature(mapOf("image" to image), mapOf("mask_logit" to mask, "bit_logits" to bits))
        mask.rewind(); bits.rewind()
        return Result(mask.float, FloatArray(nbits) { bits.float })
    }
}

/** P(at least k of n bits match by chance, 1/2 each): the p-value of reading k bits of a message back. */
fun binomialPValue(k: Int, n: Int): Double {
    val lf = DoubleArray(n + 1)
    for (i in 1..n) lf[i] = lf[i - 1] + ln(i.toDouble())
    var p = 0.0
    for (i in k..n) p += exp(lf[n] - lf[i] - lf[n - i] - n * ln(2.0))
    return minOf(p, 1.0)
}

/** Whether `message` (parseMessage: hex or 0/1) is in the image read by `r`, at the bundle's threshold. */
fun detected(r: WatermarkDetector.Result, message: IntArray, pvalueThreshold: Double = 1e-3): Boolean {
    val k = r.bits.indices.count { r.bits[it] == message[it] }
    return binomialPValue(k, message.size) < pvalueThreshold
}
