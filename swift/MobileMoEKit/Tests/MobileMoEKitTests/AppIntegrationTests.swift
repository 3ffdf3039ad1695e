// What an app meets around generation: explicit backend choice (errors with reasons, the
// reported fallback), the memory estimate and budget, lifecycle pause/resume on the CPU
// backend with an injected lifecycle source, KV cache storage types and the rotating window.
import Foundation
import XCTest
@testable import MobileMoEKit

final class LogLines: @unchecked Sendable {
    private let lock = NSLock()
    private var lines: [String] = []
    func add(_ s: String) { lock.lock(); lines.append(s); lock.unlock() }
    var all: [String] { lock.lock(); defer { lock.unlock() }; return lines }
}

final class AppIntegrationTests: XCTestCase {
    func load(_ backend: BackendChoice = .cpu, budget: UInt64? = nil, lifecycle: LifecycleSource = NoLifecycleEvents(),
              fixture: String = "tiny-qat") throws -> MobileMoEModel {
        try MobileMoEModel(directory: Fixtures.url(fixture), backend: backend,
                           options: LoadOptions(memoryBudget: FixedMemoryBudget(bytes: budget), lifecycle: lifecycle,
                                                deviceState: FixedDeviceState()))
    }

    func collect(_ stream: AsyncThrowingStream<GenerationEvent, Error>) async throws -> GenerationInfo {
        var info: GenerationInfo?
        for try await e in stream { if case let .info(i) = e { info = i } }
        return try XCTUnwrap(info)
    }

    // MARK: Backend choice

    func testExplicitGPUFailsWithTheReason() throws {
        #if canImport(Metal)
        throw XCTSkip("Metal is present: the reason depends on the device")
        #else
        XCTAssertThrowsError(try load(.gpu)) { error in
            XCTAssertEqual(error as? InferenceError, .backendUnavailable("Metal is not available on this platform"))
        }
        #endif
    }

    func testAutomaticReportsTheFallback() async throws {
        #if canImport(Metal)
        throw XCTSkip("Metal is present")
        #else
        let lines = LogLines()
        MobileMoELog.shared.setHandler { lines.add($0) }
        defer { MobileMoELog.shared.resetHandler() }
        let model = try load(.automatic)
        XCTAssertEqual(model.backend.name, "cpu")
        XCTAssertEqual(model.backendFallbackReason, "Metal is not available on this platform")
        XCTAssertTrue(lines.all.contains { $0.contains("runs on the CPU: Metal is not available") }, "\(lines.all)")
        let info = try await collect(model.generate(.text("Hi"), parameters: .init(maxTokens: 2, temperature: 0)))
        XCTAssertEqual(info.backendFallbackReason, model.backendFallbackReason)
        XCTAssertNil(try load(.cpu).backendFallbackReason)
        #endif
    }

    func testGPUGateIsApple7() throws {
        XCTAssertNil(GPUDeviceTraits(name: "Apple M1", apple7: true, mac2: true).refusal)
        XCTAssertNil(GPUDeviceTraits(name: "Apple A15 GPU", apple7: true, mac2: false).refusal)
        let amd = try XCTUnwrap(GPUDeviceTraits(name: "AMD Radeon Pro 5500M", apple7: false, mac2: true).refusal)
        XCTAssertTrue(amd.contains("Intel/AMD") && amd.contains("Apple7"), amd)
        let old = try XCTUnwrap(GPUDeviceTraits(name: "Apple A12 GPU", apple7: false, mac2: false).refusal)
        XCTAssertTrue(old.contains("older than Apple7"), old)
        let bf16 = try ModelConfig(contentsOf: Fixtures.url("tiny-bf16").appendingPathComponent("config.json"))
        XCTAssertEqual(GPUForwardPlan.unsupportedReason(bf16, try KernelGeometry.shipped()),
                       "the GPU kernels read int4 (QAT) checkpoints; this one is BF16")
    }

    // MARK: Memory

