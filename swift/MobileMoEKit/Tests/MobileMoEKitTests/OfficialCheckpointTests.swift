// Issue 10 on the Swift side: folders shaped exactly like the released
// facebook/MobileMoE-*-QAT / -SFT checkpoints (full released config.json, generation_config.json,
// a real 128,256-id Llama 3 tokenizer with the Llama 4 chat tokens, the released chat template)
// load, render the pinned prompt ids, stop on <|eot|> and every eos id, and run from the CLI.
// The folders come from the ONE fixture writer, tests/official_fixture.py (shared with the
// Python tests; the tokenizer is built at run time from the llama-models wheel, never
// committed). The writer must be runnable: a missing script or python package is a test
// failure, never a skip.
import Foundation
import XCTest
@testable import MobileMoEKit

enum OfficialFixture {
    static let repository = Fixtures.repository

    /// layout ("qat" / "bf16") -> folder, written once per test process.
    static let folders: Result<[String: URL], Error> = Result {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("mobilemoe-official-\(UUID().uuidString)")
        var out: [String: URL] = [:]
        for layout in ["qat", "bf16"] {
            let dir = root.appendingPathComponent(layout)
            let python = ProcessInfo.processInfo.environment["PYTHON"] ?? "python3"
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            p.arguments = [python, "tests/official_fixture.py", dir.path, "--layout", layout]
            p.currentDirectoryURL = repository
            let err = Pipe()
            p.standardError = err
            p.standardOutput = FileHandle.nullDevice
            try p.run()
            let message = err.fileHandleForReading.readDataToEndOfFile()
            p.waitUntilExit()
            guard p.terminationStatus == 0 else {
                throw FixtureError("`\(python) tests/official_fixture.py \(dir.path) --layout \(layout)` failed (\(p.terminationStatus)): "
                                   + String(decoding: message.suffix(2000), as: UTF8.self))
            }
            out[layout] = dir
        }
        return out
    }

    static func folder(_ layout: String) throws -> URL {
        try XCTUnwrap(folders.get()[layout])
    }

    /// Loaded once per layout (the 128,256-entry tokenizer takes a moment in debug builds).
    static let models: [String: Result<MobileMoEModel, Error>] = Dictionary(uniqueKeysWithValues: ["qat", "bf16"].map { layout in
        (layout, Result { try MobileMoEModel(directory: folder(layout), backend: .cpu) })
    })

    static func model(_ layout: String) throws -> MobileMoEModel { try models[layout]!.get() }

    struct FixtureError: Error, CustomStringConvertible {
        let description: String
        init(_ s: String) { description = s }
    }
}

/// Runs the built `mobilemoe` executable (next to the test bundle).
func runMobileMoECLI(_ args: [String]) throws -> (status: Int32, out: String, err: String) {
    let bundle = Bundle(for: OfficialCheckpointTests.self).bundleURL
    let dir = bundle.pathExtension == "xctest" ? bundle.deletingLastPathComponent() : bundle
    let binary = dir.appendingPathComponent("mobilemoe")
    guard FileManager.default.isExecutableFile(atPath: binary.path) else {
        throw OfficialFixture.FixtureError("mobilemoe is not built at \(binary.path)")
    }
    let p = Process()
    p.executableURL = binary
    p.arguments = args
    let out = Pipe(), err = Pipe()
    p.standardOutput = out
    p.standardError = err
    try p.run()
    // stderr on another thread, so that neither pipe can fill up and block the child.
    let stderrBox = ResultBox<Data>()
    let group = DispatchGroup()
    group.enter()
    DispatchQueue.global().async {
        stderrBox.value = .success(err.fileHandleForReading.readDataToEndOfFile())
        group.leave()
    }
    let o = out.fileHandleForReading.readDataToEndOfFile()
    group.wait()
    p.waitUntilExit()
    let e = (try? stderrBox.value?.get()) ?? Data()
    return (p.terminationStatus, String(decoding: o, as: UTF8.self), String(decoding: e, as: UTF8.self))
}

