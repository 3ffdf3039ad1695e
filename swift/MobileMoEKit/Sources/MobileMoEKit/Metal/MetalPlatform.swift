// The GPU backend on Apple platforms: compiles the kernel sources at run time
// (makeLibrary(source:options:), fast math off), wraps the mmap'd checkpoint in page-aligned
// bytesNoCopy buffers (MetalWeightBuffers.swift), and runs each forward step as one command
// buffer. Per step shape the launches are resolved once (pipelines, buffers, offsets; no
// string lookups per token); encoding skips binds already in place, moves offsets with
// setBufferOffset and passes the small dims/fp arguments with setBytes. Before the commit it
// checks Task.isCancelled and waits at the lifecycle gate (a submit from a backgrounded app
// faults); completion is awaited through addCompletedHandler, not waitUntilCompleted.
// Not run on the machines this package is developed on (Linux, no Apple GPU); the same launch
// sequence and kernel bodies run under the CPU kernel emulator in the tests.
#if canImport(Metal)
import Foundation
import Metal

extension GPUDeviceTraits {
    init(_ device: MTLDevice) {
        self.init(name: device.name, apple7: device.supportsFamily(.apple7), mac2: device.supportsFamily(.mac2))
    }
}

final class MetalPlatform: KernelPlatform, @unchecked Sendable {
    let name = "metal"
    let device: MTLDevice
    let queue: MTLCommandQueue
    /// Pipelines in KernelSources.kernelNames order.
    let pipelines: [MTLComputePipelineState]
    let kernelIndex: [String: Int]
    /// Threads per threadgroup of every kernel (MM_NT).
    let threadsPerGroup: Int
    let weights: MetalWeightBuffers
    let constants: [String: MTLBuffer]

    init(weights w: ModelWeights, device: MTLDevice? = MTLCreateSystemDefaultDevice()) throws {
        guard let device else { throw InferenceError.backendUnavailable("no Metal device") }
        if let why = GPUDeviceTraits(device).refusal { throw InferenceError.backendUnavailable(why) }
        guard let queue = device.makeCommandQueue() else { throw InferenceError.backendUnavailable("cannot make a Metal command queue") }
        self.device = device
        self.queue = queue

        threadsPerGroup = try KernelGeometry.shipped().threads
        let options = MTLCompileOptions()
        options.fastMathEnabled = false  // faithful exp/rsqrt/cos, as the CPU reference
        let library: MTLLibrary
        do {
            library = try device.makeLibrary(source: KernelSources.metalLibrarySource(), options: options)
        } catch {
            throw InferenceError.backendUnavailable("Metal kernels failed to compile: \(error)")
        }
        var pipelines: [MTLComputePipelineState] = []
        for name in KernelSources.kernelNames {
            guard let function = library.makeFunction(name: name) else {
                throw InferenceError.backendUnavailable("Metal library has no kernel \(name)")
            }
            let state = try device.makeComputePipelineState(function: function)
            guard state.maxTotalThreadsPerThreadgroup >= threadsPerGroup else {
                throw InferenceError.backendUnavailable("\(name) allows \(state.maxTotalThreadsPerThreadgroup) threads per threadgroup, needs \(threadsPerGroup)")
            }
            guard state.threadExecutionWidth == 32 else {
                throw InferenceError.backendUnavailable("\(device.name) runs \(name) with SIMD width \(state.threadExecutionWidth); the kernels need 32")
            }
            pipelines.append(state)
        }
        self.pipelines = pipelines
        kernelIndex = Dictionary(uniqueKeysWithValues: KernelSources.kernelNames.enumerated().map { ($1, $0) })
        weights = try MetalWeightBuffers(tensors: w.gpuTensors, device: device)
        var constants: [String: MTLBuffer] = [:]
        for (key, values) in GPUForwardPlan.constants(w) {
            guard let buffer = values.withUnsafeBytes({ device.makeBuffer(bytes: $0.baseAddress!, length: $0.count, options: .storageModeShared) }) else {
                throw InferenceError.backendUnavailable("cannot allocate \(key)")
            }
            constants[key] = buffer
        }
        self.constants = constants
    }

    var memoryBudget: MemoryBudget? { MetalWorkingSetBudget(device: device) }

    func makeExecutor(scratchBytes: [Scratch: Int], cacheBytesPerLayer: Int, layers: Int) throws -> KernelExecutor {
        try MetalExecutor(platform: self, scratchBytes: scratchBytes, cacheBytesPerLayer: cacheBytesPerLayer, layers: layers)
    }
}

/// The GPU's recommendedMaxWorkingSetSize minus what it has allocated already.
struct MetalWorkingSetBudget: MemoryBudget, @unchecked Sendable {
    let device: MTLDevice
    func availableBytes() -> UInt64? {
        let used = UInt64(max(device.currentAllocatedSize, 0))
        let limit = device.recommendedMaxWorkingSetSize
        return limit > used ? limit - used : 0
    }
    var source: String { "\(device.name) recommendedMaxWorkingSetSize" }
}

final class MetalExecutor: KernelExecutor {
    /// One launch with everything resolved: pipeline index, buffer bindings (nil = dims/fp, set
    /// with setBytes), the patches that follow the position.
    struct Resolved {
        enum Arg { case buffer(MTLBuffer, Int), dims, fp }
        let pipeline: Int
        let args: [Arg]
        let dims: [Int32]
        let fp: [Float]
        let groups: Int
        let dimPatches: [(index: Int, step: Int32)]
        let offsetSteps: [Int]  // per argument, bytes per position (0: fixed)
    }

