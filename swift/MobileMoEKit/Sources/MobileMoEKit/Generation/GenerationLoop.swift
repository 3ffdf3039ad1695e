// One generation on a session: prefill the new prompt tokens in chunks, then apply penalties,
// sample, stream text (minus stop strings) and feed each token back. Before every forward pass
// the loop checks `Task.isCancelled` and waits at the model's lifecycle gate, so nothing is
// submitted while the app is inactive and a paused generation resumes with its cache intact.
import Foundation

struct GenerationLoop {
    let model: MobileMoEModel
    let parameters: GenerateParameters

    /// Loops running now (lets tests see that cancellation really stopped the work).
    static let running = RunningCount()

    /// The session options `parameters` call for, for `positions` prompt positions.
    static func sessionOptions(_ p: GenerateParameters, positions: Int) -> SessionOptions {
        SessionOptions(capacity: positionsNeeded(p, prompt: positions), kvCache: p.kvCache, maxKVSize: p.maxKVSize,
                       maxStep: max(p.prefillStepSize, 1))
    }

    /// prompt + maxTokens, saturating (maxTokens may be Int.max: "until the context is full").
    static func positionsNeeded(_ p: GenerateParameters, prompt: Int) -> Int {
        let (n, overflow) = prompt.addingReportingOverflow(max(p.maxTokens, 0))
        return overflow ? .max : n
    }

    /// Feeds `newTokens` after the `context` already in `session` (penalties look at both),
    /// then generates.
    func run(session: InferenceSession, context: [Int] = [], newTokens: [Int],
             onText: @Sendable (String) -> Void) async throws -> GenerationInfo {
        GenerationLoop.running.add(1)
        defer { GenerationLoop.running.add(-1) }
        let config = model.configuration
        try parameters.validate(vocabSize: config.vocabSize)
        guard !newTokens.isEmpty else { throw InferenceError.emptyPrompt }
        if let k = parameters.expertsPerToken, !(1...config.numLocalExperts).contains(k) {
            throw InferenceError.badExpertsPerToken(k, experts: config.numLocalExperts)
        }
        guard session.position + newTokens.count < session.capacity else { throw InferenceError.contextFull(capacity: session.capacity) }
        var k = await expertsPerToken()
        var sampler = Sampler(parameters: parameters)
        let penalties = LogitsPenalties(parameters)
        var history = penalties.isActive ? context + newTokens : []
        var decoder = StreamingDecoder(tokenizer: model.tokenizer)
        var stopStrings = StopStringMatcher(parameters.stopStrings)
        var generated: [Int] = []
        var reason = GenerationInfo.StopReason.length
        var stoppedByString = false
        let clock = ContinuousClock()
        let start = clock.now
        func finish(_ reason: GenerationInfo.StopReason, _ prefillEnd: ContinuousClock.Instant) -> GenerationInfo {
            info(newTokens.count, generated, reason, start, prefillEnd, clock, k, cached: context.count)
        }

        /// One forward pass, or nil when cancelled (before, while paused, or at the GPU submit).
        func forward(_ tokens: [Int]) async throws -> [Float]? {
            if Task.isCancelled { return nil }
            do {
                try await model.gate.waitUntilOpen()
                if Task.isCancelled { return nil }
                return try await session.forward(tokens, expertsPerToken: k, gate: model.gate)
            } catch is CancellationError {
                return nil
            }
        }

        // Prefill.
        var logits: [Float] = []
        var offset = 0
        while offset < newTokens.count {
            let end = min(newTokens.count, offset + max(parameters.prefillStepSize, 1))
            guard let out = try await forward(Array(newTokens[offset..<end])) else { return finish(.cancelled, start) }
            logits = out
            offset = end
        }
        let prefillEnd = clock.now

        // Decode.
        while generated.count < parameters.maxTokens {
            if penalties.isActive { penalties.apply(to: &logits, tokens: history) }
            let token = sampler.sample(logits)
            if model.stopTokenIds.contains(token) || parameters.extraStopTokens.contains(token) { reason = .stop; break }
            generated.append(token)
            if penalties.isActive { history.append(token) }
            let text = stopStrings.feed(decoder.append(token))
            if !text.text.isEmpty { onText(text.text) }
            if text.stopped { reason = .stop; stoppedByString = true; break }
            if generated.count == parameters.maxTokens { break }
            if Task.isCancelled { reason = .cancelled; break }
            if session.position >= session.capacity { reason = .length; break }  // context full
            if generated.count % max(model.adaptiveCompute.refreshInterval, 1) == 0 { k = await expertsPerToken() }
            guard let out = try await forward([token]) else { reason = .cancelled; break }
            logits = out
        }
        if !stoppedByString {
            let rest = stopStrings.feed(decoder.finish())
            let text = rest.text + (rest.stopped ? "" : stopStrings.flush())
            if !text.isEmpty { onText(text) }
            if rest.stopped { reason = .stop }
        }
        return finish(reason, prefillEnd)
    }

    private func expertsPerToken() async -> Int {
        if let k = parameters.expertsPerToken { return k }
        let state = await model.deviceState.currentState()
        return model.adaptiveCompute.expertsPerToken(configured: model.configuration.numExpertsPerTok, state: state)
    }

    private func info(_ promptCount: Int, _ tokens: [Int], _ reason: GenerationInfo.StopReason,
                      _ start: ContinuousClock.Instant, _ prefillEnd: ContinuousClock.Instant,
                      _ clock: ContinuousClock, _ k: Int, cached: Int) -> GenerationInfo {
        func seconds(_ d: Duration) -> Double {
            Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18
        }
        return GenerationInfo(promptTokenCount: promptCount, generationTokenCount: tokens.count,
                              promptTime: seconds(prefillEnd - start), generationTime: seconds(clock.now - prefillEnd),
                              stopReason: reason, tokens: tokens, expertsPerToken: k, backend: model.backend.name,
                              cachedPromptTokenCount: cached, backendFallbackReason: model.backendFallbackReason)
    }
}

final class RunningCount: @unchecked Sendable {
    private let lock = NSLock()
    private var n = 0
    func add(_ d: Int) { lock.lock(); n += d; lock.unlock() }
    var value: Int { lock.lock(); defer { lock.unlock() }; return n }
}
