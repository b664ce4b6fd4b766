// The JVM harness of the bundle's Kotlin (package/kotlin_check.py runs it in `make test`): each command reads raw
// little-endian float32 files Python wrote, runs the shipped Kotlin, and writes what it computed for Python to compare.
//   messages NBITS TEXT...                       one line per text: its bits as 0/1, or "error: ..."
//   hex BITS01                                   messageHex of a 0/1 string
//   pvalue K N                                   binomialPValue
//   resize IN.f32 H W CH OUT_H OUT_W OUT.f32     resizeAA
//   jnd IN.f32 H W OUT.f32                       WatermarkEmbedder.jndHeatmap
//   embed IN.f32 H W RESIDUAL.f32 C SCALING_W SCALING_I JND(0/1) MESSAGE OUT.f32   WatermarkEmbedder.embed, the model's
//                                                residual taken from RESIDUAL.f32 (what the file returned in Python)
//   detect IN.f32 H W LOGITS.f32 NBITS FED.f32   WatermarkDetector.detect: the hex it reads (the file's outputs taken
//                                                from LOGITS.f32: mask, then bits), and the input it fed the file

import android.graphics.Bitmap
import org.tensorflow.lite.Interpreter
import java.io.File
import java.nio.ByteBuffer
import java.nio.ByteOrder

fun readF32(path: String): FloatArray {
    val b = ByteBuffer.wrap(File(path).readBytes()).order(ByteOrder.LITTLE_ENDIAN)
    return FloatArray(b.remaining() / 4) { b.float }
}

fun writeF32(path: String, a: FloatArray) {
    val b = ByteBuffer.allocate(4 * a.size).order(ByteOrder.LITTLE_ENDIAN)
    a.forEach { b.putFloat(it) }
    File(path).writeBytes(b.array())
}

fun main(args: Array<String>) {
    when (args[0]) {
        "messages" -> for (t in args.drop(2)) {
            println(try { parseMessage(t, args[1].toInt()).joinToString("") } catch (e: IllegalArgumentException) { "error: ${e.message}" })
        }
        "hex" -> println(messageHex(IntArray(args[1].length) { args[1][it] - '0' }))
        "pvalue" -> println(binomialPValue(args[1].toInt(), args[2].toInt()))
        "resize" -> {
            val img = WatermarkImage(args[2].toInt(), args[3].toInt(), readF32(args[1]))
            writeF32(args[7], resizeAA(img, args[4].toInt(), args[5].toInt(), args[6].toInt()).px)
        }
        "jnd" -> {
            Interpreter.shapes = mapOf("message" to intArrayOf(1, 1), "residual" to intArrayOf(1, 256, 256, 1))
            val e = WatermarkEmbedder(File("model.tflite"), 1f, 1f, true)
            writeF32(args[4], e.jndHeatmap(WatermarkImage(args[2].toInt(), args[3].toInt(), readF32(args[1]))))
        }
        "embed" -> {
            val c = args[5].toInt()
            val bits = parseMessage(args[9], nbitsOf(args[9]))
            Interpreter.shapes = mapOf("image" to intArrayOf(1, 256, 256, 3), "message" to intArrayOf(1, bits.size),
                "residual" to intArrayOf(1, 256, 256, c), "watermarked" to intArrayOf(1, 256, 256, 3))
            Interpreter.outputs = mapOf("residual" to readF32(args[4]), "watermarked" to FloatArray(256 * 256 * 3))
            val e = WatermarkEmbedder(File("embedder.tflite"), args[6].toFloat(), args[7].toFloat(), args[8] == "1")
            val out = e.embed(WatermarkImage(args[2].toInt(), args[3].toInt(), readF32(args[1])), bits)
            writeF32(args[10], out.px)
        }
        "detect" -> {
            val n = args[5].toInt()
            val logits = readF32(args[4])
            Interpreter.shapes = mapOf("image" to intArrayOf(1, 256, 256, 3), "bit_logits" to intArrayOf(1, n), "mask_logit" to intArrayOf(1, 1))
            Interpreter.outputs = mapOf("mask_logit" to floatArrayOf(logits[0]), "bit_logits" to logits.copyOfRange(1, n + 1))
            val r = WatermarkDetector(File("extractor.tflite")).detect(WatermarkImage(args[2].toInt(), args[3].toInt(), readF32(args[1])))
            println(r.hex)
            writeF32(args[6], Interpreter.fed.getValue("image"))
        }
        "bitmap" -> {  // a Bitmap through fromBitmap and toBitmap: alpha kept, colour rounded to bytes
            val argb = intArrayOf(0x00FF0000, 0x80123456.toInt(), 0xFF00FF00.toInt(), 0xFFABCDEF.toInt())
            val b = Bitmap.createBitmap(argb, 2, 2, Bitmap.Config.ARGB_8888)
            val back = toBitmap(fromBitmap(b), b)
            val out = IntArray(4).also { back.getPixels(it, 0, 2, 0, 0, 2, 2) }
            println(out.joinToString(" ") { Integer.toHexString(it) })
        }
        else -> error("unknown command ${args[0]}")
    }
}

/** The bits of a message written as 0/1 (its length) or hex (4 bits a digit): the harness passes one or the other. */
fun nbitsOf(text: String): Int = if (text.all { it == '0' || it == '1' }) text.length else 4 * text.length
