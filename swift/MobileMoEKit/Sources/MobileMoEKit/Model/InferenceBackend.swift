// What a compute backend (portable CPU reference, Metal) offers the generation loop: sessions
// that own a KV cache and turn tokens into next-token logits.

public protocol InferenceBackend: Sendable {
    var name: String { get }
    var config: ModelConfig { get }
    /// A fresh session (empty KV cache) able to hold `capacity` tokens.
    func makeSession(capacity: Int) throws -> InferenceSession
}

public protocol InferenceSession: AnyObject {
    /// Tokens already in the cache.
    var position: Int { get }
    /// Tokens the cache can hold (at most max_position_embeddings).
    var capacity: Int { get }
    /// Appends `tokens` to the cache and returns the logits of the last one (vocab_size values).
    /// `expertsPerToken` overrides the config's top-k (adaptive compute).
    func forward(_ tokens: [Int], expertsPerToken: Int) throws -> [Float]
}

public enum InferenceError: Error, CustomStringConvertible {
    case contextFull(capacity: Int)
    case tokenOutOfRange(Int, vocab: Int)
    case badExpertsPerToken(Int, experts: Int)
    case backendUnavailable(String)
    case emptyPrompt

    public var description: String {
        switch self {
        case let .contextFull(n): return "the context is full (\(n) tokens)"
        case let .tokenOutOfRange(t, v): return "token id \(t) is outside the vocabulary (0..<\(v))"
        case let .badExpertsPerToken(k, e): return "experts per token must be in 1...\(e), got \(k)"
        case let .backendUnavailable(why): return "backend unavailable: \(why)"
        case .emptyPrompt: return "the prompt has no tokens"
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
