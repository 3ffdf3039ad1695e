// Generation settings, shaped like mlx-swift-lm's GenerateParameters.

public struct GenerateParameters: Sendable, Equatable {
    /// Most tokens to generate.
    public var maxTokens: Int
    /// 0 = greedy (argmax).
    public var temperature: Float
    /// Nucleus sampling mass (1 = off).
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

    public init(maxTokens: Int = 256, temperature: Float = 0.6, topP: Float = 1.0, topK: Int = 0,
                seed: UInt64? = nil, expertsPerToken: Int? = nil, prefillStepSize: Int = 256,
                extraStopTokens: Set<Int> = []) {
        self.maxTokens = maxTokens
        self.temperature = temperature
        self.topP = topP
        self.topK = topK
        self.seed = seed
        self.expertsPerToken = expertsPerToken
        self.prefillStepSize = prefillStepSize
        self.extraStopTokens = extraStopTokens
    }
}
