// Chat sessions: the second turn prefills only the new tokens and gives the same tokens as a
// full re-prefill of the conversation; reset; stop strings; the container queue.
import Foundation
import XCTest
@testable import MobileMoEKit

final class ChatSessionTests: XCTestCase {
    static let model = try! MobileMoEModel(directory: Fixtures.url("tiny-qat"), backend: .cpu,
                                           options: LoadOptions(lifecycle: NoLifecycleEvents(), deviceState: FixedDeviceState()))
    let greedy = GenerateParameters(maxTokens: 5, temperature: 0)

    func infoOf(_ stream: AsyncThrowingStream<GenerationEvent, Error>) async throws -> (String, GenerationInfo) {
        var text = "", info: GenerationInfo?
        for try await e in stream {
            switch e {
            case let .chunk(c): text += c
            case let .info(i): info = i
            }
        }
        return (text, try XCTUnwrap(info))
    }

    func testSecondTurnPrefillsOnlyNewTokensAndMatchesFullPrefill() async throws {
        let model = Self.model
        let chat = ChatSession(model: model, instructions: "Be brief.", parameters: greedy)
        let (reply1, info1) = try await infoOf(chat.streamResponse(to: "Hello! How are you?"))
        XCTAssertEqual(info1.cachedPromptTokenCount, 0)
        let first = try model.tokens(for: .chat([.system("Be brief."), .user("Hello! How are you?")]))
        XCTAssertEqual(info1.promptTokenCount, first.count)

        let (reply2, info2) = try await infoOf(chat.streamResponse(to: "Tell me more."))
        let history: [ChatMessage] = [.system("Be brief."), .user("Hello! How are you?"), .assistant(reply1), .user("Tell me more.")]
        let full = try model.tokens(for: .chat(history))
        // Cached: the first prompt and the reply tokens fed back (as far as the re-rendered
        // conversation tokenizes the same way); prefilled: exactly the rest.
        XCTAssertGreaterThanOrEqual(info2.cachedPromptTokenCount, first.count)
        XCTAssertEqual(info2.cachedPromptTokenCount + info2.promptTokenCount, full.count)
        XCTAssertLessThan(info2.promptTokenCount, full.count - first.count)
        let messages = await chat.messages
        XCTAssertEqual(messages, Array(history.dropFirst()) + [.assistant(reply2)])

        // The same conversation prefilled from scratch gives the same reply tokens.
        let (_, fresh) = try await infoOf(model.generate(.chat(history), parameters: greedy))
        XCTAssertEqual(info2.tokens, fresh.tokens)
        XCTAssertEqual(fresh.promptTokenCount, full.count)

        await chat.reset()
        let cached = await chat.cachedTokenCount
        XCTAssertEqual(cached, 0)
        let empty = await chat.messages
        XCTAssertEqual(empty, [])
        let (_, again) = try await infoOf(chat.streamResponse(to: "Hello! How are you?"))
        XCTAssertEqual(again.cachedPromptTokenCount, 0)
        XCTAssertEqual(again.tokens, info1.tokens)
    }

    func testMemoryWarningDropsTheCacheOfAnIdleSession() async throws {
        let model = try MobileMoEModel(directory: Fixtures.url("tiny-qat"), backend: .cpu,
                                       options: LoadOptions(lifecycle: NoLifecycleEvents(), deviceState: FixedDeviceState()))
        let chat = ChatSession(model: model, parameters: greedy)
        _ = try await chat.respond(to: "Hi")
        let before = await chat.cachedTokenCount
        XCTAssertGreaterThan(before, 0)
        model.handleMemoryWarning()
        for _ in 0..<2000 where await chat.cachedTokenCount > 0 { try await Task.sleep(nanoseconds: 5_000_000) }
        let after = await chat.cachedTokenCount
        XCTAssertEqual(after, 0)
        let (_, info) = try await infoOf(chat.streamResponse(to: "Again"))
        XCTAssertEqual(info.cachedPromptTokenCount, 0, "the next turn prefills the conversation again")
        let messages = await chat.messages
        XCTAssertEqual(messages.count, 4, "history survives")
    }

    func testStopStringsEndGenerationAndAreNotEmitted() async throws {
        let model = Self.model
        let ids = try model.tokens(for: .text("The quick brown fox"))
        let (plain, _) = try await infoOf(model.generate(.tokens(ids), parameters: .init(maxTokens: 6, temperature: 0)))
        XCTAssertGreaterThan(plain.count, 2)
        let stop = String(plain.dropFirst(plain.count / 2).prefix(2))
        let expected = String(plain[..<plain.range(of: stop)!.lowerBound])
        var p = GenerateParameters(maxTokens: 6, temperature: 0)
        p.stopStrings = ["never appears", stop]
        let (text, info) = try await infoOf(model.generate(.tokens(ids), parameters: p))
        XCTAssertEqual(text, expected)
        XCTAssertEqual(info.stopReason, .stop)
    }

    func testStopStringMatcherAcrossChunks() {
        var m = StopStringMatcher(["</end>", "STOP"])
        XCTAssertEqual(m.feed("hello </").text, "hello ")
        XCTAssertEqual(m.feed("e").text, "")
        let r = m.feed("nd> tail")
        XCTAssertEqual(r.text, "")
        XCTAssertTrue(r.stopped)
        var n = StopStringMatcher(["STOP"])
        XCTAssertEqual(n.feed("aST").text, "a")
        XCTAssertEqual(n.feed("x").text, "STx")
        XCTAssertEqual(n.feed("ST").text, "")
        XCTAssertEqual(n.flush(), "ST")
        var none = StopStringMatcher([])
        XCTAssertEqual(none.feed("abc").text, "abc")
    }

    func testContainerRunsTurnsOneAtATime() async throws {
        let container = ModelContainer(model: Self.model)
        let a = container.makeChatSession(parameters: greedy), b = container.makeChatSession(parameters: greedy)
        async let ra = a.respond(to: "Hi")
        async let rb = b.respond(to: "Hi")
        let (x, y) = try await (ra, rb)
        XCTAssertEqual(x, y)
        let n = try await container.perform { $0.configuration.vocabSize }
        XCTAssertEqual(n, 512)
    }
}
