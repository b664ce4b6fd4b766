// A stand-in for android.graphics.Bitmap (ARGB ints, row-major) with the calls the bundle's Kotlin makes, so the
// examples compile and run on the JVM in `make test` (package/kotlin_check.py). Not shipped in a bundle.
package android.graphics

class Bitmap private constructor(val width: Int, val height: Int, private val argb: IntArray) {
    enum class Config { ARGB_8888 }

    fun getPixels(out: IntArray, offset: Int, stride: Int, x: Int, y: Int, w: Int, h: Int) {
        for (r in 0 until h) for (c in 0 until w) out[offset + r * stride + c] = argb[(y + r) * width + x + c]
    }

    fun setPixels(src: IntArray, offset: Int, stride: Int, x: Int, y: Int, w: Int, h: Int) {
        for (r in 0 until h) for (c in 0 until w) argb[(y + r) * width + x + c] = src[offset + r * stride + c]
    }

    fun copy(config: Config, mutable: Boolean): Bitmap = Bitmap(width, height, argb.copyOf())

    companion object {
        fun createBitmap(argb: IntArray, width: Int, height: Int, config: Config): Bitmap = Bitmap(width, height, argb.copyOf())
    }
}
