// The safetensors reader: valid files read in place; every malformed file in the table
// throws a SafeTensorsError (never traps).
import Foundation
import XCTest
@testable import MobileMoEKit

final class SafeTensorsTests: XCTestCase {
    func write(_ data: Data) throws -> String {
        let url = try temporaryDirectory(self).appendingPathComponent("t.safetensors")
        try data.write(to: url)
        return url.path
    }

    func testReadsTensorsInPlace() throws {
        // F32 [2] = [1, -2], F16 [1] = 1.5 (0x3E00), BF16 [1] = 3 (0x4040), U8 [2,2]
        var data: [UInt8] = []
        for f: Float in [1, -2] { withUnsafeBytes(of: f.bitPattern.littleEndian) { data += $0 } }
        data += [0x00, 0x3E, 0x40, 0x40, 1, 2, 3, 4]
        let header = #"{"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"#
            + #""h":{"dtype":"F16","shape":[1],"data_offsets":[8,10]},"b":{"dtype":"BF16","shape":[1],"data_offsets":[10,12]},"#
            + #""q":{"dtype":"U8","shape":[2,2],"data_offsets":[12,16]},"e":{"dtype":"F32","shape":[0,3],"data_offsets":[16,16]}}"#
        let file = try SafeTensorsFile(path: write(safetensorsBytes(header: header, data: data)))
        XCTAssertEqual(file.metadata, ["format": "pt"])
        XCTAssertEqual(file.tensors["a"]?.floats(), [1, -2])
        XCTAssertEqual(file.tensors["h"]?.floats(), [1.5])
        XCTAssertEqual(file.tensors["b"]?.floats(), [3])
        XCTAssertEqual(file.tensors["q"]?.shape, [2, 2])
        XCTAssertEqual(Array(file.tensors["q"]!.bytes(as: UInt8.self)), [1, 2, 3, 4])
        XCTAssertEqual(file.tensors["e"]?.count, 0)
        // In place: the view points into the mapping.
        XCTAssertEqual(file.tensors["a"]!.data, file.file.base + 8 + header.utf8.count)
    }

    func testMalformedFilesThrow() throws {
        let ok = #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#
        let eight = [UInt8](repeating: 0, count: 8)
        let cases: [(String, Data)] = [
            ("empty file", Data()),
            ("shorter than the length field", Data([1, 2, 3])),
            ("header length past the end", safetensorsBytes(header: ok, data: eight, headerLength: 10_000)),
            ("header length over 100 MB", safetensorsBytes(header: ok, data: eight, headerLength: 200_000_000)),
            ("header length near UInt64.max", safetensorsBytes(header: ok, data: eight, headerLength: .max)),
            ("truncated data", safetensorsBytes(header: ok, data: [0, 0, 0])),
            ("bad JSON", safetensorsBytes(header: #"{"a":{"dtype":"F32""#, data: eight)),
            ("header not UTF-8", Data([2, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFE])),
            ("top level array", safetensorsBytes(header: "[1,2]", data: eight)),
            ("entry not an object", safetensorsBytes(header: #"{"a":3}"#, data: eight)),
            ("unknown dtype", safetensorsBytes(header: #"{"a":{"dtype":"F17","shape":[2],"data_offsets":[0,8]}}"#, data: eight)),
            ("dtype missing", safetensorsBytes(header: #"{"a":{"shape":[2],"data_offsets":[0,8]}}"#, data: eight)),
            ("shape x dtype != span", safetensorsBytes(header: #"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#, data: eight)),
            ("negative dimension", safetensorsBytes(header: #"{"a":{"dtype":"U8","shape":[-8],"data_offsets":[0,8]}}"#, data: eight)),
            ("fractional dimension", safetensorsBytes(header: #"{"a":{"dtype":"U8","shape":[2.5],"data_offsets":[0,8]}}"#, data: eight)),
            ("shape overflows", safetensorsBytes(header: #"{"a":{"dtype":"F64","shape":[4294967296,4294967296],"data_offsets":[0,8]}}"#, data: eight)),
            ("span past file end", safetensorsBytes(header: #"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#, data: eight)),
            ("offsets reversed", safetensorsBytes(header: #"{"a":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}}"#, data: eight)),
            ("offsets not a pair", safetensorsBytes(header: #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0]}}"#, data: eight)),
            ("offsets are strings", safetensorsBytes(header: #"{"a":{"dtype":"F32","shape":[2],"data_offsets":["0","8"]}}"#, data: eight)),
            ("overlapping spans", safetensorsBytes(header: #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#, data: eight)),
            ("metadata not strings", safetensorsBytes(header: #"{"__metadata__":{"k":1},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#, data: eight)),
        ]
        for (name, data) in cases {
            let path = try write(data)
            XCTAssertThrowsError(try SafeTensorsFile(path: path), name) { error in
                XCTAssertTrue(error is SafeTensorsError || error is MappedFileError, "\(name): \(error)")
            }
        }
    }

    func testMissingFileThrows() {
        XCTAssertThrowsError(try SafeTensorsFile(path: "/nonexistent/model.safetensors"))
    }
}
