// safetensors reader over a memory-mapped file. Format: 8-byte little-endian header length N,
// N bytes of JSON {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}},
// then the data (offsets relative to its start). Every header is validated before any tensor
// is handed out, and every failure is a thrown `SafeTensorsError`, never a trap.
import Foundation

public enum SafeTensorsError: Error, Equatable, CustomStringConvertible {
    case truncated(String)
    case headerTooLarge(UInt64)
    case badJSON(String)
    case badEntry(tensor: String, reason: String)
    case unknownDType(tensor: String, dtype: String)
    case sizeMismatch(tensor: String, expected: Int, actual: Int)
    case outOfBounds(tensor: String)
    case overlap(String, String)
    case gap(at: Int, before: String)
    case trailingBytes(Int)
    case missingTensor(String)
    case wrongDType(tensor: String, expected: [DType], actual: DType)
    case wrongShape(tensor: String, expected: [Int], actual: [Int])

    public var description: String {
        switch self {
        case let .truncated(what): return "safetensors file is truncated (\(what))"
        case let .headerTooLarge(n): return "safetensors header length \(n) exceeds the 100 MB limit or the file"
        case let .badJSON(why): return "safetensors header is not valid JSON: \(why)"
        case let .badEntry(t, why): return "safetensors entry '\(t)': \(why)"
        case let .unknownDType(t, d): return "safetensors entry '\(t)': unknown dtype '\(d)'"
        case let .sizeMismatch(t, e, a): return "safetensors entry '\(t)': shape x dtype is \(e) bytes but data_offsets span \(a)"
        case let .outOfBounds(t): return "safetensors entry '\(t)': data_offsets lie outside the file"
        case let .overlap(a, b): return "safetensors entries '\(a)' and '\(b)' overlap"
        case let .gap(at, name): return "safetensors data has bytes no tensor covers at offset \(at) (before '\(name)')"
        case let .trailingBytes(n): return "safetensors data has \(n) byte(s) after the last tensor (wrong header length or trailing bytes)"
        case let .missingTensor(t): return "tensor '\(t)' not found in the checkpoint"
        case let .wrongDType(t, e, a): return "tensor '\(t)' has dtype \(a.rawValue), expected \(e.map(\.rawValue).joined(separator: " or "))"
        case let .wrongShape(t, e, a): return "tensor '\(t)' has shape \(a), expected \(e)"
        }
    }
}

/// A tensor's bytes inside a mapped file: no copy, valid while the file is alive.
public struct TensorView: @unchecked Sendable {
    public let name: String
    public let dtype: DType
    public let shape: [Int]
    /// Start of the tensor's bytes (not necessarily aligned).
    public let data: UnsafeRawPointer
    public let byteCount: Int
    /// Offset of `data` from the start of the file (for page-aligned GPU buffer windows).
    public let fileOffset: Int
    /// Keeps the mapping alive.
    public let file: MappedFile

    public var count: Int { shape.reduce(1, *) }

    public func bytes<T>(as type: T.Type) -> UnsafeBufferPointer<T> {
        // safetensors does not align tensors; callers read through loadUnaligned or use byte types.
        UnsafeBufferPointer(start: data.assumingMemoryBound(to: T.self), count: byteCount / MemoryLayout<T>.stride)
    }

    /// Element `i` converted to Float (F32, F16, BF16).
    @inline(__always)
    public func float(at i: Int) -> Float {
        switch dtype {
        case .f32: return Float(bitPattern: data.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self))
        case .f16: return float16ToFloat(data.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))
        case .bf16: return bfloat16ToFloat(data.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))
        default: preconditionFailure("float(at:) on \(dtype)")  // callers check dtype at load time
        }
    }

    /// The whole tensor as Floats (for small tensors: norms, biases, routers).
    public func floats() -> [Float] {
        (0..<count).map { float(at: $0) }
    }

    public func expect(dtype allowed: [DType], shape expected: [Int]) throws {
        guard allowed.contains(dtype) else { throw SafeTensorsError.wrongDType(tensor: name, expected: allowed, actual: dtype) }
        guard shape == expected else { throw SafeTensorsError.wrongShape(tensor: name, expected: expected, actual: shape) }
    }
}

public struct SafeTensorsFile: Sendable {
    public static let maxHeaderLength: UInt64 = 100_000_000

