// The GPU backend on Apple platforms: compiles the kernel sources at run time
// (makeLibrary(source:options:), fast math off), wraps the mmap'd checkpoint in page-aligned
// bytesNoCopy buffers (MetalWeightBuffers.swift), and runs each forward step as one command
// buffer, checking Task.isCancelled before the submit (a submit from a backgrounded app faults).
// Not run on the machines this package is developed on (Linux, no Apple GPU); the same launch
// sequence and kernel bodies run under the CPU kernel emulator in the tests.
#if canImport(Metal)
import Foundation
import Metal

final class MetalPlatform: KernelPlatform, @unchecked Sendable {
    let name = "metal"
    let device: MTLDevice
    let queue: MTLCommandQueue
    let pipelines: [String: MTLComputePipelineState]
    /// Threads per threadgroup of every kernel (MM_NT).
    let threadsPerGroup: Int
    let weights: MetalWeightBuffers
    let constants: [String: MTLBuffer]

    init(weights w: ModelWeights, device: MTLDevice? = MTLCreateSystemDefaultDevice()) throws {
        guard let device else { throw InferenceError.backendUnavailable("no Metal device") }
        // simd_sum / simd_shuffle_xor / simd_prefix_exclusive_sum: Apple7 (A14, M1) and later, Mac2.
        guard device.supportsFamily(.apple7) || device.supportsFamily(.mac2) else {
            throw InferenceError.backendUnavailable("\(device.name) lacks SIMD-group reductions (needs Apple7 / A14 or later)")
        }
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
        var pipelines: [String: MTLComputePipelineState] = [:]
        for name in KernelSources.kernelNames {
            guard let function = library.makeFunction(name: name) else {
                throw InferenceError.backendUnavailable("Metal library has no kernel \(name)")
            }
            let state = try device.makeComputePipelineState(function: function)
            guard state.maxTotalThreadsPerThreadgroup >= threadsPerGroup else {
                throw InferenceError.backendUnavailable("\(name) allows \(state.maxTotalThreadsPerThreadgroup) threads per threadgroup, needs \(threadsPerGroup)")
            }
            pipelines[name] = state
        }
        self.pipelines = pipelines
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

    func makeExecutor(scratchBytes: [Scratch: Int], cacheBytesPerLayer: Int, layers: Int) throws -> KernelExecutor {
        try MetalExecutor(platform: self, scratchBytes: scratchBytes, cacheBytesPerLayer: cacheBytesPerLayer, layers: layers)
    }
}

final class MetalExecutor: KernelExecutor {
    /// dims (16 int32) at +0 and fp (8 float32) at +64 of each launch's slot.
    static let paramSlot = 128

    let platform: MetalPlatform
    let scratch: [Scratch: MTLBuffer]
    let keys: [MTLBuffer], values: [MTLBuffer]
    private var params: MTLBuffer

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
        params = try buffer(64 * MetalExecutor.paramSlot, "kernel parameters")
    }

    func write(tokens: [Int32]) {
        tokens.withUnsafeBytes { scratch[.tokens]!.contents().copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
    }

    func read(_ buffer: Scratch, count: Int) -> [Float] {
        Array(UnsafeBufferPointer(start: scratch[buffer]!.contents().assumingMemoryBound(to: Float.self), count: count))
    }

    /// The buffer and offset of a binding; .dims/.fp are the launch's parameter slot.
    private func resolve(_ b: Binding, slot: Int) -> (MTLBuffer, Int) {
        switch b.ref {
        case .dims: return (params, slot)
        case .fp: return (params, slot + 64)
        case let .tensor(name):
            let (buffer, offset) = platform.weights.location(of: name)
            return (buffer, offset + b.offset)
        case let .constant(name): return (platform.constants[name]!, b.offset)
        case let .scratch(s): return (scratch[s]!, b.offset)
        case let .keys(l): return (keys[l], b.offset)
        case let .values(l): return (values[l], b.offset)
        }
    }

    func run(_ launches: [KernelLaunch]) throws {
        if Task.isCancelled { throw CancellationError() }
        let needed = launches.count * MetalExecutor.paramSlot
        if params.length < needed {
            guard let bigger = platform.device.makeBuffer(length: needed, options: .storageModeShared) else {
                throw InferenceError.backendUnavailable("cannot allocate kernel parameters")
            }
            params = bigger
        }
        guard let commands = platform.queue.makeCommandBuffer(), let encoder = commands.makeComputeCommandEncoder() else {
            throw InferenceError.backendUnavailable("cannot make a Metal command buffer")
        }
        let slots = params.contents()
        let threads = MTLSize(width: platform.threadsPerGroup, height: 1, depth: 1)
        for (i, launch) in launches.enumerated() {
            let slot = i * MetalExecutor.paramSlot
            launch.dims.withUnsafeBytes { (slots + slot).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
            launch.fp.withUnsafeBytes { (slots + slot + 64).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
            encoder.setComputePipelineState(platform.pipelines[launch.kernel]!)
            for (index, binding) in launch.bindings.enumerated() {
                let (buffer, offset) = resolve(binding, slot: slot)
                encoder.setBuffer(buffer, offset: offset, index: index)
            }
            encoder.dispatchThreadgroups(MTLSize(width: launch.groups, height: 1, depth: 1), threadsPerThreadgroup: threads)
        }
        encoder.endEncoding()
        // The last moment to stop: nothing reaches the GPU after the task was cancelled.
        if Task.isCancelled { throw CancellationError() }
        commands.commit()
        commands.waitUntilCompleted()
        if let error = commands.error {
            throw InferenceError.backendUnavailable("Metal command buffer failed: \(error.localizedDescription)")
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