final class OfficialCheckpointTests: XCTestCase {
    // The Java port's MobileMoeTokenizerIntegrationTest pins these ids.
    static let pinnedChat = [128_000, 128_005, 882, 128_006, 271, 678, 832, 73_479, 4_221, 13, 128_008, 128_005, 78_191, 128_006, 271]
    static let pinnedHello = [128_000, 9_906, 11, 13_716, 26_694, 36, 0]

    func testReleasedConfigsAndStops() throws {
        for layout in ["qat", "bf16"] {
            let model = try OfficialFixture.model(layout)
            let c = model.configuration
            XCTAssertEqual(c.isQuantized, layout == "qat")
            XCTAssertEqual(c.vocabSize, 128_256)
            XCTAssertEqual(c.routedScalingFactor, 2.5)
            XCTAssertEqual(c.maxPositionEmbeddings, 8192)
            XCTAssertEqual(model.tokenizer.vocabularySize, 128_256)
            XCTAssertEqual(model.chatTemplate?.family, .mobileMoE(trimsContent: false))
            XCTAssertEqual(model.bosTokenId, 128_000)
            // config.json [128001, 128008] + generation_config.json [128001, 128007, 128008]
            // + the tokenizer's eos_token <|eot|> (128008).
            XCTAssertEqual(model.stopTokenIds, [128_001, 128_007, 128_008], layout)
        }
    }

    func testPinnedPromptIds() throws {
        for layout in ["qat", "bf16"] {
            let model = try OfficialFixture.model(layout)
            XCTAssertEqual(try model.tokens(for: .chat([.user("Name one JVM language.")])), Self.pinnedChat, layout)
            XCTAssertEqual(try model.tokens(for: .text("Hello, MobileMoE!")), Self.pinnedHello, layout)
            XCTAssertEqual(model.tokenizer.decode(Array(Self.pinnedHello.dropFirst())), "Hello, MobileMoE!")
            // A user turn and the reply prompt, as the issue pins them.
            let hi = try model.tokens(for: .chat([.user("hi")]))
            XCTAssertEqual(Array(hi.prefix(5)), [128_000, 128_005, 882, 128_006, 271])
            XCTAssertEqual(Array(hi.suffix(5)), [128_008, 128_005, 78_191, 128_006, 271])
        }
    }

    func testCommandLineOnBothLayouts() throws {
        for layout in ["qat", "bf16"] {
            let dir = try OfficialFixture.folder(layout)
            let r = try runMobileMoECLI(["--model", dir.path, "--prompt", "hi", "--max-tokens", "8", "--backend", "cpu", "--temperature", "0"])
            XCTAssertEqual(r.status, 0, "\(layout): \(r.err)")
            let ids = try OfficialFixture.model(layout).tokens(for: .chat([.user("hi")]))
            XCTAssertTrue(r.err.contains("prompt: \(ids.count) tokens"), "\(layout): \(r.err)")
        }
        // --max-tokens: Int.max means "until a stop token or the full context" (the tiny
        // fixture's 512), never a trap; 0, negative and non-numbers are refused.
        let tiny = try runMobileMoECLI(["--model", Fixtures.url("tiny-qat").path, "--prompt", "hi", "--raw",
                                        "--max-tokens", "9223372036854775807", "--backend", "cpu", "--temperature", "0"])
        XCTAssertEqual(tiny.status, 0, tiny.err)
        let qat = try OfficialFixture.folder("qat").path
        for bad in ["0", "-3", "9223372036854775808", "many"] {
            let r = try runMobileMoECLI(["--model", qat, "--prompt", "hi", "--max-tokens", bad])
            XCTAssertEqual(r.status, 1, "--max-tokens \(bad): \(r.err)")
            XCTAssertTrue(r.err.contains("--max-tokens"), r.err)
        }
    }
}