    let platform: MetalPlatform
    let scratch: [Scratch: MTLBuffer]
    let keys: [MTLBuffer], values: [MTLBuffer]
    private var resolved: [ObjectIdentifier: (LaunchTemplate, [Resolved])] = [:]

    init(platform: MetalPlatform, scratchBytes: [Scratch: Int], cacheBytesPerLayer: Int, layers: Int) throws {
        self.platform = platform
        let device = platform.device
        func buffer(_ bytes: Int, _ what: String) throws -> MTLBuffer {
            guard let b = device.makeBuffer(length: max(bytes, 16), options: .storageModeShared) else {
                throw InferenceError.backendUnavailable("cannot allocate \(bytes) bytes for \(what)")
            }
            return b
        }
        var s: [Scratch: MTLBuffer] = [:]
        for (k, bytes) in scratchBytes { s[k] = try buffer(bytes, "\(k)") }
        scratch = s
        keys = try (0..<layers).map { try buffer(cacheBytesPerLayer, "keys of layer \($0)") }
        values = try (0..<layers).map { try buffer(cacheBytesPerLayer, "values of layer \($0)") }
    }

    func write(tokens: [Int32]) {
        tokens.withUnsafeBytes { scratch[.tokens]!.contents().copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
    }

    func read(_ buffer: Scratch, count: Int) -> [Float] {
        Array(UnsafeBufferPointer(start: scratch[buffer]!.contents().assumingMemoryBound(to: Float.self), count: count))
    }

    /// The template's launches bound to this executor's buffers (once per template).
    private func resolve(_ t: LaunchTemplate) -> [Resolved] {
        if let (_, r) = resolved[ObjectIdentifier(t)] { return r }
        let r = t.base.indices.map { i -> Resolved in
            let l = t.base[i]
            var steps = [Int](repeating: 0, count: l.bindings.count)
            for o in t.offsetPatches[i] { steps[o.index] = o.step }
            let args = l.bindings.map { b -> Resolved.Arg in
                switch b.ref {
                case .dims: return .dims
                case .fp: return .fp
                case let .tensor(name):
                    let (buffer, offset) = platform.weights.location(of: name)
                    return .buffer(buffer, offset + b.offset)
                case let .constant(name): return .buffer(platform.constants[name]!, b.offset)
                case let .scratch(s): return .buffer(scratch[s]!, b.offset)
                case let .keys(layer): return .buffer(keys[layer], b.offset)
                case let .values(layer): return .buffer(values[layer], b.offset)
                }
            }
            return Resolved(pipeline: platform.kernelIndex[l.kernel]!, args: args, dims: l.dims, fp: l.fp,
                            groups: l.groups, dimPatches: t.dimPatches[i], offsetSteps: steps)
        }
        resolved[ObjectIdentifier(t)] = (t, r)  // the template is kept alive with its resolution
        return r
    }

    func run(_ step: LaunchTemplate, position: Int, gate: ComputeGate?) async throws {
        if Task.isCancelled { throw CancellationError() }
        let launches = resolve(step)
        guard let commands = platform.queue.makeCommandBuffer(), let encoder = commands.makeComputeCommandEncoder() else {
            throw InferenceError.backendUnavailable("cannot make a Metal command buffer")
        }
        let threads = MTLSize(width: platform.threadsPerGroup, height: 1, depth: 1)
        var state = EncoderBindings<ObjectIdentifier>()
        for l in launches {
            if state.use(pipeline: l.pipeline) { encoder.setComputePipelineState(platform.pipelines[l.pipeline]) }
            var dims = l.dims
            for d in l.dimPatches { dims[d.index] += Int32(position) * d.step }
            for (index, arg) in l.args.enumerated() {
                switch arg {
                case .dims:
                    dims.withUnsafeBytes { encoder.setBytes($0.baseAddress!, length: $0.count, index: index) }
                    state.bytes(index: index)
                case .fp:
                    l.fp.withUnsafeBytes { encoder.setBytes($0.baseAddress!, length: $0.count, index: index) }
                    state.bytes(index: index)
                case let .buffer(buffer, base):
                    let offset = base + position * l.offsetSteps[index]
                    switch state.bind(ObjectIdentifier(buffer), offset: offset, index: index) {
                    case .skip: break
                    case .setOffset: encoder.setBufferOffset(offset, index: index)
                    case .setBuffer: encoder.setBuffer(buffer, offset: offset, index: index)
                    }
                }
            }
            encoder.dispatchThreadgroups(MTLSize(width: l.groups, height: 1, depth: 1), threadsPerThreadgroup: threads)
        }
        encoder.endEncoding()
        // The last moment to stop: nothing reaches the GPU while the app is inactive or after
        // the task was cancelled. A paused step waits here, encoded, and commits on resume.
        try await gate?.waitUntilOpen()
        if Task.isCancelled { throw CancellationError() }
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, Error>) in
            commands.addCompletedHandler { buffer in
                if let error = buffer.error {
                    c.resume(throwing: InferenceError.backendUnavailable("Metal command buffer failed: \(error.localizedDescription)"))
                } else {
                    c.resume()
                }
            }
            commands.commit()
        }
    }
}

extension GPUBackend {
    /// The GPU backend on this device's Metal GPU.
    static func metal(weights: ModelWeights) throws -> GPUBackend {
        if let why = GPUForwardPlan.unsupportedReason(weights.config, try KernelGeometry.shipped()) {
            throw InferenceError.backendUnavailable(why)  // before compiling any kernel
        }
        return try GPUBackend(weights: weights, platform: MetalPlatform(weights: weights))
    }
}
#endif
