// What `MobileMoEModel.generate` and `ChatSession` stream: text chunks (always whole UTF-8
// characters), then one info event with counts, timings and why generation stopped.

public enum GenerationEvent: Sendable, Equatable {
    case chunk(String)
    case info(GenerationInfo)
}

public struct GenerationInfo: Sendable, Equatable {
    public enum StopReason: String, Sendable { case stop, length, cancelled }

    /// Prompt tokens run through the model this time (a chat session reuses the cached ones).
    public var promptTokenCount: Int
    public var generationTokenCount: Int
    /// Seconds spent on the prompt (prefill) and on generating tokens after it.
    public var promptTime: Double
    public var generationTime: Double
    public var stopReason: StopReason
    /// The generated token ids (a stop token is not included; the tokens of a stop string are).
    public var tokens: [Int]
    /// Experts per token used for the last token (after the adaptive-compute policy).
    public var expertsPerToken: Int
    /// The backend that ran ("cpu", "metal").
    public var backend: String
    /// Prompt tokens taken from the KV cache instead of being run again (chat sessions).
    public var cachedPromptTokenCount: Int = 0
    /// Why `.automatic` did not pick the GPU (nil when it did, or when a backend was named).
    public var backendFallbackReason: String? = nil

    public var promptTokensPerSecond: Double { promptTime > 0 ? Double(promptTokenCount) / promptTime : 0 }
    public var tokensPerSecond: Double { generationTime > 0 ? Double(generationTokenCount) / generationTime : 0 }
}
