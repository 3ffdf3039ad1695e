// The public API end to end on the fixture checkpoint: streamed events, greedy tokens equal to
// Python's, stop reasons, seeded sampling, cancellation, experts-per-token override.
import Foundation
import XCTest
@testable import MobileMoEKit

final class GenerationTests: XCTestCase {
    static let model = try! MobileMoEModel(directory: Fixtures.url("tiny-qat"), backend: .cpu, deviceState: FixedDeviceState())

    func collect(_ stream: AsyncThrowingStream<GenerationEvent, Error>) async throws -> (String, GenerationInfo) {
        var text = "", info: GenerationInfo?
        for try await event in stream {
            switch event {
            case let .chunk(c): text += c
            case let .info(i): info = i
            }
        }
        return (text, try XCTUnwrap(info))
    }

    func testLoadAsync() async throws {
        let model = try await MobileMoEModel.load(directory: Fixtures.url("tiny-qat"), backend: .cpu)
        XCTAssertEqual(model.backend.name, "cpu")
        XCTAssertEqual(model.stopTokenIds, [1, 4])
        XCTAssertEqual(model.bosTokenId, 0)
    }

    func testGreedyChatMatchesPython() async throws {
        let expected = try Fixtures.json("tiny-qat-expected.json") as! [String: Any]
        let chat = (expected["cases"] as! [[String: Any]])[0]
        let greedy = chat["greedy_tokens"] as! [Int]
        let params = GenerateParameters(maxTokens: greedy.count, temperature: 0)
        let (text, info) = try await collect(Self.model.generate(prompt: "Hello! How are you?", parameters: params))
        XCTAssertEqual(info.tokens, greedy)
        XCTAssertEqual(info.promptTokenCount, (chat["prompt_ids"] as! [Int]).count)
        XCTAssertEqual(info.stopReason, .length)
        XCTAssertEqual(info.generationTokenCount, greedy.count)
        XCTAssertEqual(text, Self.model.tokenizer.decode(greedy))
        XCTAssertGreaterThan(info.tokensPerSecond, 0)
    }

    func testSeededSamplingIsReproducible() async throws {
        let params = GenerateParameters(maxTokens: 10, temperature: 1.0, topP: 0.9, topK: 50, seed: 42)
        let (_, a) = try await collect(Self.model.generate(.text("The quick brown"), parameters: params))
        let (_, b) = try await collect(Self.model.generate(.text("The quick brown"), parameters: params))
        XCTAssertEqual(a.tokens, b.tokens)
        var other = params
        other.seed = 43
        let (_, c) = try await collect(Self.model.generate(.text("The quick brown"), parameters: other))
        XCTAssertNotEqual(a.tokens, c.tokens)
    }

    func testRawTextPromptFollowsTheTokenizer() throws {
        // Like Python's tokenizer.encode(text): no BOS unless the tokenizer's post-processor
        // adds one (ours does not; the bundled model was trained without BOS).
        let ids = try Self.model.tokens(for: .text("The quick brown"))
        XCTAssertEqual(ids, Self.model.tokenizer.encode("The quick brown", addSpecialTokens: false))
        XCTAssertNotEqual(ids.first, Self.model.bosTokenId)
    }

    func testStopToken() async throws {
        let expected = try Fixtures.json("tiny-qat-expected.json") as! [String: Any]
        let fox = (expected["cases"] as! [[String: Any]])[1]
        let ids = fox["prompt_ids"] as! [Int], greedy = fox["greedy_tokens"] as! [Int]
        let params = GenerateParameters(maxTokens: 8, temperature: 0, extraStopTokens: [greedy[0]])
        let (text, info) = try await collect(Self.model.generate(.tokens(ids), parameters: params))
        XCTAssertEqual(info.stopReason, .stop)
        XCTAssertEqual(info.tokens, [])
        XCTAssertEqual(text, "")
    }