    func testMemoryEstimateAndBudget() async throws {
        let model = try load()
        let c = model.configuration
        // 2 layers * (K, V) * 2 kv heads * 16 dims.
        XCTAssertEqual(MemoryEstimate.kvBytesPerToken(c, .float32), 2 * 2 * 2 * 16 * 4)
        XCTAssertEqual(MemoryEstimate.kvBytesPerToken(c, .float16), 2 * 2 * 2 * 16 * 2)
        XCTAssertEqual(MemoryEstimate.kvBytesPerToken(c, .int8), 2 * 2 * 2 * 16 + 4 * 2 * 2 * 2)
        let e = model.memoryEstimate
        XCTAssertEqual(e.contextTokens, 512)
        XCTAssertEqual(e.kvCacheBytes, 512 * 512)
        let file = try FileManager.default.attributesOfItem(atPath: Fixtures.url("tiny-qat/model.safetensors").path)[.size] as! Int
        XCTAssertGreaterThan(e.weightsBytes, file * 9 / 10)  // the tensors plus the float copies
        XCTAssertLessThan(e.weightsBytes, file + 4 * 64 * 64)
        XCTAssertGreaterThan(e.scratchBytes, 0)

        // The KV estimate is what a session really holds.
        for type in KVCacheType.allCases {
            let s = try model.backend.makeSession(SessionOptions(capacity: 64, kvCache: type))
            _ = try await s.forward(Array(0..<10), expertsPerToken: 2)
            XCTAssertEqual(s.cacheBytes, 10 * MemoryEstimate.kvBytesPerToken(c, type), "\(type)")
        }

        // Over budget: a clear error before anything runs.
        XCTAssertThrowsError(try load(budget: 100_000)) { error in
            guard case let .insufficientMemory(why)? = error as? InferenceError else { return XCTFail("\(error)") }
            XCTAssertTrue(why.contains("weights") && why.contains("KV cache") && why.contains("fixed budget"), why)
        }
        // Exactly the estimate fits; a session whose scratch would not is refused before it runs.
        let fits = try load(budget: UInt64(e.totalBytes))
        XCTAssertThrowsError(try fits.checkSessionMemory(SessionOptions(capacity: 512, maxStep: 100_000)))
        let error = await XCTAssertThrowsErrorAsync(
            try await collect(fits.generate(.text("Hi"), parameters: .init(maxTokens: 4, prefillStepSize: 100_000))))
        XCTAssertTrue("\(error!)".contains("not enough memory"), "\(error!)")
        XCTAssertEqual(SystemMemoryBudget.memAvailable(meminfo: "MemTotal: 10 kB\nMemAvailable:    2048 kB\n"), 2048 * 1024)
    }

    // MARK: Lifecycle

    func testPauseAndResumeKeepTheGeneration() async throws {
        let source = ManualLifecycleSource()
        let model = try load(lifecycle: source)
        let p = GenerateParameters(maxTokens: 24, temperature: 1, seed: 11)
        let prompt = Prompt.text("The quick brown fox")
        let reference = try await collect(model.generate(prompt, parameters: p))
        XCTAssertEqual(reference.tokens.count, 24)

        let chunks = LogLines()
        let task = Task { () -> GenerationInfo in
            var info: GenerationInfo?
            for try await e in model.generate(prompt, parameters: p) {
                switch e {
                case let .chunk(c): chunks.add(c)
                case let .info(i): info = i
                }
            }
            return info!
        }
        for _ in 0..<2000 where chunks.all.count < 3 { try await Task.sleep(nanoseconds: 1_000_000) }
        source.send(.willResignActive)
        for _ in 0..<2000 where model.gate.waits == 0 { try await Task.sleep(nanoseconds: 1_000_000) }
        XCTAssertEqual(model.gate.waits, 1, "the generation waits at the gate")
        try await Task.sleep(nanoseconds: 100_000_000)  // chunks yielded before the wait may still be in flight
        let seen = chunks.all.count
        try await Task.sleep(nanoseconds: 200_000_000)
        XCTAssertEqual(chunks.all.count, seen, "no forward pass while inactive")
        source.send(.didBecomeActive)
        let resumed = try await task.value
        XCTAssertEqual(resumed.tokens, reference.tokens, "the same session continues")
        XCTAssertEqual(resumed.stopReason, .length)

        // Cancelling a paused generation ends it (the gate honours cancellation).
        model.pause()
        let paused = Task { () -> Int in
            // Chunks and tokens seen. The stream's termination cancels the producer before it
            // finishes the stream, so a final .info (cancelled, no tokens) may still arrive.
            var produced = 0
            do {
                for try await e in model.generate(prompt, parameters: p) {
                    switch e {
                    case .chunk: produced += 1
                    case let .info(i):
                        XCTAssertEqual(i.stopReason, .cancelled)
                        produced += i.tokens.count
                    }
                }
            } catch {}
            return produced
        }
        for _ in 0..<2000 where model.gate.waits < 2 { try await Task.sleep(nanoseconds: 1_000_000) }
        XCTAssertEqual(model.gate.waits, 2)
        paused.cancel()
        let events = await paused.value
        XCTAssertEqual(events, 0, "nothing was generated while paused")
        for _ in 0..<2000 where GenerationLoop.running.value > 0 { try await Task.sleep(nanoseconds: 1_000_000) }
        XCTAssertEqual(GenerationLoop.running.value, 0)
        model.resume()
    }

