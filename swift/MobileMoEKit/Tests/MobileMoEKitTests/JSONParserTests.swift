// The JSON parser behind safetensors headers, tokenizer.json and config.json: values, escapes,
// and a table of malformed documents that must throw (never trap).
import Foundation
import XCTest
@testable import MobileMoEKit

final class JSONParserTests: XCTestCase {
    func parse(_ s: String) throws -> JSONValue { try JSONValue.parse(Data(s.utf8)) }

    func testValues() throws {
        let v = try parse(#" {"a": [1, -2.5e3, 0, true, false, null], "s": "x\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00é", "": {}} "#)
        XCTAssertEqual(v["a"], .array([.number(1), .number(-2500), .number(0), .bool(true), .bool(false), .null]))
        XCTAssertEqual(v["s"]?.string, "x\"\\/\u{8}\u{C}\n\r\té😀é")
        XCTAssertEqual(v[""], .object([:]))
        XCTAssertEqual(try parse("[]"), .array([]))
        XCTAssertEqual(try parse("3"), .number(3))
        XCTAssertEqual(try parse(#"{"k": 1, "k": 2}"#)["k"]?.int, 2)
        XCTAssertEqual(try parse("9007199254740993").int, nil, "beyond 2^53 is not an exact Int")
    }

    func testMalformedThrows() {
        let deep = String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000)
        let cases = ["", " ", "{", "[1,]", "{\"a\" 1}", "{a: 1}", "[1 2]", "tru", "nul", "01", "1.", ".5", "-", "1e", "+1",
                     "NaN", "Infinity", "1e400", "\"abc", "\"\\x\"", "\"\\u12\"", "\"\\ud800\"", "\"\\udc00x\"",
                     "\"a\u{01}b\"", "[1] 2", deep]
        for c in cases {
            XCTAssertThrowsError(try parse(c), c.count > 40 ? "deep nesting" : c)
        }
        XCTAssertThrowsError(try JSONValue.parse(Data([0x22, 0xFF, 0xFE, 0x22])), "invalid UTF-8")
        XCTAssertThrowsError(try JSONValue.parse(Data([0x22, 0xED, 0xA0, 0x80, 0x22])), "encoded surrogate")
    }
}
