// port of MoE.route in mlx_mobilemoe/model.py: sigmoid scores in float32, top-k chosen on
// score + expert_bias (the bias only selects), weights = s / (sum s + 1e-20) * scaling.

public struct Routing: Equatable {
    public var experts: [Int]
    public var weights: [Float]
}

/// `logits`: the router outputs x @ router^T for one token (E values).
public func route(logits: [Float], bias: [Float], k: Int, normalize: Bool, scaling: Float) -> Routing {
    let scores = logits.map(sigmoid)
    // Stable selection of the k largest biased scores (ties: lower index first).
    let order = scores.indices.sorted { a, b in
        let sa = scores[a] + bias[a], sb = scores[b] + bias[b]
        return sa != sb ? sa > sb : a < b
    }
    let chosen = Array(order.prefix(k))
    var w = chosen.map { scores[$0] }
    if normalize {
        let total = w.reduce(0, +) + 1e-20
        w = w.map { $0 / total }
    }
    return Routing(experts: chosen, weights: w.map { $0 * scaling })
}
