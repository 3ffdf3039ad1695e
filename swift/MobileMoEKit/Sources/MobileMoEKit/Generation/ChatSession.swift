// A multi-turn conversation over one KV cache (mlx-swift-lm's ChatSession, shaped for this
// package). Each turn renders the whole conversation with the chat template, keeps the cached
// tokens it shares with the new prompt (normally everything before the new user message) and
// prefills only the rest. A template that renders the history differently, or a rotating
// window that moved past the shared part, costs a re-prefill, never a wrong answer.
// `reset()` forgets history and cache; a memory warning drops the cache of an idle session
// (its next turn prefills the conversation again).
//
//     let chat = ChatSession(model: model, instructions: "Be brief.")
//     for try await event in chat.streamResponse(to: "Hi!") { ... }
//     let second = try await chat.respond(to: "And then?")
import Foundation

public actor ChatSession {
    public nonisolated let model: MobileMoEModel
    public var parameters: GenerateParameters
    /// The system message sent first (nil: none).
    public let instructions: String?
    /// The conversation so far (user and assistant turns; the instructions are not included).
    public private(set) var messages: [ChatMessage]
    private var session: InferenceSession?
    /// The tokens in `session`'s cache, in order.
    private var cachedTokens: [Int] = []
    private var busy = false
    private var dropCacheAfterTurn = false
    private let exclusive: ExclusiveAccess?
    private var memoryWarning: MemoryWarningRegistration?

    public init(model: MobileMoEModel, instructions: String? = nil, parameters: GenerateParameters = GenerateParameters(),
                history: [ChatMessage] = []) {
        self.init(model: model, instructions: instructions, parameters: parameters, history: history, exclusive: nil)
    }

    init(model: MobileMoEModel, instructions: String?, parameters: GenerateParameters, history: [ChatMessage],
         exclusive: ExclusiveAccess?) {
        self.model = model
        self.instructions = instructions
        self.parameters = parameters
        self.messages = history
        self.exclusive = exclusive
    }

    /// Tokens the KV cache holds now (reused by the next turn as far as they match).
    public var cachedTokenCount: Int { cachedTokens.count }

    public func setParameters(_ p: GenerateParameters) { parameters = p }

    /// Streams the reply to `message`; cancel the consuming task (or leave the loop) to stop —
    /// the partial reply stays in the history, as the cache holds it.
    public nonisolated func streamResponse(to message: String) -> AsyncThrowingStream<GenerationEvent, Error> {
        AsyncThrowingStream { continuation in
            let task = Task {
                do {
                    let info = try await self.turn(message) { continuation.yield(.chunk($0)) }
                    continuation.yield(.info(info))
                    continuation.finish()
                } catch {
                    continuation.finish(throwing: error)
                }
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }

    /// The whole reply to `message`.
    public func respond(to message: String) async throws -> String {
        let reply = TextBuffer()
        _ = try await turn(message) { reply.append($0) }
        return reply.text
    }

    /// Forgets the conversation and the KV cache (the instructions stay).
    public func reset() {
        messages = []
        dropCache()
    }

    private func dropCache() {
        session = nil
        cachedTokens = []
    }

    private func memoryWarningReceived() {
        if busy { dropCacheAfterTurn = true } else { dropCache() }
    }

    /// One turn: render, reuse the shared prefix of the cache, prefill the rest, generate.
    func turn(_ message: String, onText: @escaping @Sendable (String) -> Void) async throws -> GenerationInfo {
        guard !busy else { throw InferenceError.sessionBusy }
        busy = true
        defer {
            busy = false
            if dropCacheAfterTurn { dropCacheAfterTurn = false; dropCache() }
        }
        if memoryWarning == nil {
            memoryWarning = model.onMemoryWarning { [weak self] in
                Task { await self?.memoryWarningReceived() }
            }
        }
        if let exclusive { try await exclusive.acquire() }
        defer { exclusive?.release() }

        let p = parameters
        let conversation = (instructions.map { [ChatMessage.system($0)] } ?? []) + messages + [.user(message)]
        let ids = try model.tokens(for: .chat(conversation))
        guard !ids.isEmpty else { throw InferenceError.emptyPrompt }
        var shared = zip(cachedTokens, ids).prefix { $0 == $1 }.count
        shared = min(shared, ids.count - 1)  // the last prompt token must run to give logits
        var options = GenerationLoop.sessionOptions(p, positions: ids.count)
        options.capacity = max(options.capacity, model.memoryEstimate.contextTokens)
        let needed = min(GenerationLoop.positionsNeeded(p, prompt: ids.count), model.configuration.maxPositionEmbeddings)
        if let s = session, s.capacity >= needed, s.truncate(to: shared) {
            // reuse
        } else {
            session = try model.makeSession(options)
            shared = 0
        }
        let s = session!
        let reply = TextBuffer()
        let info: GenerationInfo
        do {
            info = try await GenerationLoop(model: model, parameters: p)
                .run(session: s, context: Array(ids[..<shared]), newTokens: Array(ids[shared...])) { text in
                    reply.append(text)
                    onText(text)
                }
        } catch {
            dropCache()  // the cache may hold part of a failed step
            throw error
        }
        // The cache holds the prompt, then every generated token that was fed back.
        cachedTokens = Array((ids + info.tokens).prefix(s.position))
        messages.append(.user(message))
        messages.append(.assistant(reply.text))
        return info
    }
}

/// Text collected from the generation task.
final class TextBuffer: @unchecked Sendable {
    private let lock = NSLock()
    private var value = ""
    func append(_ s: String) { lock.lock(); value += s; lock.unlock() }
    var text: String { lock.lock(); defer { lock.unlock() }; return value }
}

/// One holder at a time, first come first served (the container's model access).
final class ExclusiveAccess: @unchecked Sendable {
    private let lock = NSLock()
    private var held = false
    private var waiters: [CheckedContinuation<Void, Never>] = []

    func acquire() async throws {
        if tryAcquire() { return }
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            lock.lock()
            if !held { held = true; lock.unlock(); c.resume(); return }
            waiters.append(c)
            lock.unlock()
        }
        if Task.isCancelled { release(); throw CancellationError() }
    }

    private func tryAcquire() -> Bool {
        lock.lock()
        defer { lock.unlock() }
        if held { return false }
        held = true
        return true
    }

    /// Hands the access to the next waiter, if any.
    func release() {
        lock.lock()
        if waiters.isEmpty {
            held = false
            lock.unlock()
        } else {
            let next = waiters.removeFirst()
            lock.unlock()
            next.resume()  // stays held, now by the waiter
        }
    }
}
