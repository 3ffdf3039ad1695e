// The public entry point: load a MobileMoE folder (DESIGN.md §3) and generate text from it.
//
//     let model = try await MobileMoEModel.load(directory: url)
//     for try await event in model.generate(prompt: "Hi!", parameters: .init(maxTokens: 64)) {
//         if case .chunk(let text) = event { print(text, terminator: "") }
//     }
import Foundation

public enum BackendChoice: String, Sendable, CaseIterable {
    /// The GPU when this device and checkpoint can use it, else the CPU reference; the reason
    /// for a fallback is logged (MobileMoELog) and reported in every GenerationInfo.
    case automatic
    case cpu
    /// The GPU (Metal) or an error that says why not.
    case gpu

    @available(*, deprecated, renamed: "gpu")
    public static let metal = BackendChoice.gpu
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

/// Load-time settings besides the backend.
public struct LoadOptions: Sendable {
    /// Positions the memory check reserves KV cache for (nil: min(max_position_embeddings, 4096)).
    public var reservedContext: Int?
    /// KV cache type the memory check assumes.
    public var kvCache: KVCacheType
    public var memoryBudget: MemoryBudget
    public var lifecycle: LifecycleSource
    public var adaptiveCompute: AdaptiveComputePolicy
    public var deviceState: DeviceStateProvider

    public init(reservedContext: Int? = nil, kvCache: KVCacheType = .float32,
                memoryBudget: MemoryBudget = SystemMemoryBudget(), lifecycle: LifecycleSource = defaultLifecycleSource(),
                adaptiveCompute: AdaptiveComputePolicy = AdaptiveComputePolicy(),
                deviceState: DeviceStateProvider = defaultDeviceStateProvider()) {
        self.reservedContext = reservedContext
        self.kvCache = kvCache
        self.memoryBudget = memoryBudget
        self.lifecycle = lifecycle
        self.adaptiveCompute = adaptiveCompute
        self.deviceState = deviceState
    }
}

public final class MobileMoEModel: @unchecked Sendable {
    public let directory: URL
    public let configuration: ModelConfig
    public let tokenizer: Tokenizer
    public let backend: InferenceBackend
    /// Why `.automatic` runs on the CPU (nil: it got the GPU, or a backend was named).
    public let backendFallbackReason: String?
    /// Tokens that end generation (ChatConfiguration): config and generation_config eos ids,
    /// the tokenizer's eos token, <|eot|> / <|eot_id|>.
    public let stopTokenIds: Set<Int>
    public let bosTokenId: Int?
    public let chatTemplate: ChatTemplate?
    public let adaptiveCompute: AdaptiveComputePolicy
    public let deviceState: DeviceStateProvider
    /// The estimate checked at load (weights + KV cache for the reserved context + scratch).
    public let memoryEstimate: MemoryEstimate
    let memoryBudget: MemoryBudget
    /// Closed while the app is inactive: no forward pass starts, no GPU command buffer commits.
    public let gate = ComputeGate()
    private let memoryWarnings = MemoryWarningHandlers()
    private var lifecycleTask: Task<Void, Never>?

    /// Loads off the calling task (parsing the tokenizer and mapping weights takes a moment).
    public static func load(directory: URL, backend: BackendChoice = .automatic,
                            options: LoadOptions = LoadOptions()) async throws -> MobileMoEModel {
        try await Task.detached(priority: .userInitiated) {
            try MobileMoEModel(directory: directory, backend: backend, options: options)
        }.value
    }

    public static func load(directory: URL, backend: BackendChoice = .automatic,
                            adaptiveCompute: AdaptiveComputePolicy = AdaptiveComputePolicy(),
                            deviceState: DeviceStateProvider = defaultDeviceStateProvider()) async throws -> MobileMoEModel {
        try await load(directory: directory, backend: backend,
                       options: LoadOptions(adaptiveCompute: adaptiveCompute, deviceState: deviceState))
    }

    public convenience init(directory: URL, backend choice: BackendChoice = .automatic,
                            adaptiveCompute: AdaptiveComputePolicy = AdaptiveComputePolicy(),
                            deviceState: DeviceStateProvider = defaultDeviceStateProvider()) throws {
        try self.init(directory: directory, backend: choice,
                      options: LoadOptions(adaptiveCompute: adaptiveCompute, deviceState: deviceState))
    }

    public init(directory: URL, backend choice: BackendChoice = .automatic, options: LoadOptions) throws {
        self.directory = directory
        let config = try ModelConfig(contentsOf: directory.appendingPathComponent("config.json"))
        configuration = config
        let tokenizer = try Tokenizer(directory: directory)
        self.tokenizer = tokenizer
        let weights = try ModelWeights(config: config, store: TensorStore(directory: directory))
        let reserve = SessionOptions(capacity: options.reservedContext ?? min(config.maxPositionEmbeddings, 4096),
                                     kvCache: options.kvCache)
        let (backend, fallback) = try MobileMoEModel.makeBackend(choice, weights: weights, reserve: reserve)
        self.backend = backend
        backendFallbackReason = fallback
        if let why = fallback { MobileMoELog.shared.log("backend .automatic runs on the CPU: \(why)") }
        memoryEstimate = MemoryEstimate.estimate(weights: weights, backend: backend, options: reserve)
        try memoryEstimate.check(against: options.memoryBudget, what: "loading \(directory.lastPathComponent) on \(backend.name)")
        memoryBudget = options.memoryBudget
        adaptiveCompute = options.adaptiveCompute
        deviceState = options.deviceState

        let chat = try ChatConfiguration(directory: directory, config: config, tokenizer: tokenizer)
        chatTemplate = chat.template
        bosTokenId = chat.bosTokenId
        stopTokenIds = chat.stopTokenIds

        let events = options.lifecycle.events()
        lifecycleTask = Task { [weak self] in
            for await event in events {
                guard let self else { return }
                self.handle(event)
            }
        }
    }

