// Generation settings, shaped like mlx-swift-lm's GenerateParameters; sampling and penalties
// follow mlx-lm's make_sampler / make_logits_processors.

/// How the KV cache stores keys and values.
public enum KVCacheType: String, Sendable, CaseIterable {
    /// float32 (exact; 4 bytes per value).
    case float32
    /// IEEE float16 (2 bytes per value).
    case float16
    /// int8 with one float32 scale per head and position (1 byte per value + 4 bytes per head
    /// row), symmetric: q = round(x / s), s = max|x| / 127.
    case int8
}

public struct GenerateParameters: Sendable, Equatable {
    /// Most tokens to generate.
    public var maxTokens: Int
    /// 0 = greedy (argmax).
    public var temperature: Float
    /// Nucleus sampling mass on the temperature-1 distribution (1 = off).
    public var topP: Float
    /// Keep the k most likely tokens (0 = off).
    public var topK: Int
    /// RNG seed; nil draws one.
    public var seed: UInt64?
    /// Routed experts per token. nil = the checkpoint's num_experts_per_tok, lowered by the
    /// adaptive-compute policy when the device is hot, in Low Power Mode or low on battery.
    /// A value given here is used as is (the policy is not applied).
    public var expertsPerToken: Int?
    /// Prompt tokens per forward pass during prefill (bounds scratch memory).
    public var prefillStepSize: Int
    /// Token ids that end generation besides the checkpoint's eos/eot tokens.
    public var extraStopTokens: Set<Int>
    /// Keep tokens whose probability is >= minP * the top token's (0 = off).
    public var minP: Float
    /// Sign-aware multiplicative penalty on the logits of the last `repetitionContextSize`
    /// tokens (prompt included); nil or 1 = off.
    public var repetitionPenalty: Float?
    public var repetitionContextSize: Int
    /// Subtracted once from the logit of every token among the last `penaltyContextSize` tokens.
    public var presencePenalty: Float?
    /// Subtracted from a token's logit once per occurrence among the last `penaltyContextSize`.
    public var frequencyPenalty: Float?
    public var penaltyContextSize: Int
    /// Generation ends when the text contains one of these; the text from the stop string on
    /// is not emitted.
    public var stopStrings: [String]
    /// Most positions the KV cache keeps (nil = the whole context): the first 4 and the latest
    /// maxKVSize - 4, as mlx-lm's RotatingKVCache; generation can then run past the context
    /// window. CPU backend.
    public var maxKVSize: Int?
    /// KV cache storage (float16 / int8 halve or quarter its memory). CPU backend; the GPU
    /// kernels keep float32.
    public var kvCache: KVCacheType

    public init(maxTokens: Int = 256, temperature: Float = 0.6, topP: Float = 1.0, topK: Int = 0,
                seed: UInt64? = nil, expertsPerToken: Int? = nil, prefillStepSize: Int = 256,
                extraStopTokens: Set<Int> = [], minP: Float = 0, repetitionPenalty: Float? = nil,
                repetitionContextSize: Int = 20, presencePenalty: Float? = nil, frequencyPenalty: Float? = nil,
                penaltyContextSize: Int = 20, stopStrings: [String] = [], maxKVSize: Int? = nil,
                kvCache: KVCacheType = .float32) {
        self.maxTokens = maxTokens
        self.temperature = temperature
        self.topP = topP
        self.topK = topK
        self.seed = seed
        self.expertsPerToken = expertsPerToken
        self.prefillStepSize = prefillStepSize
        self.extraStopTokens = extraStopTokens
        self.minP = minP
        self.repetitionPenalty = repetitionPenalty
        self.repetitionContextSize = repetitionContextSize
        self.presencePenalty = presencePenalty
        self.frequencyPenalty = frequencyPenalty
        self.penaltyContextSize = penaltyContextSize
        self.stopStrings = stopStrings
        self.maxKVSize = maxKVSize
        self.kvCache = kvCache
    }

    /// Settings that cannot work, named (checked before any forward pass).
    func validate(vocabSize: Int) throws {
        func bad(_ why: String) -> InferenceError { .badParameter(why) }
        if maxTokens < 0 { throw bad("maxTokens must be >= 0, got \(maxTokens)") }
        if !(temperature >= 0) || !temperature.isFinite { throw bad("temperature must be >= 0, got \(temperature)") }
        if !(topP > 0 && topP <= 1) { throw bad("topP must be in (0, 1], got \(topP)") }
        if topK < 0 || topK >= vocabSize { throw bad("topK must be in 0..<\(vocabSize) (0 = off), got \(topK)") }
        if !(minP >= 0 && minP <= 1) { throw bad("minP must be in [0, 1], got \(minP)") }
        if let r = repetitionPenalty, !(r >= 0) || !r.isFinite { throw bad("repetitionPenalty must be >= 0, got \(r)") }
        if repetitionContextSize < 0 || penaltyContextSize < 0 { throw bad("penalty context sizes must be >= 0") }
        if prefillStepSize < 1 { throw bad("prefillStepSize must be >= 1, got \(prefillStepSize)") }
        if stopStrings.contains("") { throw bad("stop strings must not be empty") }
        if let m = maxKVSize, m <= RotatingWindow.keep { throw bad("maxKVSize must be > \(RotatingWindow.keep), got \(m)") }
    }
}