    func testLifecycleMemoryWarningReachesHandlers() async throws {
        let source = ManualLifecycleSource()
        let model = try load(lifecycle: source)
        let hits = LogLines()
        let registration = model.onMemoryWarning { hits.add("warning") }
        source.send(.memoryWarning)
        for _ in 0..<2000 where hits.all.isEmpty { try await Task.sleep(nanoseconds: 1_000_000) }
        XCTAssertEqual(hits.all, ["warning"])
        _ = registration
    }

    // MARK: KV cache storage and the rotating window

    func testFloat16AndInt8CachesStayCloseToFloat32() async throws {
        let model = try load()
        let ids = try model.tokens(for: .text("The quick brown fox jumps over the lazy dog"))
        func logits(_ type: KVCacheType) async throws -> [Float] {
            let s = try model.backend.makeSession(SessionOptions(capacity: 64, kvCache: type))
            _ = try await s.forward(Array(ids.dropLast()), expertsPerToken: 2)
            return try await s.forward([ids.last!], expertsPerToken: 2)
        }
        let exact = try await logits(.float32)
        for (type, tol) in [(KVCacheType.float16, Float(2e-3)), (.int8, 3e-2)] {
            let got = try await logits(type)
            let worst = zip(got, exact).map { abs($0 - $1) / (1 + abs($1)) }.max()!
            XCTAssertLessThan(worst, tol, "\(type)")
            XCTAssertEqual(Sampler.argmax(got), Sampler.argmax(exact), "\(type)")
        }
    }

    func testRotatingWindowIsIndependentOfChunkingAndBounded() async throws {
        let model = try load()
        let ids = Array(try model.tokens(for: .text("The quick brown fox jumps over the lazy dog, again and again")).prefix(20))
        XCTAssertEqual(ids.count, 20)
        let options = SessionOptions(capacity: 64, maxKVSize: 8, maxStep: 20)
        let whole = try model.backend.makeSession(options)
        let a = try await whole.forward(ids, expertsPerToken: 2)
        let stepwise = try model.backend.makeSession(options)
        var b: [Float] = []
        for id in ids { b = try await stepwise.forward([id], expertsPerToken: 2) }
        XCTAssertLessThanOrEqual(zip(a, b).map { abs($0 - $1) }.max()!, 1e-5)
        // Kept: the first 4 positions and the 3 before the next query (which sees 8 with itself).
        let kv = MemoryEstimate.kvBytesPerToken(model.configuration, .float32)
        XCTAssertEqual(stepwise.cacheBytes, 7 * kv)
        XCTAssertEqual(whole.cacheBytes, 7 * kv)
        XCTAssertFalse(stepwise.truncate(to: 19), "position 16, needed from 19 on, is gone")
        XCTAssertTrue(stepwise.truncate(to: 20))

        // A window as large as the sequence is the plain cache.
        let big = try model.backend.makeSession(SessionOptions(capacity: 64, maxKVSize: 32))
        let plain = try model.backend.makeSession(capacity: 64)
        let c = try await big.forward(ids, expertsPerToken: 2), d = try await plain.forward(ids, expertsPerToken: 2)
        XCTAssertEqual(c, d)
        // The window differs from full attention once it moved on.
        XCTAssertGreaterThan(zip(a, d).map { abs($0 - $1) }.max()!, 1e-4)
        // Generation may run past the context with a window.
        var p = GenerateParameters(maxTokens: 500, temperature: 0)
        p.maxKVSize = 16
        let info = try await collect(model.generate(.tokens(ids), parameters: p))
        XCTAssertEqual(ids.count + info.tokens.count, 520, "past max_position_embeddings (512)")
    }
}