    deinit { lifecycleTask?.cancel() }

    /// The backend for `choice`, and why `.automatic` fell back to the CPU.
    static func makeBackend(_ choice: BackendChoice, weights: ModelWeights,
                            reserve: SessionOptions) throws -> (InferenceBackend, String?) {
        switch choice {
        case .cpu:
            return (CPUBackend(weights: weights), nil)
        case .gpu:
            return (try gpuBackend(weights: weights, reserve: reserve), nil)
        case .automatic:
            do {
                return (try gpuBackend(weights: weights, reserve: reserve), nil)
            } catch let InferenceError.backendUnavailable(why) {
                return (CPUBackend(weights: weights), why)
            } catch let InferenceError.insufficientMemory(why) {
                return (CPUBackend(weights: weights), why)
            }
        }
    }

    /// The Metal backend, or backendUnavailable with the reason.
    static func gpuBackend(weights: ModelWeights, reserve: SessionOptions) throws -> InferenceBackend {
        #if canImport(Metal)
        let gpu = try GPUBackend.metal(weights: weights)
        if let budget = gpu.platform.memoryBudget {
            var options = reserve
            options.kvCache = .float32  // the GPU keeps float32 KV
            try MemoryEstimate.estimate(weights: weights, backend: gpu, options: options).check(against: budget, what: "the GPU backend")
        }
        return gpu
        #else
        throw InferenceError.backendUnavailable("Metal is not available on this platform")
        #endif
    }

    // MARK: - Lifecycle and memory

    /// Applies a lifecycle event (what the lifecycle source delivers; callable directly).
    public func handle(_ event: LifecycleEvent) {
        switch event {
        case .willResignActive, .didEnterBackground: gate.close()
        case .didBecomeActive: gate.open()
        case .memoryWarning: handleMemoryWarning()
        }
    }

    /// Stops new compute until `resume()`; a running generation waits with its cache kept.
    public func pause() { gate.close() }
    public func resume() { gate.open() }

    /// Frees what can be rebuilt: launch templates and the KV caches of idle chat sessions
    /// (their next turn prefills the conversation again).
    public func handleMemoryWarning() {
        MobileMoELog.shared.log("memory warning: freeing caches")
        (backend as? GPUBackend)?.templates.removeAll()
        memoryWarnings.run()
    }

    /// Registers `handler` for memory warnings until the returned token is released.
    public func onMemoryWarning(_ handler: @escaping @Sendable () -> Void) -> MemoryWarningRegistration {
        memoryWarnings.add(handler)
    }

    /// Throws insufficientMemory when a session with `options` does not fit the budget.
    func checkSessionMemory(_ options: SessionOptions) throws {
        let c = configuration
        let estimate = MemoryEstimate(weightsBytes: 0,
                                      kvCacheBytes: options.cacheRows(config: c) * MemoryEstimate.kvBytesPerToken(c, options.kvCache),
                                      scratchBytes: backend.scratchBytes(options), contextTokens: options.cacheRows(config: c))
        try estimate.check(against: memoryBudget, what: "a session of \(options.cacheRows(config: c)) tokens")
    }

    func makeSession(_ options: SessionOptions) throws -> InferenceSession {
        try checkSessionMemory(options)
        return try backend.makeSession(options)
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
                    let session = try self.makeSession(GenerationLoop.sessionOptions(parameters, positions: ids.count))
                    let info = try await GenerationLoop(model: self, parameters: parameters).run(session: session, newTokens: ids) { text in
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

/// Keeps a memory-warning handler registered; releasing it unregisters.
public final class MemoryWarningRegistration: @unchecked Sendable {
    private let remove: () -> Void
    init(remove: @escaping () -> Void) { self.remove = remove }
    deinit { remove() }
}

final class MemoryWarningHandlers: @unchecked Sendable {
    private let lock = NSLock()
    private var handlers: [UUID: @Sendable () -> Void] = [:]

    func add(_ h: @escaping @Sendable () -> Void) -> MemoryWarningRegistration {
        let id = UUID()
        lock.lock()
        handlers[id] = h
        lock.unlock()
        return MemoryWarningRegistration { [weak self] in
            guard let self else { return }
            self.lock.lock()
            self.handlers[id] = nil
            self.lock.unlock()
        }
    }

    func run() {
        lock.lock()
        let all = Array(handlers.values)
        lock.unlock()
        all.forEach { $0() }
    }
}
