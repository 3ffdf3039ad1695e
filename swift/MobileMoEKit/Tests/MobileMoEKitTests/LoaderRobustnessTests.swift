// Issue 11 regressions on the Swift side: files that are not regular files (FIFO, device,
// directory) never block or read forever, bad bytes and bad shapes are named errors, the data
// section of a safetensors file is covered exactly, and absurd sizes never trap.
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import XCTest
@testable import MobileMoEKit

final class LoaderRobustnessTests: XCTestCase {
    /// A writable copy of the tiny QAT fixture checkpoint.
    func checkpointCopy() throws -> URL {
        let dir = try temporaryDirectory(self).appendingPathComponent("ckpt")
        try FileManager.default.copyItem(at: Fixtures.url("tiny-qat"), to: dir)
        return dir
    }

    /// Runs `body` off the test thread and fails (instead of hanging) if it takes over 20 s.
    func withinDeadline<T>(_ what: String, _ body: @escaping @Sendable () throws -> T) -> Result<T, Error>? {
        let done = DispatchSemaphore(value: 0)
        let box = ResultBox<T>()
        Thread.detachNewThread {
            box.value = Result { try body() }
            done.signal()
        }
        guard done.wait(timeout: .now() + 20) == .success else {
            XCTFail("\(what) did not finish within 20 s (blocked?)")
            return nil
        }
        return box.value
    }

    func load(_ dir: URL) throws -> MobileMoEModel { try MobileMoEModel(directory: dir, backend: .cpu) }

    func assertLoadFails(_ dir: URL, _ what: String, contains needle: String, file: StaticString = #filePath, line: UInt = #line) {
        guard let r = withinDeadline(what, { try self.load(dir) }) else { return }
        switch r {
        case .success: XCTFail("\(what): loaded", file: file, line: line)
        case let .failure(e): XCTAssertTrue("\(e)".contains(needle), "\(what): \(e)", file: file, line: line)
        }
    }

    func replace(_ dir: URL, _ name: String, with make: (String) throws -> Void) throws {
        let path = dir.appendingPathComponent(name).path
        try FileManager.default.removeItem(atPath: path)
        try make(path)
    }

    func testSpecialFilesAreRefusedWithoutBlocking() throws {
        for name in ["config.json", "tokenizer.json", "tokenizer_config.json", "model.safetensors"] {
            let fifo = try checkpointCopy()
            try replace(fifo, name) { XCTAssertEqual(mkfifo($0, 0o600), 0) }
            assertLoadFails(fifo, "FIFO as \(name)", contains: "is a FIFO, not a regular file")

            let zero = try checkpointCopy()
            try replace(zero, name) { try FileManager.default.createSymbolicLink(atPath: $0, withDestinationPath: "/dev/zero") }
            assertLoadFails(zero, "/dev/zero as \(name)", contains: "is a character device, not a regular file")

            let folder = try checkpointCopy()
            try replace(folder, name) { try FileManager.default.createDirectory(atPath: $0, withIntermediateDirectories: false) }
            assertLoadFails(folder, "directory as \(name)", contains: "is a directory, not a regular file")
        }
        let missing = try checkpointCopy()
        try FileManager.default.removeItem(at: missing.appendingPathComponent("model.safetensors"))
        assertLoadFails(missing, "no weights", contains: "no model.safetensors")
    }

