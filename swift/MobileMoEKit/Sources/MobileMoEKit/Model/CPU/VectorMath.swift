// Float32 vector primitives of the CPU reference: dot, axpy, RMS norm, SiLU, softmax.
// SIMD8 accumulators keep release builds vectorized; all sums are in Float. Debug builds
// (plain `swift run`) take scalar loops: unoptimized generic SIMD code is ~10x slower still.
import Foundation

@inline(__always)
func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) -> Float {
    #if DEBUG
    var s: Float = 0
    for i in 0..<n { s += a[i] * b[i] }
    return s
    #else
    var acc = SIMD8<Float>(repeating: 0)
    var i = 0
    let ra = UnsafeRawPointer(a), rb = UnsafeRawPointer(b)
    while i + 8 <= n {
        acc += ra.loadUnaligned(fromByteOffset: 4 * i, as: SIMD8<Float>.self)
            * rb.loadUnaligned(fromByteOffset: 4 * i, as: SIMD8<Float>.self)
        i += 8
    }
    var s = acc.sum()
    while i < n { s += a[i] * b[i]; i += 1 }
    return s
    #endif
}

/// y += alpha * x
@inline(__always)
func axpy(_ alpha: Float, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ n: Int) {
    #if DEBUG
    for i in 0..<n { y[i] += alpha * x[i] }
    #else
    var i = 0
    let a = SIMD8<Float>(repeating: alpha)
    let rx = UnsafeRawPointer(x), ry = UnsafeMutableRawPointer(y)
    while i + 8 <= n {
        let v = ry.loadUnaligned(fromByteOffset: 4 * i, as: SIMD8<Float>.self)
            + a * rx.loadUnaligned(fromByteOffset: 4 * i, as: SIMD8<Float>.self)
        ry.storeBytes(of: v, toByteOffset: 4 * i, as: SIMD8<Float>.self)
        i += 8
    }
    while i < n { y[i] += alpha * x[i]; i += 1 }
    #endif
}

/// x * rsqrt(mean(x^2) + eps) * weight (weight nil: the weightless qk-norm), in place.
func rmsNorm(_ x: UnsafeMutablePointer<Float>, _ n: Int, weight: UnsafePointer<Float>?, eps: Float) {
    let meanSquare = dot(x, x, n) / Float(n)
    let r = 1 / (meanSquare + eps).squareRoot()
    if let w = weight {
        for i in 0..<n { x[i] = x[i] * r * w[i] }
    } else {
        for i in 0..<n { x[i] *= r }
    }
}

@inline(__always)
func silu(_ x: Float) -> Float { x / (1 + exp(-x)) }

@inline(__always)
func sigmoid(_ x: Float) -> Float { 1 / (1 + exp(-x)) }

/// Numerically stable softmax in place over n values.
func softmax(_ x: UnsafeMutablePointer<Float>, _ n: Int) {
    var m = -Float.infinity
    for i in 0..<n { m = max(m, x[i]) }
    var s: Float = 0
    for i in 0..<n { x[i] = exp(x[i] - m); s += x[i] }
    let inv = 1 / s
    for i in 0..<n { x[i] *= inv }
}

/// Splits 0..<count into chunks run concurrently (serially when the work is small). `body` is
/// called from several threads at once: callers write disjoint ranges of their output, which is
/// what makes the unchecked hand-over to concurrentPerform (Swift 6: not Sendable) sound.
func parallelFor(_ count: Int, minChunk: Int, _ body: (Range<Int>) -> Void) {
    let cores = ProcessInfo.processInfo.activeProcessorCount
    let chunks = min(cores, max(1, count / max(minChunk, 1)))
    if chunks <= 1 { body(0..<count); return }
    let size = (count + chunks - 1) / chunks
    withoutActuallyEscaping(body) { body in
        nonisolated(unsafe) let run = body
        DispatchQueue.concurrentPerform(iterations: chunks) { c in
            let lo = c * size, hi = min(count, lo + size)
            if lo < hi { run(lo..<hi) }
        }
    }
}
