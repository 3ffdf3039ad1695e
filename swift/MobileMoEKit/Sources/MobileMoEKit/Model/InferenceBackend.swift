// What a compute backend (portable CPU reference, Metal) offers the generation loop: sessions
// that own a KV cache and turn tokens into next-token logits.

public protocol InferenceBackend: Sendable {
    var name: String { get }
    var config: ModelConfig { get }
    /// A fresh session (empty KV cache).
    func makeSession(_ options: SessionOptions) throws -> InferenceSession
    /// Bytes of scratch memory a session with these options uses at most (for the budget).
    func scratchBytes(_ options: SessionOptions) -> Int
}

/// What a session's KV cache holds.
public struct SessionOptions: Sendable, Equatable {
    /// Positions the session may reach (clamped to max_position_embeddings), unless `maxKVSize`
    /// makes the cache a rotating window, which has no end.
    public var capacity: Int
    public var kvCache: KVCacheType
    public var maxKVSize: Int?
    /// Tokens per forward pass (scratch memory).
    public var maxStep: Int

    public init(capacity: Int, kvCache: KVCacheType = .float32, maxKVSize: Int? = nil, maxStep: Int = 256) {
        self.capacity = capacity
        self.kvCache = kvCache
        self.maxKVSize = maxKVSize
        self.maxStep = maxStep
    }

    /// Rows the cache keeps at most (for memory).
    public func cacheRows(config: ModelConfig) -> Int {
        if let m = maxKVSize { return m + maxStep }  // a forward appends before the window is cut
        return min(capacity, config.maxPositionEmbeddings)
    }
}

extension InferenceBackend {
    public func makeSession(capacity: Int) throws -> InferenceSession { try makeSession(SessionOptions(capacity: capacity)) }
}

/// Used by one task at a time (a generation, a chat session); Sendable so it can move between them.
public protocol InferenceSession: AnyObject, Sendable {
    /// Tokens fed so far (positions used).
    var position: Int { get }
    /// Positions the session can reach.
    var capacity: Int { get }
    /// Bytes the KV cache holds now.
    var cacheBytes: Int { get }
    /// Appends `tokens` to the cache and returns the logits of the last one (vocab_size values).
    /// `expertsPerToken` overrides the config's top-k (adaptive compute). `gate` is waited on
    /// before any GPU submission (app lifecycle).
    func forward(_ tokens: [Int], expertsPerToken: Int, gate: ComputeGate?) async throws -> [Float]
    /// Forgets every position >= `position`; false when the cache no longer holds what the
    /// positions before need (a rotating window moved on): start a new session then.
    func truncate(to position: Int) -> Bool
}

extension InferenceSession {
    public func forward(_ tokens: [Int], expertsPerToken: Int) async throws -> [Float] {
        try await forward(tokens, expertsPerToken: expertsPerToken, gate: nil)
    }
}

public enum InferenceError: Error, CustomStringConvertible, Equatable {
    case contextFull(capacity: Int)
    case tokenOutOfRange(Int, vocab: Int)
    case badExpertsPerToken(Int, experts: Int)
    case backendUnavailable(String)
    case emptyPrompt
    case badParameter(String)
    case insufficientMemory(String)
    case sessionBusy

    public var description: String {
        switch self {
        case let .contextFull(n): return "the context is full (\(n) tokens)"
        case let .tokenOutOfRange(t, v): return "token id \(t) is outside the vocabulary (0..<\(v))"
        case let .badExpertsPerToken(k, e): return "experts per token must be in 1...\(e), got \(k)"
        case let .backendUnavailable(why): return "backend unavailable: \(why)"
        case .emptyPrompt: return "the prompt has no tokens"
        case let .badParameter(why): return "bad generation parameter: \(why)"
        case let .insufficientMemory(why): return "not enough memory: \(why)"
        case .sessionBusy: return "the chat session is already generating a reply"
        }
    }
}

extension InferenceSession {
    func check(_ tokens: [Int], config c: ModelConfig, capacity: Int, expertsPerToken k: Int) throws {
        guard (1...c.numLocalExperts).contains(k) else { throw InferenceError.badExpertsPerToken(k, experts: c.numLocalExperts) }
        guard position + tokens.count <= capacity else { throw InferenceError.contextFull(capacity: capacity) }
        if let bad = tokens.first(where: { $0 < 0 || $0 >= c.vocabSize }) {
            throw InferenceError.tokenOutOfRange(bad, vocab: c.vocabSize)
        }
    }
}
