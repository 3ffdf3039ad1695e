// The mutations of the loader fuzzer: JSON trees (config.json, tokenizer.json,
// tokenizer_config.json, generation_config.json, the shard index, safetensors headers), raw
// bytes, safetensors length fields and data, and file-kind swaps (FIFO, directory, /dev/zero).
// Everything is drawn from a seeded SplitMix64, so case k of seed s is the same on every run.
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import MobileMoEKit

struct Rng {
    var state: UInt64
    init(_ seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    mutating func int(_ n: Int) -> Int { n <= 1 ? 0 : Int(next() % UInt64(n)) }
    mutating func chance(_ p: Double) -> Bool { Double(next() >> 11) / Double(1 << 53) < p }
    mutating func pick<T>(_ a: [T]) -> T { a[int(a.count)] }
}

// MARK: JSON text

/// A placeholder string a mutation puts in the tree; the writer replaces it with raw JSON text
/// (NaN, 1e999, deep nesting, integers beyond Int, ...) that no JSONValue can hold.
let rawMarker = "@@RAW@@"

func jsonText(_ v: JSONValue, raw: String? = nil) -> String {
    var out = ""
    write(v, into: &out)
    if let raw { out = out.replacingOccurrences(of: "\"\(rawMarker)\"", with: raw) }
    return out
}

private func write(_ v: JSONValue, into out: inout String) {
    switch v {
    case .null: out += "null"
    case let .bool(b): out += b ? "true" : "false"
    case let .integer(i): out += String(i)
    case let .number(d): out += "\(d)"
    case let .string(s): writeString(s, into: &out)
    case let .array(a):
        out += "["
        for (i, x) in a.enumerated() { if i > 0 { out += ", " }; write(x, into: &out) }
        out += "]"
    case let .object(o):
        out += "{"
        for (i, (k, x)) in o.sorted(by: { $0.key < $1.key }).enumerated() {
            if i > 0 { out += ", " }
            writeString(k, into: &out)
            out += ": "
            write(x, into: &out)
        }
        out += "}"
    }
}

private func writeString(_ s: String, into out: inout String) {
    out += "\""
    for u in s.unicodeScalars {
        switch u {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        default:
            if u.value < 0x20 { out += String(format: "\\u%04x", u.value) } else { out.unicodeScalars.append(u) }
        }
    }
    out += "\""
}

// MARK: JSON tree mutations

enum PathElement: CustomStringConvertible {
    case key(String), index(Int)
    var description: String {
        switch self {
        case let .key(k): return k
        case let .index(i): return "[\(i)]"
        }
    }
}

/// Every node's path (the root included), at most `limit` of them, shallow ones first.
func paths(_ v: JSONValue, limit: Int = 20_000) -> [[PathElement]] {
    var out: [[PathElement]] = [[]]
    var frontier: [([PathElement], JSONValue)] = [([], v)]
    while !frontier.isEmpty && out.count < limit {
        var next: [([PathElement], JSONValue)] = []
        for (p, node) in frontier {
            switch node {
            case let .object(o): for (k, x) in o.sorted(by: { $0.key < $1.key }) { next.append((p + [.key(k)], x)) }
            case let .array(a): for (i, x) in a.enumerated() { next.append((p + [.index(i)], x)) }
            default: break
            }
        }
        for (p, _) in next where out.count < limit { out.append(p) }
        frontier = next
    }
    return out
}

func value(at path: ArraySlice<PathElement>, in v: JSONValue) -> JSONValue? {
    guard let first = path.first else { return v }
    switch (first, v) {
    case let (.key(k), .object(o)): return o[k].flatMap { value(at: path.dropFirst(), in: $0) }
    case let (.index(i), .array(a)): return i < a.count ? value(at: path.dropFirst(), in: a[i]) : nil
    default: return nil
    }
}

/// `v` with the node at `path` transformed (nil from `f`: the node is removed).
func updating(_ v: JSONValue, at path: ArraySlice<PathElement>, _ f: (JSONValue) -> JSONValue?) -> JSONValue? {
    guard let first = path.first else { return f(v) }
    switch (first, v) {
    case let (.key(k), .object(o)):
        var o = o
        if let child = o[k] { o[k] = updating(child, at: path.dropFirst(), f) }
        return .object(o)
    case let (.index(i), .array(a)):
        var a = a
        if i < a.count {
            if let new = updating(a[i], at: path.dropFirst(), f) { a[i] = new } else { a.remove(at: i) }
        }
        return .array(a)
    default:
        return v
    }
}

let rawValues: [String] = [
    "null", "true", "false", "0", "-1", "1", "2", "3", "7", "32", "0.5", "-0.0", "1.0", "64.0", "1e308", "1e-320", "1e-50",
    "4294967296", "9007199254740993", "9223372036854775807", "-9223372036854775808", "99999999999999999999999",
    "NaN", "Infinity", "-Infinity", "1e999", "\"\"", "\"x\"", "\"F32\"", "\"BF16\"", "\"U8\"", "\"llama3\"", "\"mobilemoe\"",
    "\"silu\"", "\"full_attention\"", "\"bfloat16\"", "\"\\ud800\"", "\"<|eot|>\"", "\"<|begin_of_text|>\"",
    "[]", "{}", "[1, 2]", "[-1]", "[0, 0]", "[0, 1]", "[null]", "[\"a\"]", "{\"a\": 1}", "{\"type\": \"BPE\"}",
]

func deepNesting(_ depth: Int) -> String { String(repeating: "[", count: depth) + String(repeating: "]", count: depth) }

/// One mutation of a JSON tree. Returns the new text and what was done.
func mutateJSON(_ root: JSONValue, _ rng: inout Rng) -> (String, String) {
    let all = paths(root)
    let shallow = all.filter { $0.count <= 2 }
    let path = rng.chance(0.5) && !shallow.isEmpty ? rng.pick(shallow) : rng.pick(all)
    let where_ = path.isEmpty ? "<root>" : path.map(\.description).joined(separator: ".")
    let node = value(at: path[...], in: root) ?? .null
    var raw: String? = nil
    var what = ""
    let choice = rng.int(10)
    let new: JSONValue? = updating(root, at: path[...]) { v in
        switch choice {
        case 0, 1, 2:  // an interesting literal
            raw = rng.pick(rawValues)
            what = "= \(raw!)"
            return .string(rawMarker)
        case 3:  // numbers nudged, strings edited, containers reshaped
            switch v {
            case let .integer(i):
                let n = rng.pick([i &+ 1, i &- 1, -i, i &* 2, i &* 1000, 0, i / 2, Int.max, 1 << 31])
                what = "= \(n) (was \(i))"
                return .integer(n)
            case let .number(d):
                let n = rng.pick([d + 1, d - 1, -d, d * 2, d * 1e6, 0, d / 3, 1e-30] as [Double])
                what = "= \(n) (was \(d))"
                return .number(n)
            case let .string(s):
                var t = s
                if !t.isEmpty && rng.chance(0.5) {
                    t.remove(at: t.index(t.startIndex, offsetBy: rng.int(t.count)))
                } else {
                    let piece: String = rng.pick(["\u{0}", "\u{FFFD}", "é", " ", "|", "\\", "😀", "{{", "<|eot|>"])
                    t.insert(contentsOf: piece, at: t.index(t.startIndex, offsetBy: rng.int(t.count + 1)))
                }
                what = "string edited"
                return .string(t)
            case let .array(a):
                var a = a
                switch rng.int(4) {
                case 0: if !a.isEmpty { a.remove(at: rng.int(a.count)) }; what = "array element removed"
                case 1: if !a.isEmpty { a.append(a[rng.int(a.count)]) }; what = "array element duplicated"
                case 2: a.reverse(); what = "array reversed"
                default: a = []; what = "array emptied"
                }
                return .array(a)
            case let .object(o):
                var o = o
                if !o.isEmpty && rng.chance(0.6) {
                    let k = rng.pick(o.keys.sorted())
                    o.removeValue(forKey: k)
                    what = "key \(k) removed"
                } else {
                    o["fuzz_\(rng.int(100))"] = .integer(1)
                    what = "unknown key added"
                }
                return .object(o)
            default:
                what = "= {}"
                return .object([:])
            }
        case 4:  // a number/string type swap
            what = "type swapped"
            switch v {
            case let .integer(i): return .string(String(i))
            case let .number(d): return .string("\(d)")
            case let .string(s): if let i = Int(s) { return .integer(i) }; return .array([v])
            case let .bool(b): return .integer(b ? 1 : 0)
            default: return .null
            }
        case 5:  // removed
            what = "removed"
            return nil
        case 6:  // deep nesting or a large value
            let kind = rng.int(4)
            raw = kind == 0 ? deepNesting(150) : kind == 1 ? deepNesting(20_000)
                : kind == 2 ? "[" + Array(repeating: "0", count: 20_000).joined(separator: ",") + "]"
                : "\"" + String(repeating: "a", count: 200_000) + "\""
            what = ["nesting 150", "nesting 20000", "array of 20000", "string of 200000"][kind]
            return .string(rawMarker)
        case 7:  // wrapped
            what = "wrapped in a list"
            return .array([v])
        case 8:  // null
            what = "= null"
            return .null
        default:  // copied from elsewhere in the file
            let other = value(at: rng.pick(all)[...], in: root) ?? .null
            what = "= a copy of another node"
            return other
        }
    }
    _ = node
    return (jsonText(new ?? .null, raw: raw), "\(where_) \(what)")
}

// MARK: bytes

func mutateBytes(_ data: Data, _ rng: inout Rng) -> (Data, String) {
    var b = [UInt8](data)
    let p = b.isEmpty ? 0 : rng.int(b.count)
    switch rng.int(7) {
    case 0:
        guard !b.isEmpty else { return (Data([0xFF]), "byte added") }
        b[p] ^= UInt8(1 << rng.int(8)); return (Data(b), "bit flipped at \(p)")
    case 1:
        guard !b.isEmpty else { return (Data([0xFF]), "byte added") }
        let v = rng.pick([0x00, 0xFF, 0x80, 0xC0, 0xED, 0x22, 0x5C, 0x7B, 0x7D, UInt8(rng.int(256))]); b[p] = v
        return (Data(b), "byte \(v) at \(p)")
    case 2:
        let n = min(1 + rng.int(16), b.count - p); b.removeSubrange(p..<(p + n)); return (Data(b), "\(n) bytes removed at \(p)")
    case 3:
        let ins = (0..<(1 + rng.int(8))).map { _ in UInt8(rng.int(256)) }; b.insert(contentsOf: ins, at: p)
        return (Data(b), "\(ins.count) bytes inserted at \(p)")
    case 4:
        return (Data(b.prefix(p)), "truncated to \(p) bytes")
    case 5:
        let n = min(1 + rng.int(64), b.count - p); b.insert(contentsOf: b[p..<(p + n)], at: p); return (Data(b), "\(n) bytes duplicated at \(p)")
    default:
        b.append(contentsOf: (0..<(1 + rng.int(32))).map { _ in UInt8(rng.int(256)) }); return (Data(b), "bytes appended")
    }
}

// MARK: safetensors

struct SafeTensorsParts {
    var header: JSONValue
    var headerLength: Int
    var data: Data

