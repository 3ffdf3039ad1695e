// The GPU backend, independent of the GPU API: it plans launches (GPUForwardPlan) and hands
// them to a `KernelPlatform` executor — Metal on Apple platforms (Metal/MetalPlatform.swift),
// the CPU kernel emulator in the tests. One forward step = one submission.

/// Loaded once per model: compiled kernels, weight buffers.
protocol KernelPlatform: AnyObject, Sendable {
    var name: String { get }
    /// Per-session memory: scratch buffers and a KV cache of `capacity` rows per layer.
    func makeExecutor(scratchBytes: [Scratch: Int], cacheBytesPerLayer: Int, layers: Int) throws -> KernelExecutor
    /// The device's own limit (Metal: recommendedMaxWorkingSetSize), nil when none.
    var memoryBudget: MemoryBudget? { get }
}

extension KernelPlatform {
    var memoryBudget: MemoryBudget? { nil }
}

protocol KernelExecutor: AnyObject {
    func write(tokens: [Int32])
    /// Runs the step's launches (the template instantiated at `position`) and returns when they
    /// completed, without blocking a thread. Implementations check `Task.isCancelled` and wait
    /// at `gate` right before submitting, and throw CancellationError when cancelled.
    func run(_ step: LaunchTemplate, position: Int, gate: ComputeGate?) async throws
    func read(_ buffer: Scratch, count: Int) -> [Float]
}

/// What a GPU must offer the kernels, as a platform-free value (Metal fills it from MTLDevice).
struct GPUDeviceTraits: Equatable {
    var name: String
    /// MTLGPUFamily.apple7 (A14 / M1 and later): 32-wide SIMD groups, SIMD-group reductions and
    /// simdgroup matrices, which the kernels assume.
    var apple7: Bool
    /// MTLGPUFamily.mac2 (any Mac GPU, Intel/AMD included).
    var mac2: Bool

    /// Why the kernels cannot run on this GPU (nil: they can).
    var refusal: String? {
        if apple7 { return nil }
        if mac2 {
            return "\(name) is a Mac2-family GPU without Apple7 features (Intel/AMD): the kernels assume 32-wide SIMD groups and simdgroup matrices (Apple7+: A14, M1 and later)"
        }
        return "\(name) is older than Apple7: the kernels need SIMD-group reductions and 32-wide SIMD groups (A14, M1 and later)"
    }
}

final class GPUBackend: InferenceBackend, @unchecked Sendable {
    let name: String
    let weights: ModelWeights
    var config: ModelConfig { weights.config }
    let plan: GPUForwardPlan
    let platform: KernelPlatform
    /// Tokens per submission (longer inputs are split).
    let maxStep: Int
    /// Launch templates, built once per (tokens, experts per token).
    let templates: LaunchTemplateCache

    init(weights: ModelWeights, platform: KernelPlatform, maxStep: Int = 128) throws {
        let geometry = try KernelGeometry.shipped()
        if let why = GPUForwardPlan.unsupportedReason(weights.config, geometry) { throw InferenceError.backendUnavailable(why) }
        self.weights = weights
        self.platform = platform
        self.name = platform.name
        self.maxStep = maxStep
        plan = GPUForwardPlan(weights: weights, geometry: geometry)
        templates = LaunchTemplateCache(plan: plan)
    }

    func makeSession(_ options: SessionOptions) throws -> InferenceSession {
        if options.kvCache != .float32 {
            throw InferenceError.badParameter("the GPU kernels keep the KV cache in float32; kvCache .\(options.kvCache) runs on the CPU backend")
        }
        if options.maxKVSize != nil {
            throw InferenceError.badParameter("maxKVSize (a rotating KV window) runs on the CPU backend; the GPU attention kernel reads the whole cache")
        }
        let cap = min(options.capacity, config.maxPositionEmbeddings)
        let maxK = min(config.numLocalExperts, plan.geometry.maxK)
        let step = min(maxStep, max(cap, 1), max(options.maxStep, 1))
        let executor = try platform.makeExecutor(scratchBytes: plan.scratchBytes(maxStep: step, maxK: maxK),
                                                 cacheBytesPerLayer: 4 * cap * plan.kvRowFloats, layers: config.numHiddenLayers)
        return GPUSession(backend: self, executor: executor, capacity: cap, maxStep: step, maxK: maxK)
    }

    func scratchBytes(_ options: SessionOptions) -> Int {
        let step = min(maxStep, max(options.maxStep, 1))
        return plan.scratchBytes(maxStep: step, maxK: min(config.numLocalExperts, plan.geometry.maxK)).values.reduce(0, +)
    }
}

final class GPUSession: InferenceSession, @unchecked Sendable {
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

    var cacheBytes: Int { 2 * 4 * capacity * backend.plan.kvRowFloats * backend.config.numHiddenLayers }

    func forward(_ tokens: [Int], expertsPerToken k: Int, gate: ComputeGate?) async throws -> [Float] {
        try check(tokens, config: backend.config, capacity: capacity, expertsPerToken: k)
        guard k <= maxK else { throw InferenceError.badExpertsPerToken(k, experts: maxK) }
        var start = 0
        while start < tokens.count {
            let chunk = tokens[start..<min(tokens.count, start + maxStep)]
            executor.write(tokens: chunk.map { Int32($0) })
            try await executor.run(backend.templates.template(tokens: chunk.count, expertsPerToken: k), position: position, gate: gate)
            position += chunk.count
            start += chunk.count
        }
        return executor.read(.logits, count: backend.config.vocabSize)
    }

    /// Rows past `n` are simply overwritten later.
    func truncate(to n: Int) -> Bool {
        guard n >= 0, n <= position else { return false }
        position = n
        return true
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
