// The public entry point: load a MobileMoE folder (DESIGN.md §3) and generate text from it.
//
//     let model = try await MobileMoEModel.load(directory: url)
//     for try await event in model.generate(prompt: "Hi!", parameters: .init(maxTokens: 64)) {
//         if case .chunk(let text) = event { print(text, terminator: "") }
//     }
import Foundation

public enum BackendChoice: String, Sendable, CaseIterable {
    /// Metal where there is a GPU and the checkpoint is int4 (QAT), else the CPU reference.
    case automatic
    case cpu
    case metal
}

/// What to feed the model.
public enum Prompt: Sendable {
    /// Messages rendered with the checkpoint's chat template.
    case chat([ChatMessage])
    /// Raw text after the BOS token, no template.
    case text(String)
    /// Token ids as they are.
    case tokens([Int])
}

public final class MobileMoEModel: @unchecked Sendable {
    public let directory: URL
    public let configuration: ModelConfig
    public let tokenizer: Tokenizer
    public let backend: InferenceBackend
    /// Tokens that end generation (ChatConfiguration): config and generation_config eos ids,
    /// the tokenizer's eos token, <|eot|> / <|eot_id|>.
    public let stopTokenIds: Set<Int>
    public let bosTokenId: Int?
    public let chatTemplate: ChatTemplate?
    public let adaptiveCompute: AdaptiveComputePolicy
    public let deviceState: DeviceStateProvider

    /// Loads off the calling task (parsing the tokenizer and mapping weights takes a moment).
    public static func load(directory: URL, backend: BackendChoice = .automatic,
                            adaptiveCompute: AdaptiveComputePolicy = AdaptiveComputePolicy(),
                            deviceState: DeviceStateProvider = defaultDeviceStateProvider()) async throws -> MobileMoEModel {
        try await Task.detached(priority: .userInitiated) {
            try MobileMoEModel(directory: directory, backend: backend, adaptiveCompute: adaptiveCompute, deviceState: deviceState)
        }.value
    }

    public init(directory: URL, backend choice: BackendChoice = .automatic,
                adaptiveCompute: AdaptiveComputePolicy = AdaptiveComputePolicy(),
                deviceState: DeviceStateProvider = defaultDeviceStateProvider()) throws {
        self.directory = directory
        let config = try ModelConfig(contentsOf: directory.appendingPathComponent("config.json"))
        configuration = config
        let tokenizer = try Tokenizer(directory: directory)
        self.tokenizer = tokenizer
        let weights = try ModelWeights(config: config, store: TensorStore(directory: directory))
        backend = try MobileMoEModel.makeBackend(choice, weights: weights)
        self.adaptiveCompute = adaptiveCompute
        self.deviceState = deviceState

        let chat = try ChatConfiguration(directory: directory, config: config, tokenizer: tokenizer)
        chatTemplate = chat.template
        bosTokenId = chat.bosTokenId
        stopTokenIds = chat.stopTokenIds
    }

    static func makeBackend(_ choice: BackendChoice, weights: ModelWeights) throws -> InferenceBackend {
        switch choice {
        case .cpu:
            return CPUBackend(weights: weights)
        case .metal:
            #if canImport(Metal)
            return try GPUBackend.metal(weights: weights)
            #else
            throw InferenceError.backendUnavailable("Metal is not available on this platform")
            #endif
        case .automatic:
            #if canImport(Metal)
            if let metal = try? GPUBackend.metal(weights: weights) { return metal }
            #endif
            return CPUBackend(weights: weights)
        }
    }

    /// The token ids a prompt turns into.
    public func tokens(for prompt: Prompt) throws -> [Int] {
        switch prompt {
        case let .tokens(ids):
            return ids
        case let .text(text):
            // As Python's `tokenizer.encode(text)`: the tokenizer's own post-processor decides
            // whether a BOS is added (Llama 3's adds one; our trained tokenizers do not).
            return tokenizer.encode(text, addSpecialTokens: true)
        case let .chat(messages):
            guard let template = chatTemplate else {
                throw TokenizerError.chatTemplate("the checkpoint has no chat template; use Prompt.text for raw text")
            }
            return try tokenizer.chatPromptIds(messages, template: template)
        }
    }

    /// Streams the reply to one user message (chat template when the checkpoint has one,
    /// else the raw text). Cancel the consuming task to stop.
    public func generate(prompt: String, parameters: GenerateParameters = GenerateParameters()) -> AsyncThrowingStream<GenerationEvent, Error> {
        generate(chatTemplate == nil ? .text(prompt) : .chat([.user(prompt)]), parameters: parameters)
    }

    public func generate(messages: [ChatMessage], parameters: GenerateParameters = GenerateParameters()) -> AsyncThrowingStream<GenerationEvent, Error> {
        generate(.chat(messages), parameters: parameters)
    }

    public func generate(_ prompt: Prompt, parameters: GenerateParameters = GenerateParameters()) -> AsyncThrowingStream<GenerationEvent, Error> {
        AsyncThrowingStream { continuation in
            let task = Task.detached(priority: .userInitiated) { [self] in
                do {
                    let ids = try self.tokens(for: prompt)
                    let info = try await GenerationLoop(model: self, parameters: parameters).run(promptIds: ids) { text in
                        continuation.yield(.chunk(text))
                    }
                    continuation.yield(.info(info))
                    continuation.finish()
                } catch {
                    continuation.finish(throwing: error)
                }
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }
}
