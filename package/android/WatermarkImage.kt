// Pixels for the watermark examples (EmbedWatermark.kt, DetectWatermark.kt): an image as floats in [0, 1], a Bitmap
// read into one and written back (alpha kept), and torch's antialiased bilinear resize, the official route's resize
// (runtime/route.py resize_aa; web/watermark.js resizeAA).

import android.graphics.Bitmap
import kotlin.math.abs
import kotlin.math.max
import kotlin.math.min

/** Pixels as floats in [0, 1], row-major h x w x channels (3: RGB). */
class WatermarkImage(val h: Int, val w: Int, val px: FloatArray)

/** A Bitmap's RGB as a WatermarkImage (its alpha is left in the Bitmap: toBitmap puts it back). Decode with
 *  ImageDecoder or BitmapFactory, which apply EXIF orientation as the page and the Python runners do. */
fun fromBitmap(b: Bitmap): WatermarkImage {
    val argb = IntArray(b.width * b.height).also { b.getPixels(it, 0, b.width, 0, 0, b.width, b.height) }
    val px = FloatArray(argb.size * 3)
    for (i in argb.indices) {
        px[3 * i] = ((argb[i] shr 16) and 0xFF) / 255f
        px[3 * i + 1] = ((argb[i] shr 8) and 0xFF) / 255f
        px[3 * i + 2] = (argb[i] and 0xFF) / 255f
    }
    return WatermarkImage(b.height, b.width, px)
}

/** The watermarked pixels written into a copy of the source Bitmap, rounded to bytes, its alpha untouched. */
fun toBitmap(img: WatermarkImage, source: Bitmap): Bitmap {
    val out = source.copy(Bitmap.Config.ARGB_8888, true)
    val argb = IntArray(img.w * img.h).also { out.getPixels(it, 0, img.w, 0, 0, img.w, img.h) }
    fun byte(v: Float) = Math.round(min(1f, max(0f, v)) * 255f)
    for (i in argb.indices) {
        argb[i] = (argb[i] and 0xFF000000.toInt()) or (byte(img.px[3 * i]) shl 16) or (byte(img.px[3 * i + 1]) shl 8) or byte(img.px[3 * i + 2])
    }
    out.setPixels(argb, 0, img.w, 0, 0, img.w, img.h)
    return out
}

/** Weights of torch's bilinear resize with antialias=True, align_corners=False, along one axis. */
fun resizeWeights(nIn: Int, nOut: Int): Array<Pair<Int, FloatArray>> {
    val scale = nIn.toDouble() / nOut
    val support = max(scale, 1.0)
    return Array(nOut) { i ->
        val center = scale * (i + 0.5)
        val lo = max((center - support + 0.5).toInt(), 0)
        val hi = min((center + support + 0.5).toInt(), nIn)
        val f = DoubleArray(hi - lo) { j -> max(0.0, 1.0 - abs((j + lo - center + 0.5) / support)) }
        val total = f.sum()
        Pair(lo, FloatArray(f.size) { (f[it] / total).toFloat() })
    }
}

/** An image of `ch` channels resized to h x w (along x, then along y), as the official route resizes. */
fun resizeAA(img: WatermarkImage, ch: Int, h: Int, w: Int): WatermarkImage {
    if (img.h == h && img.w == w) return img
    val wy = resizeWeights(img.h, h)
    val wx = resizeWeights(img.w, w)
    val tmp = FloatArray(img.h * w * ch)
    for (y in 0 until img.h) for (x in 0 until w) {
        val (lo, f) = wx[x]
        for (c in 0 until ch) tmp[(y * w + x) * ch + c] = f.indices.sumOf { (f[it] * img.px[(y * img.w + lo + it) * ch + c]).toDouble() }.toFloat()
    }
    val out = FloatArray(h * w * ch)
    for (y in 0 until h) for (x in 0 until w) {
        val (lo, f) = wy[y]
        for (c in 0 until ch) out[(y * w + x) * ch + c] = f.indices.sumOf { (f[it] * tmp[((lo + it) * w + x) * ch + c]).toDouble() }.toFloat()
    }
    return WatermarkImage(h, w, out)
}
