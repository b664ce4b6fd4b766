// A stand-in for LiteRT's org.tensorflow.lite.Interpreter with the calls the bundle's Kotlin makes: it runs no model;
// each signature output is filled from `outputs` (set by the JVM harness to what the real file returned in Python),
// so the code around the model (resize, JND, blend, decoding) runs on the JVM against Python's. Not shipped.
package org.tensorflow.lite

import java.io.File
import java.nio.ByteBuffer

class Tensor(private val dims: IntArray) {
    fun shape(): IntArray = dims
}

class Interpreter(model: File, options: Options) {
    class Options {
        fun setNumThreads(n: Int): Options = this
    }

    fun getInputTensorFromSignature(name: String, signature: String): Tensor = Tensor(shapes.getValue(name))

    fun getOutputTensorFromSignature(name: String, signature: String): Tensor = Tensor(shapes.getValue(name))

    fun runSignature(inputs: Map<String, Any>, outputs: Map<String, Any>) {
        require(inputs.keys.all { it in shapes }) { "unknown input in ${inputs.keys}" }
        fed = inputs.mapValues { (_, v) ->
            val b = (v as ByteBuffer).duplicate().order(v.order())
            b.rewind()
            FloatArray(b.remaining() / 4) { b.float }
        }
        for ((name, buffer) in outputs) {
            val b = buffer as ByteBuffer
            Interpreter.outputs.getValue(name).forEach { b.putFloat(it) }
        }
    }

    companion object {
        var shapes: Map<String, IntArray> = emptyMap()
        var outputs: Map<String, FloatArray> = emptyMap()
        var fed: Map<String, FloatArray> = emptyMap()  // what the last call was given, by input name
    }
}
