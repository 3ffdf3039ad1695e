// The `mobilemoe` executable end to end on the fixture checkpoint: streams the greedy reply
// and prints token rates (acceptance: `swift run mobilemoe --model <folder> --prompt ...`).
import Foundation
import XCTest
@testable import MobileMoEKit

final class CLITests: XCTestCase {
    func run(_ args: [String], input: String? = nil) throws -> (status: Int32, out: String, err: String) {
        // The executable sits in SwiftPM's build directory: the test bundle's folder on macOS
        // (X.xctest/), the bundle URL itself on Linux.
        let bundle = Bundle(for: CLITests.self).bundleURL
        let dir = bundle.pathExtension == "xctest" ? bundle.deletingLastPathComponent() : bundle
        let binary = dir.appendingPathComponent("mobilemoe")
        guard FileManager.default.isExecutableFile(atPath: binary.path) else { throw XCTSkip("mobilemoe not built at \(binary.path)") }
        let p = Process()
        p.executableURL = binary
        p.arguments = args
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        let stdin = Pipe()
        p.standardInput = stdin
        try p.run()
        if let input { stdin.fileHandleForWriting.write(Data(input.utf8)) }
        try stdin.fileHandleForWriting.close()
        let o = out.fileHandleForReading.readDataToEndOfFile(), e = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: o, as: UTF8.self), String(decoding: e, as: UTF8.self))
    }

    func testPromptStreamsTextAndRates() throws {
        let expected = try Fixtures.json("tiny-qat-expected.json") as! [String: Any]
        let fox = (expected["cases"] as! [[String: Any]])[1]
        let r = try run(["--model", Fixtures.url("tiny-qat").path, "--prompt", "The quick brown fox", "--raw",
                         "--max-tokens", "6", "--temperature", "0", "--backend", "cpu"])
        XCTAssertEqual(r.status, 0, r.err)
        let greedy = Array((fox["greedy_tokens"] as! [Int]).prefix(6))
        XCTAssertEqual(r.out, GenerationTests.model.tokenizer.decode(greedy) + "\n")
        XCTAssertTrue(r.err.contains("generation: 6 tokens"), r.err)
        XCTAssertTrue(r.err.contains("tokens/s"), r.err)
    }

    func testBadArgumentsFail() throws {
        let r = try run(["--model", "/nonexistent", "--prompt", "x"])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.err.contains("error:"), r.err)
        XCTAssertNotEqual(try run(["--max-tokens", "many"]).status, 0)
    }

    func testChatKeepsTheCacheAndPrintsTheBackend() throws {
        let r = try run(["--model", Fixtures.url("tiny-qat").path, "--chat", "--prompt", "Hello! How are you?",
                         "--max-tokens", "4", "--temperature", "0", "--backend", "automatic"], input: "Tell me more.\n")
        XCTAssertEqual(r.status, 0, r.err)
        XCTAssertTrue(r.err.contains("backend: cpu (requested automatic"), r.err)
        #if !canImport(Metal)
        XCTAssertTrue(r.err.contains("GPU not used: Metal is not available on this platform"), r.err)
        #endif
        let rates = r.err.split(separator: "\n").filter { $0.hasPrefix("prompt: ") }
        XCTAssertEqual(rates.count, 2, r.err)
        XCTAssertTrue(rates[0].contains("(0 cached)"), String(rates[0]))
        XCTAssertFalse(rates[1].contains("(0 cached)"), "the second turn reuses the cache: \(rates[1])")
        XCTAssertTrue(r.out.hasPrefix("> Hello! How are you?\n"), r.out)
    }
}