    func testCancellationStopsTheProducer() async throws {
        // Greedy on this prompt repeats "x" forever (no stop token), so only cancellation ends it.
        let expected = try Fixtures.json("tiny-qat-expected.json") as! [String: Any]
        let fox = (expected["cases"] as! [[String: Any]])[1]["prompt_ids"] as! [Int]
        let endless = GenerateParameters(maxTokens: 1_000_000, temperature: 0)
        let start = Date()

        // Breaking out of the loop releases the stream: onTermination cancels the producer.
        var chunks = 0
        for try await event in Self.model.generate(.tokens(fox), parameters: endless) {
            if case .chunk = event { chunks += 1 }
            if chunks == 3 { break }
        }
        XCTAssertEqual(chunks, 3)
        try await waitUntilIdle()

        // Cancelling the consuming task stops it too.
        let task = Task { () -> Int in
            var n = 0
            for try await event in Self.model.generate(.tokens(fox), parameters: endless) {
                if case .chunk = event { n += 1 }
            }
            return n
        }
        try await Task.sleep(nanoseconds: 100_000_000)
        task.cancel()
        _ = try? await task.value
        try await waitUntilIdle()
        XCTAssertLessThan(Date().timeIntervalSince(start), 20)
    }

    /// Waits (up to 10 s) until no generation loop runs.
    func waitUntilIdle() async throws {
        for _ in 0..<1000 where GenerationLoop.running.value > 0 { try await Task.sleep(nanoseconds: 10_000_000) }
        XCTAssertEqual(GenerationLoop.running.value, 0, "the producer kept running after cancellation")
    }

    func testLoopReportsCancelled() async throws {
        // Run the loop inside a task that is already cancelled: no forward pass, reason .cancelled.
        let task = Task { () -> GenerationInfo in
            withUnsafeCurrentTask { $0?.cancel() }
            let session = try Self.model.backend.makeSession(capacity: 16)
            return try await GenerationLoop(model: Self.model, parameters: .init(maxTokens: 5)).run(session: session, newTokens: [0, 5, 6]) { _ in }
        }
        let info = try await task.value
        XCTAssertEqual(info.stopReason, .cancelled)
        XCTAssertEqual(info.tokens, [])
    }

    func testExpertsPerTokenOverride() async throws {
        let params = GenerateParameters(maxTokens: 4, temperature: 0, expertsPerToken: 1)
        let (_, info) = try await collect(Self.model.generate(.text("Hi"), parameters: params))
        XCTAssertEqual(info.expertsPerToken, 1)
        var bad = params
        bad.expertsPerToken = 9
        do {
            _ = try await collect(Self.model.generate(.text("Hi"), parameters: bad))
            XCTFail("k = 9 of 8 experts must throw")
        } catch {
            XCTAssertTrue(error is InferenceError)
        }
    }

    func testPolicyLowersExpertsUnderPressure() async throws {
        let hot = try MobileMoEModel(directory: Fixtures.url("tiny-qat"), backend: .cpu,
                                     deviceState: FixedDeviceState(DeviceState(thermal: .critical)))
        let (_, info) = try await collect(hot.generate(.text("Hi"), parameters: .init(maxTokens: 2, temperature: 0)))
        XCTAssertEqual(info.expertsPerToken, 1)  // top-2 halved
    }

    func testFullContextEndsWithLength() async throws {
        let expected = try Fixtures.json("tiny-qat-expected.json") as! [String: Any]
        let fox = (expected["cases"] as! [[String: Any]])[1]["prompt_ids"] as! [Int]
        let (_, info) = try await collect(Self.model.generate(.tokens(fox), parameters: .init(maxTokens: 10_000, temperature: 0)))
        XCTAssertEqual(info.stopReason, .length)
        XCTAssertEqual(fox.count + info.tokens.count, 512 + 1, "fills max_position_embeddings, plus the last sampled token")
    }

    func testContextLimit() async throws {
        let session = try Self.model.backend.makeSession(capacity: 4)
        await XCTAssertThrowsErrorAsync(try await session.forward([0, 1, 2, 3, 4], expertsPerToken: 2))
        await XCTAssertThrowsErrorAsync(try await session.forward([600], expertsPerToken: 2))
    }
}
