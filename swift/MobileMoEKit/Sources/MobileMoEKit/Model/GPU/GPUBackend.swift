// The GPU backend, independent of the GPU API: it plans launches (GPUForwardPlan) and hands
// them to a `KernelPlatform` executor — Metal on Apple platforms (Metal/MetalPlatform.swift),
// the CPU kernel emulator in the tests. One forward step = one submission.

/// Loaded once per model: compiled kernels, weight buffers.
protocol KernelPlatform: AnyObject, Sendable {
    var name: String { get }
    /// Per-session memory: scratch buffers and a KV cache of `capacity` rows per layer.
    func makeExecutor(scratchBytes: [Scratch: Int], cacheBytesPerLayer: Int, layers: Int) throws -> KernelExecutor
}

protocol KernelExecutor: AnyObject {
    func write(tokens: [Int32])
    /// Runs the launches in order and waits for them. Implementations check
    /// `Task.isCancelled` before submitting and throw CancellationError.
    func run(_ launches: [KernelLaunch]) throws
    func read(_ buffer: Scratch, count: Int) -> [Float]
}

final class GPUBackend: InferenceBackend, @unchecked Sendable {
    let name: String
    let weights: ModelWeights
    var config: ModelConfig { weights.config }
    let plan: GPUForwardPlan
    let platform: KernelPlatform
    /// Tokens per submission (longer inputs are split).
    let maxStep: Int

    init(weights: ModelWeights, platform: KernelPlatform, maxStep: Int = 128) throws {
        let geometry = try KernelGeometry.shipped()
        if let why = GPUForwardPlan.unsupportedReason(weights.config, geometry) { throw InferenceError.backendUnavailable(why) }
        self.weights = weights
        self.platform = platform
        self.name = platform.name
        self.maxStep = maxStep
        plan = GPUForwardPlan(weights: weights, geometry: geometry)
    }

    func makeSession(capacity: Int) throws -> InferenceSession {
        let cap = min(capacity, config.maxPositionEmbeddings)
        let maxK = min(config.numLocalExperts, plan.geometry.maxK)
        let step = min(maxStep, max(cap, 1))
        let executor = try platform.makeExecutor(scratchBytes: plan.scratchBytes(maxStep: step, maxK: maxK),
                                                 cacheBytesPerLayer: 4 * cap * plan.kvRowFloats, layers: config.numHiddenLayers)
        return GPUSession(backend: self, executor: executor, capacity: cap, maxStep: step, maxK: maxK)
    }
}

final class GPUSession: InferenceSession {
    let backend: GPUBackend
    let executor: KernelExecutor
    let capacity: Int
    let maxStep: Int
    let maxK: Int
    private(set) var position = 0

    init(backend: GPUBackend, executor: KernelExecutor, capacity: Int, maxStep: Int, maxK: Int) {
        self.backend = backend
        self.executor = executor
        self.capacity = capacity
        self.maxStep = maxStep
        self.maxK = maxK
    }

    func forward(_ tokens: [Int], expertsPerToken k: Int) throws -> [Float] {
        try check(tokens, config: backend.config, capacity: capacity, expertsPerToken: k)
        guard k <= maxK else { throw InferenceError.badExpertsPerToken(k, experts: maxK) }
        var start = 0
        while start < tokens.count {
            let chunk = tokens[start..<min(tokens.count, start + maxStep)]
            executor.write(tokens: chunk.map { Int32($0) })
            try executor.run(backend.plan.launches(tokens: chunk.count, position: position, expertsPerToken: k))
            position += chunk.count
            start += chunk.count
        }
        return executor.read(.logits, count: backend.config.vocabSize)
    }
}

extension ModelWeights {
    /// Every checkpoint tensor a GPU launch binds (.tensor refs), by name.
    var gpuTensors: [String: TensorView] {
        var mats = [embedding]
        for l in layers {
            mats += [l.q, l.k, l.v, l.o, l.gateUp, l.down]
            mats += [l.sharedGate, l.sharedUp, l.sharedDown].compactMap { $0 }
        }
        var out: [String: TensorView] = [:]
        for m in mats { for t in m.tensors { out[t.name] = t } }
        return out
    }
}
