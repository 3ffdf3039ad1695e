// One generation: prefill the prompt in chunks, then sample, stream text, and feed each token
// back. `Task.isCancelled` is checked before every forward pass, so nothing is submitted to
// the GPU after the consumer went away (or the app was backgrounded and cancelled it).
import Foundation

struct GenerationLoop {
    let model: MobileMoEModel
    let parameters: GenerateParameters

    /// Loops running now (lets tests see that cancellation really stopped the work).
    static let running = RunningCount()

    func run(promptIds: [Int], onText: (String) -> Void) async throws -> GenerationInfo {
        GenerationLoop.running.add(1)
        defer { GenerationLoop.running.add(-1) }
        let config = model.configuration
        guard !promptIds.isEmpty else { throw InferenceError.emptyPrompt }
        if let k = parameters.expertsPerToken, !(1...config.numLocalExperts).contains(k) {
            throw InferenceError.badExpertsPerToken(k, experts: config.numLocalExperts)
        }
        // Saturating: maxTokens may be Int.max ("until the context is full"); never more than the context.
        let (wanted, overflow) = promptIds.count.addingReportingOverflow(max(parameters.maxTokens, 0))
        let session = try model.backend.makeSession(capacity: min(overflow ? .max : wanted, config.maxPositionEmbeddings))
        guard promptIds.count < session.capacity else { throw InferenceError.contextFull(capacity: session.capacity) }
        var k = await expertsPerToken()
        var sampler = Sampler(parameters: parameters)
        var decoder = StreamingDecoder(tokenizer: model.tokenizer)
        var generated: [Int] = []
        var reason = GenerationInfo.StopReason.length
        let clock = ContinuousClock()
        let start = clock.now

        // Prefill.
        var logits: [Float] = []
        var offset = 0
        while offset < promptIds.count {
            if Task.isCancelled { return info(promptIds.count, generated, .cancelled, start, start, clock, k) }
            let end = min(promptIds.count, offset + max(parameters.prefillStepSize, 1))
            do {
                logits = try session.forward(Array(promptIds[offset..<end]), expertsPerToken: k)
            } catch is CancellationError {
                return info(promptIds.count, generated, .cancelled, start, start, clock, k)
            }
            offset = end
        }
        let prefillEnd = clock.now

        // Decode.
        while generated.count < parameters.maxTokens {
            let token = sampler.sample(logits)
            if model.stopTokenIds.contains(token) || parameters.extraStopTokens.contains(token) { reason = .stop; break }
            generated.append(token)
            let text = decoder.append(token)
            if !text.isEmpty { onText(text) }
            if generated.count == parameters.maxTokens { break }
            if Task.isCancelled { reason = .cancelled; break }
            if session.position >= session.capacity { reason = .length; break }  // context full
            if generated.count % max(model.adaptiveCompute.refreshInterval, 1) == 0 { k = await expertsPerToken() }
            do {
                logits = try session.forward([token], expertsPerToken: k)
            } catch is CancellationError {  // a GPU executor refused to submit
                reason = .cancelled
                break
            }
        }
        let rest = decoder.finish()
        if !rest.isEmpty { onText(rest) }
        return info(promptIds.count, generated, reason, start, prefillEnd, clock, k)
    }

    private func expertsPerToken() async -> Int {
        if let k = parameters.expertsPerToken { return k }
        let state = await model.deviceState.currentState()
        return model.adaptiveCompute.expertsPerToken(configured: model.configuration.numExpertsPerTok, state: state)
    }

    private func info(_ promptCount: Int, _ tokens: [Int], _ reason: GenerationInfo.StopReason,
                      _ start: ContinuousClock.Instant, _ prefillEnd: ContinuousClock.Instant,
                      _ clock: ContinuousClock, _ k: Int) -> GenerationInfo {
        func seconds(_ d: Duration) -> Double {
            Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18
        }
        return GenerationInfo(promptTokenCount: promptCount, generationTokenCount: tokens.count,
                              promptTime: seconds(prefillEnd - start), generationTime: seconds(clock.now - prefillEnd),
                              stopReason: reason, tokens: tokens, expertsPerToken: k, backend: model.backend.name)
    }
}

final class RunningCount: @unchecked Sendable {
    private let lock = NSLock()
    private var n = 0
    func add(_ d: Int) { lock.lock(); n += d; lock.unlock() }
    var value: Int { lock.lock(); defer { lock.unlock() }; return n }
}
