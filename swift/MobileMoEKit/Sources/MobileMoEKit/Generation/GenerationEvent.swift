// What `MobileMoEModel.generate` streams: text chunks (always whole UTF-8 characters), then
// one info event with counts, timings and why generation stopped.

public enum GenerationEvent: Sendable, Equatable {
    case chunk(String)
    case info(GenerationInfo)
}

public struct GenerationInfo: Sendable, Equatable {
    public enum StopReason: String, Sendable { case stop, length, cancelled }

    public var promptTokenCount: Int
    public var generationTokenCount: Int
    /// Seconds spent on the prompt (prefill) and on generating tokens after it.
    public var promptTime: Double
    public var generationTime: Double
    public var stopReason: StopReason
    /// The generated token ids (a stop token is not included).
    public var tokens: [Int]
    /// Experts per token used for the last token (after the adaptive-compute policy).
    public var expertsPerToken: Int
    public var backend: String

    public var promptTokensPerSecond: Double { promptTime > 0 ? Double(promptTokenCount) / promptTime : 0 }
    public var tokensPerSecond: Double { generationTime > 0 ? Double(generationTokenCount) / generationTime : 0 }
}
