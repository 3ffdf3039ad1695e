// The GPU forward pass (GPUForwardPlan + the kernel bodies Metal compiles) run on the CPU
// kernel emulator (kernels/mm_cpu.h) against the Python fixtures: the same launches, buffers and
// bodies as on an Apple GPU; only the Metal API calls themselves are not exercised here.
// Tolerance as ModelFixtureTests (2e-5 relative); greedy tokens identical.
import Foundation
import KernelEmulator
import XCTest
@testable import MobileMoEKit

final class EmulatorPlatform: KernelPlatform, @unchecked Sendable {
    let name = "emulator"
    let tensors: [String: TensorView]
    let constants: [String: UnsafeMutableBufferPointer<Float>]

    init(weights: ModelWeights) {
        tensors = weights.gpuTensors
        constants = GPUForwardPlan.constants(weights).mapValues { values in
            let p = UnsafeMutableBufferPointer<Float>.allocate(capacity: values.count)
            _ = p.initialize(from: values)
            return p
        }
    }

    deinit { constants.values.forEach { $0.deallocate() } }

    func makeExecutor(scratchBytes: [Scratch: Int], cacheBytesPerLayer: Int, layers: Int) throws -> KernelExecutor {
        EmulatorExecutor(platform: self, scratchBytes: scratchBytes, cacheBytes: cacheBytesPerLayer, layers: layers)
    }
}

final class EmulatorExecutor: KernelExecutor {
    let platform: EmulatorPlatform
    var scratch: [Scratch: UnsafeMutableRawPointer] = [:]
    var keys: [UnsafeMutableRawPointer] = [], values: [UnsafeMutableRawPointer] = []
    var launchCount = 0

    init(platform: EmulatorPlatform, scratchBytes: [Scratch: Int], cacheBytes: Int, layers: Int) {
        self.platform = platform
        func zeroed(_ n: Int) -> UnsafeMutableRawPointer {
            let p = UnsafeMutableRawPointer.allocate(byteCount: n, alignment: 16)
            p.initializeMemory(as: UInt8.self, repeating: 0, count: n)
            return p
        }
        for (s, n) in scratchBytes { scratch[s] = zeroed(n) }
        for _ in 0..<layers { keys.append(zeroed(cacheBytes)); values.append(zeroed(cacheBytes)) }
    }

    deinit { (Array(scratch.values) + keys + values).forEach { $0.deallocate() } }

    /// Memory of a binding; .dims/.fp point into `params` (the launch's own arrays).
    func resolve(_ b: Binding, params: (dims: UnsafeRawPointer, fp: UnsafeRawPointer)) -> UnsafeMutableRawPointer {
        let base: UnsafeMutableRawPointer
        switch b.ref {
        case let .tensor(name): base = UnsafeMutableRawPointer(mutating: platform.tensors[name]!.data)
        case let .constant(name): base = UnsafeMutableRawPointer(platform.constants[name]!.baseAddress!)
        case let .scratch(s): base = scratch[s]!
        case let .keys(l): base = keys[l]
        case let .values(l): base = values[l]
        case .dims: base = UnsafeMutableRawPointer(mutating: params.dims)
        case .fp: base = UnsafeMutableRawPointer(mutating: params.fp)
        }
        return base + b.offset
    }

    func write(tokens: [Int32]) {
        scratch[.tokens]!.copyMemory(from: tokens, byteCount: 4 * tokens.count)
    }

    func run(_ step: LaunchTemplate, position: Int, gate: ComputeGate?) async throws {
        if Task.isCancelled { throw CancellationError() }
        try await gate?.waitUntilOpen()
        for l in step.instantiate(position: position) {
            let rc = l.dims.withUnsafeBytes { dims in
                l.fp.withUnsafeBytes { fp in
                    let ptrs: [UnsafeMutableRawPointer?] = l.bindings.map { resolve($0, params: (dims.baseAddress!, fp.baseAddress!)) }
                    return mme_launch(l.kernel, ptrs, Int32(ptrs.count), Int32(l.groups))
                }
            }
            guard rc == 0 else { throw InferenceError.backendUnavailable("emulator has no kernel \(l.kernel)") }
            launchCount += 1
        }
    }

