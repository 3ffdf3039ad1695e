// Next-token choice from logits: greedy at temperature 0, else temperature, top-k, top-p and a
// seeded draw (SplitMix64, reproducible across platforms).
import Foundation

public struct SplitMix64: RandomNumberGenerator, Sendable {
    private var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

public struct Sampler {
    public let parameters: GenerateParameters
    private var rng: SplitMix64

    public init(parameters: GenerateParameters) {
        self.parameters = parameters
        rng = SplitMix64(seed: parameters.seed ?? UInt64.random(in: .min ... .max))
    }

    /// First index of the largest logit (as mx.argmax).
    public static func argmax(_ logits: [Float]) -> Int {
        var best = 0
        for i in logits.indices where logits[i] > logits[best] { best = i }
        return best
    }

    public mutating func sample(_ logits: [Float]) -> Int {
        let p = parameters
        guard p.temperature > 0 else { return Sampler.argmax(logits) }
        // Candidates sorted by logit, cut by top-k, softmax at temperature, cut by top-p.
        var order = logits.indices.sorted { logits[$0] > logits[$1] }
        if p.topK > 0 && p.topK < order.count { order.removeLast(order.count - p.topK) }
        let top = logits[order[0]]
        var probs = order.map { Double(exp((logits[$0] - top) / p.temperature)) }
        let total = probs.reduce(0, +)
        probs = probs.map { $0 / total }
        if p.topP < 1 {
            var mass = 0.0, keep = 0
            while keep < probs.count && (keep == 0 || mass < Double(p.topP)) { mass += probs[keep]; keep += 1 }
            order.removeLast(order.count - keep)
            probs.removeLast(probs.count - keep)
            probs = probs.map { $0 / mass }
        }
        var r = Double.random(in: 0..<1, using: &rng)
        for (i, q) in probs.enumerated() {
            r -= q
            if r < 0 { return order[i] }
        }
        return order[probs.count - 1]
    }
}
