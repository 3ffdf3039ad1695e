// Penalties on the logits before sampling, as mlx-lm's make_logits_processors (sample_utils.py),
// applied in its order: repetition, presence, frequency. The context is the last tokens of the
// whole sequence (prompt and generated so far).

struct LogitsPenalties {
    let repetition: Float?
    let repetitionContext: Int
    let presence: Float?
    let frequency: Float?
    let context: Int

    init(_ p: GenerateParameters) {
        repetition = p.repetitionPenalty
        repetitionContext = p.repetitionContextSize
        presence = p.presencePenalty
        frequency = p.frequencyPenalty
        context = p.penaltyContextSize
    }

    var isActive: Bool {
        (repetition.map { $0 != 0 && $0 != 1 } ?? false) || (presence.map { $0 != 0 } ?? false) || (frequency.map { $0 != 0 } ?? false)
    }

    /// Applies the penalties in place; `tokens` is the sequence so far (oldest first).
    func apply(to logits: inout [Float], tokens: [Int]) {
        guard !tokens.isEmpty else { return }
        if let r = repetition, r != 0, r != 1 {
            // logits[tokens] = where(l < 0, l * r, l / r): once per distinct token.
            for t in Set(tokens.suffix(repetitionContext)) {
                logits[t] = logits[t] < 0 ? logits[t] * r : logits[t] / r
            }
        }
        if let p = presence, p != 0 {
            for t in Set(tokens.suffix(context)) { logits[t] -= p }
        }
        if let f = frequency, f != 0 {
            for t in tokens.suffix(context) { logits[t] -= f }
        }
    }
}