    func testOversizedAndNonUTF8JSON() throws {
        let big = try checkpointCopy()
        let path = big.appendingPathComponent("config.json").path
        XCTAssertEqual(truncate(path, off_t(FileLimits.smallJSON + 1)), 0)  // sparse: nothing is written
        assertLoadFails(big, "oversized config.json", contains: "limit")

        let latin1 = try checkpointCopy()
        var text = try Data(contentsOf: latin1.appendingPathComponent("config.json"))
        text.insert(contentsOf: Array(#""_name_or_path": "caf"#.utf8) + [0xE9] + Array("\", ".utf8), at: 1)
        try text.write(to: latin1.appendingPathComponent("config.json"))
        assertLoadFails(latin1, "non-UTF-8 config.json", contains: "UTF-8")

        let deep = try checkpointCopy()
        let nested = String(repeating: "[", count: 10_000) + String(repeating: "]", count: 10_000)
        try Data("{\"added_tokens\": \(nested)}".utf8).write(to: deep.appendingPathComponent("tokenizer.json"))
        assertLoadFails(deep, "deeply nested tokenizer.json", contains: "nested deeper")
    }

    func testSafetensorsDataCoveredExactly() throws {
        let ok = #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#
        let eight = [UInt8](repeating: 0, count: 8)
        let header = Array(ok.utf8)
        let cases: [(String, Data, String)] = [
            ("trailing bytes", safetensorsBytes(header: ok, data: eight + [0]), "after the last tensor"),
            ("header length one short", safetensorsBytes(header: ok + " ", data: eight, headerLength: UInt64(header.count)), "after the last tensor"),
            ("header length one long", safetensorsBytes(header: ok, data: eight + [0], headerLength: UInt64(header.count + 1)), "not valid JSON"),
            ("gap before a tensor", safetensorsBytes(header: #"{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#, data: eight), "no tensor covers"),
            ("gap between tensors", safetensorsBytes(header: #"{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"b":{"dtype":"U8","shape":[2],"data_offsets":[6,8]}}"#, data: eight), "no tensor covers"),
            ("shape a number", safetensorsBytes(header: #"{"a":{"dtype":"F32","shape":2,"data_offsets":[0,8]}}"#, data: eight), "no shape array"),
            ("dtype a list", safetensorsBytes(header: #"{"a":{"dtype":["F32"],"shape":[2],"data_offsets":[0,8]}}"#, data: eight), "no dtype string"),
            ("offsets floats", safetensorsBytes(header: #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0.0,8.0]}}"#, data: eight), "data_offsets"),
        ]
        let dir = try temporaryDirectory(self)
        for (i, (name, data, needle)) in cases.enumerated() {
            let url = dir.appendingPathComponent("\(i).safetensors")
            try data.write(to: url)
            XCTAssertThrowsError(try SafeTensorsFile(path: url.path), name) { error in
                XCTAssertTrue(error is SafeTensorsError, "\(name): \(error)")
                XCTAssertTrue("\(error)".contains(needle), "\(name): \(error)")
            }
        }
        // null metadata is valid (the safetensors library accepts it).
        let url = dir.appendingPathComponent("null-metadata.safetensors")
        try safetensorsBytes(header: #"{"__metadata__":null,"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#, data: eight).write(to: url)
        XCTAssertEqual(try SafeTensorsFile(path: url.path).tensors["a"]?.shape, [2])
    }

    func testShardIndexShape() throws {
        let cases: [(String, String)] = [
            ("weight_map a list", #"{"weight_map": ["model.safetensors"]}"#),
            ("shard a number", #"{"weight_map": {"model.norm.weight": 3}}"#),
            ("shard a path", #"{"weight_map": {"model.norm.weight": "../model.safetensors"}}"#),
            ("index a list", #"[1]"#),
            ("metadata a string", #"{"metadata": "x", "weight_map": {}}"#),
        ]
        for (name, index) in cases {
            let dir = try checkpointCopy()
            try FileManager.default.moveItem(at: dir.appendingPathComponent("model.safetensors"), to: dir.appendingPathComponent("shard.safetensors"))
            try Data(index.utf8).write(to: dir.appendingPathComponent("model.safetensors.index.json"))
            XCTAssertThrowsError(try TensorStore(directory: dir), name) { XCTAssertTrue($0 is SafeTensorsError, "\(name): \($0)") }
        }
    }

    func testGenerationConfigAndStops() throws {
        let dir = try checkpointCopy()
        try Data(#"{"eos_token_id": [7, 9], "bos_token_id": 0}"#.utf8).write(to: dir.appendingPathComponent("generation_config.json"))
        XCTAssertEqual(try load(dir).stopTokenIds, [1, 4, 7, 9], "config.json's and generation_config.json's eos ids")
        try Data(#"{"eos_token_id": "7"}"#.utf8).write(to: dir.appendingPathComponent("generation_config.json"))
        assertLoadFails(dir, "eos id a string", contains: "generation_config.json")
        try Data(#"{"eos_token_id": [100000]}"#.utf8).write(to: dir.appendingPathComponent("generation_config.json"))
        assertLoadFails(dir, "eos id outside the vocabulary", contains: "outside the model's vocabulary")
        try Data([0x7B, 0xFF]).write(to: dir.appendingPathComponent("generation_config.json"))
        assertLoadFails(dir, "generation_config.json not JSON", contains: "generation_config.json")
    }

    func testTokenizerLargerThanModelVocabulary() throws {
        let dir = try checkpointCopy()
        let url = dir.appendingPathComponent("tokenizer.json")
        var json = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
        var added = json["added_tokens"] as! [[String: Any]]
        added.append(["id": 512, "content": "<|extra|>", "special": true])  // the model has 512 ids: 0...511
        json["added_tokens"] = added
        try JSONSerialization.data(withJSONObject: json).write(to: url)
        assertLoadFails(dir, "tokenizer id 512 in a 512-id model", contains: "vocab_size is 512")
    }

    func testMaxTokensIntMaxDoesNotTrap() async throws {
        // A short context so that "until the context is full" ends soon.
        let dir = try checkpointCopy()
        let url = dir.appendingPathComponent("config.json")
        var config = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
        config["max_position_embeddings"] = 16
        config["eos_token_id"] = NSNull()
        try JSONSerialization.data(withJSONObject: config).write(to: url)
        let model = try load(dir)
        let p = GenerateParameters(maxTokens: .max, temperature: 0)
        var info: GenerationInfo?
        for try await event in model.generate(.text("The quick brown fox"), parameters: p) {
            if case let .info(i) = event { info = i }
        }
        let i = try XCTUnwrap(info)
        // Generation ran until a stop token or the full context (the last token is sampled,
        // never fed), not past it.
        XCTAssertLessThanOrEqual(i.promptTokenCount + i.generationTokenCount, model.configuration.maxPositionEmbeddings + 1)
        // Token ids outside the vocabulary are refused at the model's boundary.
        do {
            for try await _ in model.generate(.tokens([0, 512]), parameters: GenerateParameters(maxTokens: 1, temperature: 0)) {}
            XCTFail("an id outside the vocabulary was accepted")
        } catch {
            XCTAssertTrue("\(error)".contains("outside the vocabulary"), "\(error)")
        }
    }
}

final class ResultBox<T>: @unchecked Sendable {
    var value: Result<T, Error>?
}
