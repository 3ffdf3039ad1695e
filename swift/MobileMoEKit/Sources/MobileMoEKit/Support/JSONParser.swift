// A strict RFC 8259 JSON parser over bytes: UTF-8 validated, \u escapes with surrogate pairs,
// numbers by the JSON grammar (integer literals that fit in Int as Int, the rest as Double),
// nesting limited (128 levels by default) so a hostile file throws instead of overflowing the
// stack, and a size limit checked before parsing. Duplicate keys: the last one wins.
import Foundation

public struct JSONParseError: Error, CustomStringConvertible, Equatable {
    public let message: String
    public let offset: Int
    public var description: String { "\(message) at byte \(offset)" }
}

public struct JSONParser {
    /// Far deeper than any checkpoint file (tokenizer.json nests about 6 levels), shallow
    /// enough for the 512 KiB stacks of secondary threads on Apple platforms.
    public static let defaultMaxDepth = 128
    /// Whole documents; callers reading files pass the tighter limit of the file's kind.
    public static let defaultMaxBytes = 256 << 20

    private let b: UnsafeBufferPointer<UInt8>
    private let maxDepth: Int
    private var i = 0
    private var depth = 0

    init(_ bytes: UnsafeBufferPointer<UInt8>, maxDepth: Int = JSONParser.defaultMaxDepth) {
        b = bytes
        self.maxDepth = maxDepth
    }

    mutating func document() throws -> JSONValue {
        let v = try value()
        skipSpace()
        guard i == b.count else { throw fail("trailing characters") }
        return v
    }

    private func fail(_ message: String) -> JSONParseError { JSONParseError(message: message, offset: i) }

    private mutating func skipSpace() {
        while i < b.count, b[i] == 0x20 || b[i] == 0x0A || b[i] == 0x0D || b[i] == 0x09 { i += 1 }
    }

    private mutating func value() throws -> JSONValue {
        skipSpace()
        guard i < b.count else { throw fail("unexpected end") }
        switch b[i] {
        case UInt8(ascii: "{"): return try object()
        case UInt8(ascii: "["): return try array()
        case UInt8(ascii: "\""): return .string(try string())
        case UInt8(ascii: "t"): try literal("true"); return .bool(true)
        case UInt8(ascii: "f"): try literal("false"); return .bool(false)
        case UInt8(ascii: "n"): try literal("null"); return .null
        default:
            // Python's json module reads these; JSON does not have them.
            if startsNonFinite() { throw fail("\(b[i] == UInt8(ascii: "N") ? "NaN" : "Infinity") is not valid JSON") }
            return try number()
        }
    }

    private func startsNonFinite() -> Bool {
        for word in ["NaN", "Infinity", "-Infinity"] {
            let w = Array(word.utf8)
            if i + w.count <= b.count, Array(b[i..<(i + w.count)]) == w { return true }
        }
        return false
    }

    private mutating func literal(_ word: StaticString) throws {
        let n = word.utf8CodeUnitCount
        guard i + n <= b.count, memcmp(b.baseAddress! + i, word.utf8Start, n) == 0 else { throw fail("invalid literal") }
        i += n
    }

    private mutating func nest() throws {
        depth += 1
        guard depth <= maxDepth else { throw fail("nested deeper than \(maxDepth) levels") }
        i += 1
    }

    private mutating func object() throws -> JSONValue {
        try nest()
        var out: [String: JSONValue] = [:]
        skipSpace()
        if i < b.count, b[i] == UInt8(ascii: "}") { i += 1; depth -= 1; return .object(out) }
        while true {
            skipSpace()
            guard i < b.count, b[i] == UInt8(ascii: "\"") else { throw fail("expected a key") }
            let key = try string()
            skipSpace()
            guard i < b.count, b[i] == UInt8(ascii: ":") else { throw fail("expected ':'") }
            i += 1
            out[key] = try value()
            skipSpace()
            guard i < b.count else { throw fail("unexpected end in object") }
            if b[i] == UInt8(ascii: ",") { i += 1; continue }
            guard b[i] == UInt8(ascii: "}") else { throw fail("expected ',' or '}'") }
            i += 1
            depth -= 1
            return .object(out)
        }
    }

    private mutating func array() throws -> JSONValue {
        try nest()
        var out: [JSONValue] = []
        skipSpace()
        if i < b.count, b[i] == UInt8(ascii: "]") { i += 1; depth -= 1; return .array(out) }
        while true {
            out.append(try value())
            skipSpace()
            guard i < b.count else { throw fail("unexpected end in array") }
            if b[i] == UInt8(ascii: ",") { i += 1; continue }
            guard b[i] == UInt8(ascii: "]") else { throw fail("expected ',' or ']'") }
            i += 1
            depth -= 1
            return .array(out)
        }
    }

