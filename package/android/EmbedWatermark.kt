// Embed a VideoSeal-family watermark on Android with a converted embedder (embedder-int8.tflite).
// An example for the app team, written against the LiteRT (TensorFlow Lite) Interpreter API. It follows
// run_embedder.py line for line, and model.json's "embedder.route" gives the numbers (scaling_w, scaling_i,
// attenuation) for your model. Needs WatermarkImage.kt (pixels, Bitmap, resize) and WatermarkMessage.kt.
//
// Contract of the file: inputs "image" [1, 256, 256, 3] float32 RGB in [0, 1] and "message"
// [1, nbits] float32 0/1; outputs "watermarked" [1, 256, 256, 3] in [0, 1] and "residual"
// [1, 256, 256, C] (C = 1 for Y-channel models, 3 for RGB ones).

import org.tensorflow.lite.Interpreter
import java.io.File
import java.nio.ByteBuffer
import java.nio.ByteOrder
import kotlin.math.max
import kotlin.math.min
import kotlin.math.pow
import kotlin.math.sqrt

class WatermarkEmbedder(model: File, private val scalingW: Float, private val scalingI: Float, private val jnd: Boolean) {
    private val interpreter = Interpreter(model, Interpreter.Options().setNumThreads(2))
    private val size = 256
    private val nbits = interpreter.getInputTensorFromSignature("message", "serving_default").shape()[1]
    private val channels = interpreter.getOutputTensorFromSignature("residual", "serving_default").shape()[3]

    /** Runs the file at 256 x 256: returns (watermarked, residual). */
    private fun run(img: WatermarkImage, bits: IntArray): Pair<WatermarkImage, WatermarkImage> {
        require(img.h == size && img.w == size && bits.size == nbits)
        val image = ByteBuffer.allocateDirect(4 * size * size * 3).order(ByteOrder.nativeOrder())
        img.px.forEach { image.putFloat(it) }
        val message = ByteBuffer.allocateDirect(4 * nbits).order(ByteOrder.nativeOrder())
        bits.forEach { message.putFloat(it.toFloat()) }
        val wm = ByteBuffer.allocateDirect(4 * size * size * 3).order(ByteOrder.nativeOrder())
        val res = ByteBuffer.allocateDirect(4 * size * size * channels).order(ByteOrder.nativeOrder())
        image.rewind(); message.rewind()
        interpreter.runSignature(mapOf("image" to image, "message" to message), mapOf("watermarked" to wm, "residual" to res))
        wm.rewind(); res.rewind()
        val w = FloatArray(size * size * 3) { wm.float }
        val r = FloatArray(size * size * channels) { res.float }
        return Pair(WatermarkImage(size, size, w), WatermarkImage(size, size, r))
    }

    /** The official embed path for an image of any size (bits: 0/1, nbits of them; parseMessage reads hex or 0/1). */
    fun embed(img: WatermarkImage, bits: IntArray): WatermarkImage {
        if (img.h == size && img.w == size) return run(img, bits).first          // all in the graph
        val small = resizeAA(img, 3, size, size)                                   // 1. resize in (antialias)
        val residual = resizeAA(run(small, bits).second, channels, img.h, img.w)   // 2-3. file, residual back
        val heat = if (jnd) jndHeatmap(img) else null                            // 4. JND of the full image
        val out = FloatArray(img.h * img.w * 3)
        for (p in 0 until img.h * img.w) for (c in 0 until 3) {                  // 5. blend and clamp
            var r = residual.px[p * channels + if (channels == 1) 0 else c]
            if (heat != null) r *= heat[p]
            out[3 * p + c] = min(1f, max(0f, scalingI * img.px[3 * p + c] + scalingW * r))
        }
        return WatermarkImage(img.h, img.w, out)
    }

