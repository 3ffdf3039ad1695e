// port of mlx_mobilemoe/model.py (Model.__call__ with a KV cache) as a portable float32 CPU
// reference: int4 weights are dequantized row by row on the fly, nothing is expanded in memory.
import Foundation

public final class CPUBackend: InferenceBackend {
    public let name = "cpu"
    public let weights: ModelWeights
    public var config: ModelConfig { weights.config }
    let invFreq: [Float]

    public init(weights: ModelWeights) {
        self.weights = weights
        let c = weights.config
        invFreq = ropeInverseFrequencies(headDim: c.headDim, theta: c.ropeTheta, scaling: c.ropeScaling)
    }

    public func makeSession(_ options: SessionOptions) throws -> InferenceSession {
        CPUSession(backend: self, options: options)
    }

    /// Activations of one forward pass of `maxStep` tokens (estimate: the largest arrays alive
    /// together), plus the logits.
    public func scratchBytes(_ o: SessionOptions) -> Int {
        let c = config, T = max(o.maxStep, 1), H = c.hiddenSize, QD = c.numAttentionHeads * c.headDim
        let KV = 2 * c.numKeyValueHeads * c.headDim, k = c.numExpertsPerTok
        let rows = o.cacheRows(config: c)
        let perToken = 6 * H + 3 * QD + KV + k * H + 2 * k * c.intermediateSize + 3 * c.intermediateSizeMLP
        return 4 * (T * perToken + rows + c.vocabSize)
    }
}

final class CPUSession: InferenceSession, @unchecked Sendable {
    let backend: CPUBackend
    let capacity: Int
    private(set) var position = 0
    /// Per layer, rows of [kvHeads * headDim].
    private var keys: [KVRows]
    private var values: [KVRows]
    private var rowPositions: RowPositions

    init(backend: CPUBackend, options: SessionOptions) {
        self.backend = backend
        let c = backend.config
        // A rotating window has no end; RoPE positions keep counting (as mlx-lm).
        capacity = options.maxKVSize == nil ? min(options.capacity, c.maxPositionEmbeddings) : Int.max / 2
        let rows = KVRows(type: options.kvCache, heads: c.numKeyValueHeads, headDim: c.headDim)
        keys = Array(repeating: rows, count: c.numHiddenLayers)
        values = keys
        rowPositions = RowPositions(maxKV: options.maxKVSize)
    }

    var cacheBytes: Int { keys.reduce(0) { $0 + $1.bytes } + values.reduce(0) { $0 + $1.bytes } }

    func forward(_ tokens: [Int], expertsPerToken: Int, gate: ComputeGate?) async throws -> [Float] {
        try forwardAll(tokens, expertsPerToken: expertsPerToken, allLogits: false)
    }

    func truncate(to n: Int) -> Bool {
        guard n >= 0, n <= position, rowPositions.canTruncate(to: n) else { return false }
        let rows = n <= RotatingWindow.keep ? n : RotatingWindow.keep + (n - rowPositions.windowStart)
        for i in keys.indices { keys[i].truncate(rows: rows); values[i].truncate(rows: rows) }
        rowPositions.stored = rows
        if n <= RotatingWindow.keep { rowPositions.windowStart = RotatingWindow.keep }
        position = n
        return true
    }

    /// Logits of the last token, or of every token ([T * V]) when `allLogits`.
    func forwardAll(_ tokens: [Int], expertsPerToken k: Int, allLogits: Bool) throws -> [Float] {
        let c = backend.config, w = backend.weights
        try check(tokens, config: c, capacity: capacity, expertsPerToken: k)
        let T = tokens.count, H = c.hiddenSize
        guard T > 0 else { return [] }
        var x = [Float](repeating: 0, count: T * H)
        x.withUnsafeMutableBufferPointer { xb in
            for (t, token) in tokens.enumerated() { w.embedding.row(token, into: xb.baseAddress! + t * H) }
        }
        for (i, layer) in w.layers.enumerated() {
            attentionBlock(layer: i, weights: layer, x: &x, T: T)
            moeBlock(weights: layer, x: &x, T: T, k: k)
        }
        position += T
        rowPositions.stored += T
        if let drop = rowPositions.rowsToDrop(lastQuery: position - 1) {
            for i in keys.indices { keys[i].remove(drop.lowerBound, drop.upperBound); values[i].remove(drop.lowerBound, drop.upperBound) }
            rowPositions.stored -= drop.count
            rowPositions.windowStart += drop.count
        }
        let rows = allLogits ? Array(0..<T) : [T - 1]
        var h = [Float](repeating: 0, count: rows.count * H)
        for (j, t) in rows.enumerated() {
            for d in 0..<H { h[j * H + d] = x[t * H + d] }
            h.withUnsafeMutableBufferPointer { rmsNorm($0.baseAddress! + j * H, H, weight: w.finalNorm, eps: c.rmsNormEps) }
        }
        return matmul(w.embedding, h, rows: rows.count)
    }