    private mutating func string() throws -> String {
        i += 1  // opening quote
        let start = i
        var ascii = true
        while i < b.count, b[i] != UInt8(ascii: "\"") && b[i] != UInt8(ascii: "\\") {
            guard b[i] >= 0x20 else { throw fail("control character in string") }
            if b[i] >= 0x80 { ascii = false }
            i += 1
        }
        guard i < b.count else { throw fail("unterminated string") }
        if b[i] == UInt8(ascii: "\"") {  // fast path: no escapes
            let bytes = UnsafeBufferPointer(rebasing: b[start..<i])
            i += 1
            return try utf8(bytes, at: start, ascii: ascii)
        }
        var out = Array(b[start..<i])
        while true {
            guard i < b.count else { throw fail("unterminated string") }
            let c = b[i]
            if c == UInt8(ascii: "\"") { i += 1; break }
            if c < 0x20 { throw fail("control character in string") }
            if c != UInt8(ascii: "\\") { out.append(c); i += 1; continue }
            guard i + 1 < b.count else { throw fail("unterminated escape") }
            let e = b[i + 1]
            i += 2
            switch e {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): out.append(e)
            case UInt8(ascii: "b"): out.append(0x08)
            case UInt8(ascii: "f"): out.append(0x0C)
            case UInt8(ascii: "n"): out.append(0x0A)
            case UInt8(ascii: "r"): out.append(0x0D)
            case UInt8(ascii: "t"): out.append(0x09)
            case UInt8(ascii: "u"):
                var scalar = try hex4()
                if (0xD800...0xDBFF).contains(scalar) {  // high surrogate: a low one must follow
                    guard i + 1 < b.count, b[i] == UInt8(ascii: "\\"), b[i + 1] == UInt8(ascii: "u") else { throw fail("lone surrogate") }
                    i += 2
                    let low = try hex4()
                    guard (0xDC00...0xDFFF).contains(low) else { throw fail("invalid surrogate pair") }
                    scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                } else if (0xDC00...0xDFFF).contains(scalar) {
                    throw fail("lone surrogate")
                }
                out.append(contentsOf: Array(String(Character(Unicode.Scalar(scalar)!)).utf8))
            default: throw fail("invalid escape")
            }
        }
        return try out.withUnsafeBufferPointer { try utf8($0, at: start, ascii: false) }
    }

    private mutating func hex4() throws -> UInt32 {
        guard i + 4 <= b.count else { throw fail("short \\u escape") }
        var v: UInt32 = 0
        for _ in 0..<4 {
            let c = b[i]
            let d: UInt8
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): d = c - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): d = c - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): d = c - UInt8(ascii: "A") + 10
            default: throw fail("invalid \\u escape")
            }
            v = v << 4 | UInt32(d)
            i += 1
        }
        return v
    }

    /// The bytes as a String; invalid UTF-8 throws (decoding would silently repair it).
    private func utf8(_ bytes: UnsafeBufferPointer<UInt8>, at offset: Int, ascii: Bool) throws -> String {
        let s = String(decoding: bytes, as: UTF8.self)
        if !ascii && !s.utf8.elementsEqual(bytes) {
            throw JSONParseError(message: "invalid UTF-8 in string", offset: offset)
        }
        return s
    }

    private mutating func number() throws -> JSONValue {
        let start = i
        func digits() -> Int {
            let s = i
            while i < b.count, b[i] >= UInt8(ascii: "0") && b[i] <= UInt8(ascii: "9") { i += 1 }
            return i - s
        }
        if i < b.count, b[i] == UInt8(ascii: "-") { i += 1 }
        let intStart = i
        guard digits() > 0 else { throw fail("invalid value") }
        if b[intStart] == UInt8(ascii: "0") && i - intStart > 1 { throw fail("leading zero") }
        var integral = true
        if i < b.count, b[i] == UInt8(ascii: ".") {
            i += 1
            integral = false
            guard digits() > 0 else { throw fail("invalid fraction") }
        }
        if i < b.count, b[i] == UInt8(ascii: "e") || b[i] == UInt8(ascii: "E") {
            i += 1
            integral = false
            if i < b.count, b[i] == UInt8(ascii: "+") || b[i] == UInt8(ascii: "-") { i += 1 }
            guard digits() > 0 else { throw fail("invalid exponent") }
        }
        let text = String(decoding: UnsafeBufferPointer(rebasing: b[start..<i]), as: UTF8.self)
        if integral, let n = Int(text) { return .integer(n) }
        // An integer beyond Int stays a (rounded) float: consumers asking for .int refuse it.
        guard let v = Double(text), v.isFinite else { throw JSONParseError(message: "number \(text) out of range", offset: start) }
        return .number(v)
    }
}
