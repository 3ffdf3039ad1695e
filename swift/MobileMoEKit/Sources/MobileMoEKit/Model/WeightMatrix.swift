// A row-major weight matrix read in place from the mapped checkpoint: either the official
// packed int4 g32 format (two's-complement nibbles, even index in the low nibble, one fp16
// scale per 32 values along a row) or a plain F32/F16/BF16 tensor. Linears and the embedding
// are [out, in]; stacked experts [E, in, out] are viewed as E*in rows of `out` values.

public struct WeightMatrix: @unchecked Sendable {
    public enum Storage {
        /// `packed`: rows * cols/2 bytes; `scales`: rows * cols/32 fp16 values (unaligned).
        case int4(packed: UnsafePointer<UInt8>, scales: UnsafeRawPointer)
        case dense(TensorView)
    }

    public static let groupSize = 32

    public let rows: Int
    public let cols: Int
    public let storage: Storage
    /// The tensors this matrix reads (kept alive; also used by the Metal backend).
    public let tensors: [TensorView]

    init(rows: Int, cols: Int, storage: Storage, tensors: [TensorView]) {
        self.rows = rows
        self.cols = cols
        self.storage = storage
        self.tensors = tensors
    }

    public init(int4 qweight: TensorView, scales: TensorView, rows: Int, cols: Int) {
        self.rows = rows
        self.cols = cols
        self.storage = .int4(packed: qweight.data.assumingMemoryBound(to: UInt8.self), scales: scales.data)
        self.tensors = [qweight, scales]
    }

    public init(dense: TensorView, rows: Int, cols: Int) {
        self.rows = rows
        self.cols = cols
        self.storage = .dense(dense)
        self.tensors = [dense]
    }

    /// Writes row `r` as Floats into `out[0..<cols]`.
    @inline(__always)
    public func row(_ r: Int, into out: UnsafeMutablePointer<Float>) {
        switch storage {
        case let .int4(packed, scales):
            let groups = cols / WeightMatrix.groupSize
            let bytes = packed + r * (cols / 2)
            let scaleBase = r * groups
            for g in 0..<groups {
                let s = float16ToFloat(scales.loadUnaligned(fromByteOffset: 2 * (scaleBase + g), as: UInt16.self))
                let src = bytes + g * 16
                let dst = out + g * 32
                for b in 0..<16 {
                    let byte = src[b]
                    dst[2 * b] = Float(Int8(bitPattern: byte << 4) >> 4) * s
                    dst[2 * b + 1] = Float(Int8(bitPattern: byte) >> 4) * s
                }
            }
        case let .dense(t):
            let base = r * cols
            switch t.dtype {
            case .f32:
                for c in 0..<cols { out[c] = Float(bitPattern: t.data.loadUnaligned(fromByteOffset: 4 * (base + c), as: UInt32.self)) }
            case .bf16:
                for c in 0..<cols { out[c] = bfloat16ToFloat(t.data.loadUnaligned(fromByteOffset: 2 * (base + c), as: UInt16.self)) }
            default:
                for c in 0..<cols { out[c] = t.float(at: base + c) }
            }
        }
    }

    public var isInt4: Bool { if case .int4 = storage { return true } else { return false } }
}