    func read(_ buffer: Scratch, count: Int) -> [Float] {
        Array(UnsafeBufferPointer(start: scratch[buffer]!.assumingMemoryBound(to: Float.self), count: count))
    }
}

final class EmulatedGPUTests: XCTestCase {
    static let weights: ModelWeights = {
        let dir = Fixtures.url("tiny-qat")
        let config = try! ModelConfig(contentsOf: dir.appendingPathComponent("config.json"))
        return try! ModelWeights(config: config, store: TensorStore(directory: dir))
    }()

    func cases() throws -> [[String: Any]] {
        (try Fixtures.json("tiny-qat-expected.json") as! [String: Any])["cases"] as! [[String: Any]]
    }

    func assertClose(_ got: [Float], _ want: [Double], _ what: String) {
        XCTAssertEqual(got.count, want.count)
        let worst = zip(got, want).map { abs(Double($0) - $1) / (1 + abs($1)) }.max() ?? 0
        XCTAssertLessThanOrEqual(worst, 2e-5, what)
    }

    func backend(maxStep: Int = 128) throws -> GPUBackend {
        try GPUBackend(weights: Self.weights, platform: EmulatorPlatform(weights: Self.weights), maxStep: maxStep)
    }

    func testPrefillPathAndGreedyDecode() async throws {
        // 31-token chat prompt: the MoE prefill kernels (route, grouped GEMMs, combine), then
        // greedy decode steps on the decode kernels.
        let c = try cases()[0]
        let ids = c["prompt_ids"] as! [Int], logits = c["logits"] as! [[Double]], greedy = c["greedy_tokens"] as! [Int]
        let session = try backend().makeSession(capacity: 64)
        var out = try await session.forward(ids, expertsPerToken: 2)
        assertClose(out, logits[ids.count - 1], "prefill last position")
        var tokens: [Int] = []
        for _ in 0..<4 {
            tokens.append(Sampler.argmax(out))
            out = try await session.forward([tokens.last!], expertsPerToken: 2)
        }
        XCTAssertEqual(tokens, Array(greedy.prefix(4)))
    }

    func testDecodePathTokenByTokenAndInSmallChunks() async throws {
        let c = try cases()[2]
        let ids = c["prompt_ids"] as! [Int], logits = c["logits"] as! [[Double]]
        let one = try backend().makeSession(capacity: 32)
        for (t, id) in ids.prefix(6).enumerated() {
            assertClose(try await one.forward([id], expertsPerToken: 2), logits[t], "token-by-token position \(t)")
        }
        // Steps of 5 tokens: several multi-token decode-path submissions over a growing cache.
        let chunked = try backend(maxStep: 5).makeSession(capacity: 32)
        assertClose(try await chunked.forward(ids, expertsPerToken: 2), logits[ids.count - 1], "chunks of 5")
    }

    func testMatchesCPUReferenceWithFewerExperts() async throws {
        // Adaptive compute (k = 1) takes the same path on both backends.
        let ids = try cases()[1]["prompt_ids"] as! [Int]
        let cpu = try await CPUBackend(weights: Self.weights).makeSession(capacity: 16).forward(ids, expertsPerToken: 1)
        let gpu = try await backend().makeSession(capacity: 16).forward(ids, expertsPerToken: 1)
        assertClose(gpu, cpu.map(Double.init), "k = 1")
    }

