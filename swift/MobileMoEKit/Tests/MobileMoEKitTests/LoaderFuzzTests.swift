// The CI-sized run of the loader fuzz driver (issue 11): 200 mutated checkpoint folders, each
// loaded (and, when it loads, generating) in a child process of its own. Every case must end
// with a clean load or a named error: no trap, no hang, no other error. The long run
// (>= 20,000 cases) is `swift run -c release mobilemoe-fuzz --cases 20000` (swift/README.md).
import Foundation
import XCTest

final class LoaderFuzzTests: XCTestCase {
    func testCISizedRun() throws {
        let bundle = Bundle(for: LoaderFuzzTests.self).bundleURL
        let dir = bundle.pathExtension == "xctest" ? bundle.deletingLastPathComponent() : bundle
        let binary = dir.appendingPathComponent("mobilemoe-fuzz")
        XCTAssertTrue(FileManager.default.isExecutableFile(atPath: binary.path), "mobilemoe-fuzz is not built at \(binary.path)")
        let p = Process()
        p.executableURL = binary
        p.arguments = ["--cases", "200", "--seed", "2026", "--jobs", "2", "--timeout", "60"]
        p.currentDirectoryURL = Fixtures.repository
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        XCTAssertEqual(p.terminationStatus, 0)
        let summary = try XCTUnwrap(JSONSerialization.jsonObject(with: data) as? [String: Any], String(decoding: data, as: UTF8.self))
        XCTAssertEqual(summary["cases"] as? Int, 200)
        for bad in ["trap", "hang", "unexpected_error", "harness_error"] {
            XCTAssertEqual(summary[bad] as? Int, 0, "\(bad): \(summary["examples"] ?? "")")
        }
        // Both outcomes occur: the mutations are neither all harmless nor all fatal.
        XCTAssertGreaterThan(summary["ok"] as? Int ?? 0, 10)
        XCTAssertGreaterThan(summary["named_error"] as? Int ?? 0, 50)
    }
}
