// A small JSON tree for files whose shape varies (safetensors headers, tokenizer.json,
// config.json), strict about types (a bool is never a number). Parsed by JSONParser.swift:
// Foundation's parsers build the tree of a Llama-3-size tokenizer.json in 5-12 s on Linux.
import Foundation

public enum JSONValue: Equatable, Sendable {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    public static func parse(_ data: Data) throws -> JSONValue {
        try data.withUnsafeBytes { raw in
            var parser = JSONParser(raw.bindMemory(to: UInt8.self))
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
    public var double: Double? { if case let .number(d) = self { return d } else { return nil } }
    public var isNull: Bool { if case .null = self { return true } else { return false } }

    /// The number as an Int when it is integral and representable exactly.
    public var int: Int? {
        guard case let .number(d) = self, d.rounded() == d, abs(d) < 9_007_199_254_740_992 else { return nil }
        return Int(d)
    }
}