    func testCancelledTaskSubmitsNothing() async throws {
        let session = try backend().makeSession(capacity: 8) as! GPUSession
        let task = Task { () -> Error? in
            withUnsafeCurrentTask { $0?.cancel() }
            do { _ = try await session.forward([0, 1], expertsPerToken: 2); return nil } catch { return error }
        }
        let error = await task.value
        XCTAssertTrue(error is CancellationError, "\(String(describing: error))")
        XCTAssertEqual((session.executor as! EmulatorExecutor).launchCount, 0)
    }

    func testBF16CheckpointIsRefused() throws {
        let dir = Fixtures.url("tiny-bf16")
        let config = try ModelConfig(contentsOf: dir.appendingPathComponent("config.json"))
        let w = try ModelWeights(config: config, store: TensorStore(directory: dir))
        XCTAssertThrowsError(try GPUBackend(weights: w, platform: EmulatorPlatform(weights: Self.weights)))
    }

    func testLaunchTemplatesEqualTheFreshPlanAtEveryPosition() throws {
        let b = try backend()
        for T in [1, 3, 9] {
            for k in [1, 2] {
                let t = b.templates.template(tokens: T, expertsPerToken: k)
                XCTAssertGreaterThan(t.patchedLaunches, 0)
                for p in [0, 1, 2, 7, 40, 300] {
                    XCTAssertEqual(t.instantiate(position: p), b.plan.launches(tokens: T, position: p, expertsPerToken: k),
                                   "T \(T) k \(k) position \(p)")
                }
            }
        }
    }

    func testTemplatesAreBuiltOncePerShape() async throws {
        let b = try backend()
        let session = try b.makeSession(capacity: 64)
        for id in [3, 4] { _ = try await session.forward([id], expertsPerToken: 2) }  // one decode shape
        XCTAssertEqual(b.templates.builds, 1)
        _ = b.templates.template(tokens: 1, expertsPerToken: 2)
        XCTAssertEqual(b.templates.builds, 1)
        b.templates.removeAll()  // memory warning
        _ = b.templates.template(tokens: 1, expertsPerToken: 2)
        XCTAssertEqual(b.templates.builds, 2, "rebuilt on demand")
    }

    func testEncoderCallsPerDecodeStep() throws {
        let b = try backend()
        let launches = b.templates.template(tokens: 1, expertsPerToken: 2).instantiate(position: 17)
        let index = Dictionary(uniqueKeysWithValues: KernelSources.kernelNames.enumerated().map { ($1, $0) })
        let n = EncoderCallCount(launches, kernelIndex: { index[$0]! })
        // Embed; per layer 10, + 2 RoPE/qk-norm launches on RoPE layers (layer 1 has none); final norm + head.
        let c = b.config
        XCTAssertEqual(n.dispatches, 1 + (0..<c.numHiddenLayers).map { c.usesRope(layer: $0) || c.usesQKNorm(layer: $0) ? 12 : 10 }.reduce(0, +) + 2)
        XCTAssertLessThan(n.encoded, n.naive)
        XCTAssertGreaterThan(n.skipped, 0)
        print("encoder calls per decode step (tiny fixture): naive \(n.naive), encoded \(n.encoded) " +
              "(pipelines \(n.pipelines), setBuffer \(n.setBuffer), setBufferOffset \(n.setOffset), setBytes \(n.setBytes), skipped \(n.skipped))")
    }

    func testClosedGateHoldsTheSubmission() async throws {
        let session = try backend().makeSession(capacity: 8) as! GPUSession
        let gate = ComputeGate()
        gate.close()
        let task = Task { try await session.forward([0], expertsPerToken: 2, gate: gate) }
        for _ in 0..<2000 where gate.waits == 0 { try await Task.sleep(nanoseconds: 1_000_000) }
        XCTAssertEqual((session.executor as! EmulatorExecutor).launchCount, 0, "nothing submitted while paused")
        gate.open()
        _ = try await task.value
        XCTAssertGreaterThan((session.executor as! EmulatorExecutor).launchCount, 0)
        XCTAssertEqual(session.position, 1)
    }
}
