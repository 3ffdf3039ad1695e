// A small JSON tree for files whose shape varies (safetensors headers, tokenizer.json,
// config.json), strict about types (a bool is never a number; an integer literal is kept apart
// from a float literal, as Python's json module does). Parsed by JSONParser.swift:
// Foundation's parsers build the tree of a Llama-3-size tokenizer.json in 5-12 s on Linux.
import Foundation

public enum JSONValue: Equatable, Sendable {
    case null
    case bool(Bool)
    /// A number written without fraction or exponent that fits in Int (Python's `int`).
    case integer(Int)
    /// Any other number (Python's `float`).
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    /// Parses a whole document. At most `maxDepth` nested arrays/objects and `maxBytes` bytes:
    /// beyond either it throws (bounded stack and memory for hostile files).
    public static func parse(_ data: Data, maxDepth: Int = JSONParser.defaultMaxDepth,
                             maxBytes: Int = JSONParser.defaultMaxBytes) throws -> JSONValue {
        guard data.count <= maxBytes else {
            throw JSONParseError(message: "document of \(data.count) bytes exceeds the \(maxBytes)-byte limit", offset: 0)
        }
        return try data.withUnsafeBytes { raw in
            var parser = JSONParser(raw.bindMemory(to: UInt8.self), maxDepth: maxDepth)
            return try parser.document()
        }
    }

    public subscript(key: String) -> JSONValue? {
        if case let .object(o) = self { return o[key] }
        return nil
    }

    public var object: [String: JSONValue]? { if case let .object(o) = self { return o } else { return nil } }
    public var array: [JSONValue]? { if case let .array(a) = self { return a } else { return nil } }
    public var string: String? { if case let .string(s) = self { return s } else { return nil } }
    public var bool: Bool? { if case let .bool(b) = self { return b } else { return nil } }
    /// Any number as a Double (integers converted).
    public var double: Double? {
        switch self {
        case let .number(d): return d
        case let .integer(i): return Double(i)
        default: return nil
        }
    }
    public var isNumber: Bool { double != nil }

    /// "object", "list", "string", ... for messages.
    public var kindName: String {
        switch self {
        case .null: return "null"
        case .bool: return "boolean"
        case .integer, .number: return "number"
        case .string: return "string"
        case .array: return "list"
        case .object: return "object"
        }
    }
    public var isNull: Bool { if case .null = self { return true } else { return false } }

    /// The value when it was written as an integer (`64`, not `64.0` or `6.4e1`), as Python's
    /// json module reads an `int`.
    public var int: Int? { if case let .integer(i) = self { return i } else { return nil } }

    /// Equality of JSON values as Python compares them (1 == 1.0; true is not 1 here).
    public func sameValue(as other: JSONValue) -> Bool {
        if let a = double, let b = other.double { return a == b }
        return self == other
    }
}
