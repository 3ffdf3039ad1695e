// The JSON parser behind safetensors headers, tokenizer.json and config.json: values, escapes,
// and a table of malformed documents that must throw (never trap).
import Foundation
import XCTest
@testable import MobileMoEKit

final class JSONParserTests: XCTestCase {
    func parse(_ s: String) throws -> JSONValue { try JSONValue.parse(Data(s.utf8)) }

    func testValues() throws {
        let v = try parse(#" {"a": [1, -2.5e3, 0, true, false, null], "s": "x\"\\\/\b\f\n\r\t\u00e9\ud83d\ude00é", "": {}} "#)
        XCTAssertEqual(v["a"], .array([.integer(1), .number(-2500), .integer(0), .bool(true), .bool(false), .null]))
        XCTAssertEqual(v["s"]?.string, "x\"\\/\u{8}\u{C}\n\r\té😀é")
        XCTAssertEqual(v[""], .object([:]))
        XCTAssertEqual(try parse("[]"), .array([]))
        XCTAssertEqual(try parse("3"), .integer(3))
        XCTAssertEqual(try parse(#"{"k": 1, "k": 2}"#)["k"]?.int, 2)
    }

    func testIntegersAsPythonReadsThem() throws {
        // An int is an integer literal (Python's json gives int); 64.0 and 1e2 are floats.
        XCTAssertEqual(try parse("9007199254740993").int, 9_007_199_254_740_993)
        XCTAssertEqual(try parse("-9223372036854775808").int, .min)
        XCTAssertNil(try parse("9223372036854775808").int, "beyond Int: not an Int (and no trap)")
        XCTAssertNil(try parse("64.0").int)
        XCTAssertNil(try parse("1e2").int)
        XCTAssertEqual(try parse("64.0").double, 64)
        XCTAssertEqual(try parse("7").double, 7)
        XCTAssertNil(try parse("true").int)
        XCTAssertTrue(try parse("32").sameValue(as: .number(32)), "1 == 1.0 as in Python")
        XCTAssertFalse(try parse("true").sameValue(as: .integer(1)))
    }

    func testDepthAndSizeLimits() throws {
        let depth = JSONParser.defaultMaxDepth
        let ok = String(repeating: "[", count: depth) + String(repeating: "]", count: depth)
        XCTAssertNoThrow(try parse(ok))
        XCTAssertThrowsError(try parse("[" + ok + "]")) { XCTAssertTrue("\($0)".contains("nested deeper"), "\($0)") }
        XCTAssertThrowsError(try JSONValue.parse(Data("[1, 2, 3]".utf8), maxBytes: 4)) { XCTAssertTrue("\($0)".contains("limit"), "\($0)") }
        XCTAssertThrowsError(try JSONValue.parse(Data("[[1]]".utf8), maxDepth: 1))
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