    init?(_ file: Data) {
        guard file.count >= 8 else { return nil }
        let field = file.prefix(8).enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
        guard field <= UInt64(file.count - 8) else { return nil }
        let n = Int(field)
        guard let h = try? JSONValue.parse(file.subdata(in: 8..<(8 + n))) else { return nil }
        header = h
        headerLength = n
        data = file.subdata(in: (8 + n)..<file.count)
    }

    static func assemble(headerText: String, data: Data, lengthField: UInt64? = nil) -> Data {
        var h = Array(headerText.utf8)
        while h.count % 8 != 0 { h.append(0x20) }
        var out = Data()
        var n = (lengthField ?? UInt64(h.count)).littleEndian
        withUnsafeBytes(of: &n) { out.append(contentsOf: $0) }
        out.append(contentsOf: h)
        out.append(data)
        return out
    }
}

func mutateSafeTensors(_ file: Data, _ rng: inout Rng) -> (Data, String) {
    guard let parts = SafeTensorsParts(file) else { return mutateBytes(file, &rng) }
    switch rng.int(8) {
    case 0, 1, 2:  // the header JSON, the data untouched
        let (text, what) = mutateJSON(parts.header, &rng)
        return (SafeTensorsParts.assemble(headerText: text, data: parts.data), "header: \(what)")
    case 3:  // one tensor entry, targeted
        guard let o = parts.header.object, let name = o.keys.filter({ $0 != "__metadata__" }).sorted().randomElement(using: &rng) else {
            return mutateBytes(file, &rng)
        }
        var entry = o[name]!.object ?? [:]
        var what = name
        switch rng.int(4) {
        case 0:
            let d = rng.pick(["F16", "BF16", "F32", "U8", "F64", "I64", "BOOL", "F8_E4M3", "F17", "f32"])
            entry["dtype"] = .string(d); what += " dtype \(d)"
        case 1:
            var shape = entry["shape"]?.array ?? []
            if !shape.isEmpty {
                let i = rng.int(shape.count)
                let s = shape[i].int ?? 0
                shape[i] = .integer(rng.pick([s + 1, s - 1, 0, s * 2, -1, 1 << 40]))
            }
            if rng.chance(0.3) { shape.reverse() }
            entry["shape"] = .array(shape); what += " shape \(jsonText(.array(shape)))"
        case 2:
            var off = entry["data_offsets"]?.array ?? []
            if !off.isEmpty {
                let i = rng.int(off.count)
                let v = off[i].int ?? 0
                off[i] = .integer(rng.pick([v + 1, v - 1, v + 2, 0, v * 2, Int.max, -8]))
            }
            entry["data_offsets"] = .array(off); what += " offsets \(jsonText(.array(off)))"
        default:
            var h = o
            h.removeValue(forKey: name)
            return (SafeTensorsParts.assemble(headerText: jsonText(.object(h)), data: parts.data), "tensor \(name) removed")
        }
        var h = o
        h[name] = .object(entry)
        return (SafeTensorsParts.assemble(headerText: jsonText(.object(h)), data: parts.data), what)
    case 4:  // the length field
        let n = UInt64(parts.headerLength)
        let v = rng.pick([n + 1, n - 1, n + 8, n &- 8, 0, 7, UInt64(file.count), UInt64(file.count - 8), .max, 1 << 63, 100_000_001, UInt64(rng.int(1 << 20))])
        var out = file
        withUnsafeBytes(of: v.littleEndian) { out.replaceSubrange(0..<8, with: $0) }
        return (out, "header length field \(v) (was \(n))")
    case 5:  // weights: bytes in the data (NaN/Inf weights must still never trap)
        var d = [UInt8](parts.data)
        for _ in 0..<(1 + rng.int(64)) where !d.isEmpty { d[rng.int(d.count)] = rng.pick([0xFF, 0x7F, 0x80, 0x7C, UInt8(rng.int(256))]) }
        var out = file
        out.replaceSubrange((8 + parts.headerLength)..., with: d)
        return (out, "data bytes overwritten")
    default:  // raw bytes anywhere
        let (d, what) = mutateBytes(file, &rng)
        return (d, "bytes: \(what)")
    }
}

// MARK: files that are not regular files

enum FileKindSwap: CaseIterable { case fifo, directory, devZero, empty, danglingLink, selfLink, removed }

func swapFileKind(_ path: String, _ rng: inout Rng) throws -> String {
    let fm = FileManager.default
    try? fm.removeItem(atPath: path)
    let kind = rng.pick(FileKindSwap.allCases)
    switch kind {
    case .fifo: guard mkfifo(path, 0o600) == 0 else { throw FuzzError("mkfifo \(path) failed") }
    case .directory: try fm.createDirectory(atPath: path, withIntermediateDirectories: false)
    case .devZero: try fm.createSymbolicLink(atPath: path, withDestinationPath: "/dev/zero")
    case .empty: guard fm.createFile(atPath: path, contents: Data()) else { throw FuzzError("creating \(path) failed") }
    case .danglingLink: try fm.createSymbolicLink(atPath: path, withDestinationPath: path + ".nowhere")
    case .selfLink: try fm.createSymbolicLink(atPath: path, withDestinationPath: path)
    case .removed: break
    }
    return "replaced by \(kind)"
}

struct FuzzError: Error, CustomStringConvertible {
    let description: String
    init(_ s: String) { description = s }
}

extension Array {
    func randomElement(using rng: inout Rng) -> Element? { isEmpty ? nil : self[rng.int(count)] }
}
