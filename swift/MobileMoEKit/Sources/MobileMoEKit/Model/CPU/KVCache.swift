// The CPU backend's KV cache of one layer: rows of kv_heads * head_dim values per position, in
// float32, float16 or int8 (one float32 scale per head row, symmetric round-to-nearest), and
// the positions each row holds when the cache is a rotating window (maxKVSize): the first
// `RotatingWindow.keep` positions stay, then the latest maxKVSize - keep (mlx-lm's
// RotatingKVCache keeps 4 the same way). Query position P sees key positions p <= P with
// p < keep or p > P - (maxKVSize - keep): the same for any prefill chunking.

enum RotatingWindow {
    static let keep = 4
}

struct KVRows {
    let type: KVCacheType
    let heads: Int, headDim: Int
    private(set) var rows = 0
    private var f32: [Float] = []
    private var f16: [UInt16] = []
    private var i8: [Int8] = []
    private var scales: [Float] = []  // int8: [rows * heads]

    init(type: KVCacheType, heads: Int, headDim: Int) {
        self.type = type
        self.heads = heads
        self.headDim = headDim
    }

    var width: Int { heads * headDim }

    var bytes: Int { 4 * f32.count + 2 * f16.count + i8.count + 4 * scales.count }

    /// Appends `n` rows of `width` floats.
    mutating func append(_ x: UnsafePointer<Float>, rows n: Int) {
        let count = n * width
        switch type {
        case .float32:
            f32.append(contentsOf: UnsafeBufferPointer(start: x, count: count))
        case .float16:
            f16.reserveCapacity(f16.count + count)
            for i in 0..<count { f16.append(floatToFloat16Bits(x[i])) }
        case .int8:
            i8.reserveCapacity(i8.count + count)
            for r in 0..<(n * heads) {
                let v = x + r * headDim
                var amax: Float = 0
                for d in 0..<headDim { amax = max(amax, abs(v[d])) }
                let s = amax / 127
                scales.append(s)
                let inv = s > 0 ? 1 / s : 0
                for d in 0..<headDim { i8.append(Int8(max(-127, min(127, (v[d] * inv).rounded())))) }
            }
        }
        rows += n
    }

    /// Read access to the rows (valid inside `body` only).
    func withReader<R>(_ body: (KVReader) -> R) -> R {
        f32.withUnsafeBufferPointer { a in
            f16.withUnsafeBufferPointer { b in
                i8.withUnsafeBufferPointer { c in
                    scales.withUnsafeBufferPointer { d in
                        body(KVReader(type: type, heads: heads, headDim: headDim, f32: a.baseAddress, f16: b.baseAddress,
                                      i8: c.baseAddress, scales: d.baseAddress))
                    }
                }
            }
        }
    }

    /// Removes rows lo..<hi.
    mutating func remove(_ lo: Int, _ hi: Int) {
        guard hi > lo else { return }
        let a = lo * width, b = hi * width
        switch type {
        case .float32: f32.removeSubrange(a..<b)
        case .float16: f16.removeSubrange(a..<b)
        case .int8:
            i8.removeSubrange(a..<b)
            scales.removeSubrange(lo * heads..<hi * heads)
        }
        rows -= hi - lo
    }

    mutating func truncate(rows n: Int) { remove(n, rows) }
}

struct KVReader {
    let type: KVCacheType
    let heads: Int, headDim: Int
    let f32: UnsafePointer<Float>?
    let f16: UnsafePointer<UInt16>?
    let i8: UnsafePointer<Int8>?
    let scales: UnsafePointer<Float>?

    /// Head `h` of row `r`: a pointer into float32 storage, or dequantized into `scratch`.
    @inline(__always)
    func head(_ r: Int, _ h: Int, scratch: UnsafeMutablePointer<Float>) -> UnsafePointer<Float> {
        let base = (r * heads + h) * headDim
        switch type {
        case .float32:
            return f32! + base
        case .float16:
            for d in 0..<headDim { scratch[d] = float16ToFloat(f16![base + d]) }
        case .int8:
            let s = scales![r * heads + h]
            for d in 0..<headDim { scratch[d] = Float(i8![base + d]) * s }
        }
        return UnsafePointer(scratch)
    }
}

/// Which positions the stored rows are: rows 0..<min(keep, count) are positions 0..<keep, row
/// r >= keep is position `windowStart + r - keep`.
struct RowPositions {
    let maxKV: Int?
    var stored = 0
    var windowStart = RotatingWindow.keep

    func position(ofRow r: Int) -> Int { r < RotatingWindow.keep ? r : windowStart + r - RotatingWindow.keep }

    /// Key position p is visible from query position P (p <= P assumed).
    @inline(__always)
    func visible(_ p: Int, from P: Int) -> Bool {
        guard let m = maxKV else { return true }
        return p < RotatingWindow.keep || p > P - (m - RotatingWindow.keep)
    }

    /// Rows to drop after the queries up to `last` ran: positions no later query can see.
    func rowsToDrop(lastQuery last: Int) -> Range<Int>? {
        guard let m = maxKV, stored > RotatingWindow.keep else { return nil }
        let oldestNeeded = last + 1 - (m - RotatingWindow.keep) + 1  // for query last + 1
        let drop = min(stored - RotatingWindow.keep, max(0, oldestNeeded - windowStart))
        return drop > 0 ? RotatingWindow.keep..<(RotatingWindow.keep + drop) : nil
    }

    /// Every position < n that a query at n or later can see is still stored.
    func canTruncate(to n: Int) -> Bool {
        guard let m = maxKV else { return true }
        return windowStart <= max(RotatingWindow.keep, n - (m - RotatingWindow.keep) + 1)
    }
}