    public let file: MappedFile
    public let tensors: [String: TensorView]
    public let metadata: [String: String]

    public init(path: String) throws {
        try self.init(file: MappedFile(path: path))
    }

    public init(file: MappedFile) throws {
        self.file = file
        guard file.size >= 8 else { throw SafeTensorsError.truncated("\(file.size) bytes, no header length") }
        let n = file.base.loadUnaligned(as: UInt64.self).littleEndian
        guard n <= SafeTensorsFile.maxHeaderLength else { throw SafeTensorsError.headerTooLarge(n) }
        guard 8 + Int(n) <= file.size else { throw SafeTensorsError.truncated("header of \(n) bytes, file of \(file.size)") }
        let headerData = Data(bytes: file.base + 8, count: Int(n))
        let json: JSONValue
        do { json = try JSONValue.parse(headerData) } catch { throw SafeTensorsError.badJSON("\(error)") }
        guard let entries = json.object else { throw SafeTensorsError.badJSON("top level is not an object") }

        let dataStart = 8 + Int(n)
        let dataSize = file.size - dataStart
        var tensors: [String: TensorView] = [:]
        var metadata: [String: String] = [:]
        var spans: [(begin: Int, end: Int, name: String)] = []
        for (name, entry) in entries {
            if name == "__metadata__" {
                if entry.isNull { continue }
                guard let m = entry.object else { throw SafeTensorsError.badEntry(tensor: name, reason: "not an object") }
                for (k, v) in m {
                    guard let s = v.string else { throw SafeTensorsError.badEntry(tensor: name, reason: "value of '\(k)' is not a string") }
                    metadata[k] = s
                }
                continue
            }
            guard let fields = entry.object else { throw SafeTensorsError.badEntry(tensor: name, reason: "not an object") }
            guard let dtypeName = fields["dtype"]?.string else { throw SafeTensorsError.badEntry(tensor: name, reason: "no dtype string") }
            guard let dtype = DType(rawValue: dtypeName) else { throw SafeTensorsError.unknownDType(tensor: name, dtype: dtypeName) }
            guard let shapeValues = fields["shape"]?.array else { throw SafeTensorsError.badEntry(tensor: name, reason: "no shape array") }
            var shape: [Int] = []
            for v in shapeValues {
                guard let d = v.int, d >= 0 else { throw SafeTensorsError.badEntry(tensor: name, reason: "shape holds a non-natural number") }
                shape.append(d)
            }
            guard let offsets = fields["data_offsets"]?.array, offsets.count == 2,
                  let begin = offsets[0].int, let end = offsets[1].int, begin >= 0, begin <= end
            else { throw SafeTensorsError.badEntry(tensor: name, reason: "data_offsets is not [begin, end] with 0 <= begin <= end") }
            var expected = dtype.byteSize
            for d in shape {
                let (product, overflow) = expected.multipliedReportingOverflow(by: d)
                guard !overflow else { throw SafeTensorsError.badEntry(tensor: name, reason: "shape overflows") }
                expected = product
            }
            guard expected == end - begin else { throw SafeTensorsError.sizeMismatch(tensor: name, expected: expected, actual: end - begin) }
            guard end <= dataSize else { throw SafeTensorsError.outOfBounds(tensor: name) }
            spans.append((begin, end, name))
            tensors[name] = TensorView(name: name, dtype: dtype, shape: shape, data: file.base + dataStart + begin,
                                       byteCount: end - begin, fileOffset: dataStart + begin, file: file)
        }
        // The tensors must cover the data section exactly, as the safetensors library requires:
        // no overlap, no gap, nothing after the last tensor (an off-by-one header length or
        // trailing bytes would otherwise shift or hide data silently).
        spans.sort { ($0.begin, $0.end) < ($1.begin, $1.end) }
        var covered = 0
        for (i, span) in spans.enumerated() {
            if span.begin < covered { throw SafeTensorsError.overlap(spans[i - 1].name, span.name) }
            if span.begin > covered { throw SafeTensorsError.gap(at: covered, before: span.name) }
            covered = span.end
        }
        guard covered == dataSize else { throw SafeTensorsError.trailingBytes(dataSize - covered) }
        self.tensors = tensors
        self.metadata = metadata
    }
}