    /** The same embed with the route at the image's size as a LiteRT graph (route-<W>x<H>.tflite, when the bundle
     *  ships one for this size: model.json "embedder.route_graphs"): the resize in stays here, the residual grown to the
     *  image, its JND and the blend run in the graph, with no pixel loop of the app's own. */
    fun embed(img: WatermarkImage, bits: IntArray, route: RouteGraph): WatermarkImage {
        require(img.h == route.height && img.w == route.width) { "route graph for ${route.width}x${route.height}, image ${img.w}x${img.h}" }
        val residual = run(resizeAA(img, 3, size, size), bits).second
        return route.apply(img, residual)
    }

    /** The official jnd_1_1 heatmap (luminance and contrast masking) of the full-size image. */
    fun jndHeatmap(img: WatermarkImage): FloatArray {
        val h = img.h; val w = img.w
        val y = FloatArray(h * w) { 255f * (0.299f * img.px[3 * it] + 0.587f * img.px[3 * it + 1] + 0.114f * img.px[3 * it + 2]) }
        fun conv(k: Array<FloatArray>): FloatArray {
            val r = k.size / 2
            return FloatArray(h * w) { p ->
                val py = p / w; val px = p % w; var s = 0f
                for (dy in -r..r) for (dx in -r..r) {
                    val yy = py + dy; val xx = px + dx
                    if (yy in 0 until h && xx in 0 until w) s += k[dy + r][dx + r] * y[yy * w + xx]
                }
                s
            }
        }
        val lum = conv(arrayOf(floatArrayOf(1f, 1f, 1f, 1f, 1f), floatArrayOf(1f, 2f, 2f, 2f, 1f), floatArrayOf(1f, 2f, 0f, 2f, 1f),
            floatArrayOf(1f, 2f, 2f, 2f, 1f), floatArrayOf(1f, 1f, 1f, 1f, 1f)))
        val gx = conv(arrayOf(floatArrayOf(-1f, 0f, 1f), floatArrayOf(-2f, 0f, 2f), floatArrayOf(-1f, 0f, 1f)))
        val gy = conv(arrayOf(floatArrayOf(1f, 2f, 1f), floatArrayOf(0f, 0f, 0f), floatArrayOf(-1f, -2f, -1f)))
        return FloatArray(h * w) { p ->
            val l = lum[p] / 32
            val la = if (l <= 127) 17 * (1 - sqrt(l / 127 + 1e-5f)) else 3f / 128 * (l - 127) + 3
            val g = sqrt(gx[p] * gx[p] + gy[p] * gy[p])
            val cm = 0.117f * (16 * g.pow(2.4f) / (g * g + 26 * 26))
            max(la + cm - 0.3f * min(la, cm), 0f) / 255
        }
    }
}


/** One route-<W>x<H>.tflite: inputs "frame" [1, H, W, 3] float32 RGB in [0, 1] and "residual" [1, 256, 256, C] (the
 *  embedder's output), output "watermarked" [1, H, W, 3]: the official route for images of that size. */
class RouteGraph(model: File) {
    private val interpreter = Interpreter(model, Interpreter.Options().setNumThreads(2))
    val height = interpreter.getInputTensorFromSignature("frame", "serving_default").shape()[1]
    val width = interpreter.getInputTensorFromSignature("frame", "serving_default").shape()[2]
    private val residualShape = interpreter.getInputTensorFromSignature("residual", "serving_default").shape()

    fun apply(img: WatermarkImage, residual: WatermarkImage): WatermarkImage {
        val frame = ByteBuffer.allocateDirect(4 * height * width * 3).order(ByteOrder.nativeOrder())
        img.px.forEach { frame.putFloat(it) }
        val res = ByteBuffer.allocateDirect(4 * residualShape.fold(1) { a, b -> a * b }).order(ByteOrder.nativeOrder())
        residual.px.forEach { res.putFloat(it) }
        val out = ByteBuffer.allocateDirect(4 * height * width * 3).order(ByteOrder.nativeOrder())
        frame.rewind(); res.rewind()
        interpreter.runSignature(mapOf("frame" to frame, "residual" to res), mapOf("watermarked" to out))
        out.rewind()
        return WatermarkImage(height, width, FloatArray(height * width * 3) { out.float })
    }
}