    // h += o_proj(attn(rmsnorm_in(h)))
    private func attentionBlock(layer i: Int, weights lw: LayerWeights, x: inout [Float], T: Int) {
        let c = backend.config, H = c.hiddenSize, D = c.headDim
        let nH = c.numAttentionHeads, nKV = c.numKeyValueHeads, group = nH / nKV
        let xn = normalized(x, rows: T, weight: lw.inputNorm)
        var q = matmul(lw.q, xn, rows: T)
        var k = matmul(lw.k, xn, rows: T)
        let v = matmul(lw.v, xn, rows: T)
        q.withUnsafeMutableBufferPointer { qb in
            k.withUnsafeMutableBufferPointer { kb in
                for t in 0..<T {
                    let qt = qb.baseAddress! + t * nH * D, kt = kb.baseAddress! + t * nKV * D
                    if c.usesRope(layer: i) {
                        applyRope(qt, heads: nH, headDim: D, position: position + t, invFreq: backend.invFreq)
                        applyRope(kt, heads: nKV, headDim: D, position: position + t, invFreq: backend.invFreq)
                    }
                    if c.usesQKNorm(layer: i) {
                        for h in 0..<nH { rmsNorm(qt + h * D, D, weight: nil, eps: c.rmsNormEps) }
                        for h in 0..<nKV { rmsNorm(kt + h * D, D, weight: nil, eps: c.rmsNormEps) }
                    }
                }
            }
        }
        k.withUnsafeBufferPointer { keys[i].append($0.baseAddress!, rows: T) }
        v.withUnsafeBufferPointer { values[i].append($0.baseAddress!, rows: T) }

        let scale = 1 / Float(D).squareRoot()
        let stored = rowPositions.stored + T, rp = rowPositions
        var out = [Float](repeating: 0, count: T * nH * D)
        keys[i].withReader { kc in
            values[i].withReader { vc in
                q.withUnsafeBufferPointer { qb in
                    out.withUnsafeMutableBufferPointer { ob in
                        var scores = [Float](repeating: 0, count: stored)
                        var rowOf = [Int](repeating: 0, count: stored)
                        var tmp = [Float](repeating: 0, count: D)
                        scores.withUnsafeMutableBufferPointer { sb in
                            tmp.withUnsafeMutableBufferPointer { tb in
                                let scratch = tb.baseAddress!
                                for t in 0..<T {
                                    // Causal (positions <= P) and, for a rotating window, visible from P.
                                    let P = position + t
                                    var n = 0
                                    for r in 0..<stored {
                                        let p = rp.position(ofRow: r)
                                        if p <= P && rp.visible(p, from: P) { rowOf[n] = r; n += 1 }
                                    }
                                    for h in 0..<nH {
                                        let qh = qb.baseAddress! + (t * nH + h) * D
                                        let kvh = h / group
                                        for j in 0..<n { sb[j] = dot(qh, kc.head(rowOf[j], kvh, scratch: scratch), D) * scale }
                                        softmax(sb.baseAddress!, n)
                                        let oh = ob.baseAddress! + (t * nH + h) * D
                                        for j in 0..<n { axpy(sb[j], vc.head(rowOf[j], kvh, scratch: scratch), oh, D) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        let o = matmul(lw.o, out, rows: T)
        for j in 0..<T * H { x[j] += o[j] }
    }

    // h += routed(x) + shared(x), x = rmsnorm_post(h)
    private func moeBlock(weights lw: LayerWeights, x: inout [Float], T: Int, k: Int) {
        let c = backend.config, H = c.hiddenSize, E = c.numLocalExperts, I = c.intermediateSize
        let xn = normalized(x, rows: T, weight: lw.postAttentionNorm)

        // Route every token, then group (token, slot) pairs by expert.
        var routes: [Routing] = []
        var byExpert = [[(t: Int, slot: Int)]](repeating: [], count: E)
        xn.withUnsafeBufferPointer { xb in
            lw.router.withUnsafeBufferPointer { rb in
                for t in 0..<T {
                    let logits = (0..<E).map { e in dot(xb.baseAddress! + t * H, rb.baseAddress! + e * H, H) }
                    let r = route(logits: logits, bias: lw.expertBias, k: k, normalize: c.normTopkProb, scaling: c.routedScalingFactor)
                    for (slot, e) in r.experts.enumerated() { byExpert[e].append((t, slot)) }
                    routes.append(r)
                }
            }
        }

        // y[t, slot] = down_e(silu(gate_e(x_t)) * up_e(x_t)); each expert's rows are dequantized
        // once for all its tokens, experts run in parallel.
        var y = [Float](repeating: 0, count: T * k * H)
        let active = (0..<E).filter { !byExpert[$0].isEmpty }
        xn.withUnsafeBufferPointer { xb in
            y.withUnsafeMutableBufferPointer { yb in
                let yBase = yb.baseAddress!
                parallelFor(active.count, minChunk: 1) { range in
                    for e in active[range] {
                        let pairs = byExpert[e], n = pairs.count
                        var xs = [Float](repeating: 0, count: n * H)
                        for (j, p) in pairs.enumerated() { for d in 0..<H { xs[j * H + d] = xb[p.t * H + d] } }
                        let gu = expertMatmul(lw.gateUp, expert: e, inDim: H, x: xs, rows: n)
                        var act = [Float](repeating: 0, count: n * I)
                        for j in 0..<n { for m in 0..<I { act[j * I + m] = silu(gu[j * 2 * I + m]) * gu[j * 2 * I + I + m] } }
                        let out = expertMatmul(lw.down, expert: e, inDim: I, x: act, rows: n)
                        out.withUnsafeBufferPointer { ob in
                            for (j, p) in pairs.enumerated() {
                                (yBase + (p.t * k + p.slot) * H).update(from: ob.baseAddress! + j * H, count: H)
                            }
                        }
                    }
                }
            }
        }
        var ffn = [Float](repeating: 0, count: T * H)
        for t in 0..<T {
            for slot in 0..<k {
                let wgt = routes[t].weights[slot]
                for d in 0..<H { ffn[t * H + d] += y[(t * k + slot) * H + d] * wgt }
            }
        }
        if let g = lw.sharedGate, let u = lw.sharedUp, let dn = lw.sharedDown {
            let gate = matmul(g, xn, rows: T), up = matmul(u, xn, rows: T)
            let act = zip(gate, up).map { silu($0) * $1 }
            let shared = matmul(dn, act, rows: T)
            for j in 0..<T * H { ffn[j] += shared[j] }
        }
        for j in 0..<T * H { x[j] += ffn[j] }
    }

    private func normalized(_ x: [Float], rows: Int, weight: [Float]) -> [Float] {
        let n = backend.config.hiddenSize
        var out = x
        out.withUnsafeMutableBufferPointer { ob in
            for r in 0..<rows { rmsNorm(ob.baseAddress! + r * n, n, weight: weight, eps: backend.config.rmsNormEps) }
        }
        return out
    }
}

/// y[rows, out] = x[rows, in] @ W^T for W [out, in], one dequantized weight row at a time.
func matmul(_ w: WeightMatrix, _ x: [Float], rows: Int) -> [Float] {
    var y = [Float](repeating: 0, count: rows * w.rows)
    x.withUnsafeBufferPointer { xb in
        y.withUnsafeMutableBufferPointer { yb in
            let yBase = yb.baseAddress!, xBase = xb.baseAddress!
            parallelFor(w.rows, minChunk: max(1, 32_768 / max(w.cols, 1))) { range in
                var row = [Float](repeating: 0, count: w.cols)
                row.withUnsafeMutableBufferPointer { rb in
                    for o in range {
                        w.row(o, into: rb.baseAddress!)
                        for t in 0..<rows { yBase[t * w.rows + o] = dot(xBase + t * w.cols, rb.baseAddress!, w.cols) }
                    }
                }
            }
        }
    }
    return y
}

/// y[rows, out] = x[rows, inDim] @ W[expert] for stacked experts viewed as E*inDim rows of `out`.
func expertMatmul(_ w: WeightMatrix, expert e: Int, inDim: Int, x: [Float], rows: Int) -> [Float] {
    let n = w.cols
    var y = [Float](repeating: 0, count: rows * n)
    var row = [Float](repeating: 0, count: n)
    row.withUnsafeMutableBufferPointer { rb in
        y.withUnsafeMutableBufferPointer { yb in
            for i in 0..<inDim {
                w.row(e * inDim + i, into: rb.baseAddress!)
                for j in 0..<rows { axpy(x[j * inDim + i], rb.baseAddress!, yb.baseAddress! + j * n, n) }
            }
        }
    }
    return y
}
