// port of mlx_mobilemoe/model.py (Model.__call__ with a KV cache) as the launch sequence of the
// GPU backends: per layer rmsnorm, q/k/v INT4 linears (k and v written straight into the
// cache), RoPE + qk-norm, attention, o_proj added into the residual, rmsnorm, the fused MoE
// (kernels/moe_kernels.metal entry points: 2 decode launches for <= 8 tokens, 4 prefill launches
// above), residual add; then the final norm of the last row and the tied-embedding logits.

struct QuantRef {
    let words: BufferRef    // packed int4 bytes read as uint32 words
    let scales: BufferRef   // fp16
    init(_ m: WeightMatrix) {
        words = .tensor(m.tensors[0].name)
        scales = .tensor(m.tensors[1].name)
    }
}

struct GPULayerRefs {
    let q, k, v, o, gateUp, down: QuantRef
    let sharedGate, sharedUp, sharedDown: QuantRef?
}

struct GPUForwardPlan {
    let config: ModelConfig
    let geometry: KernelGeometry
    let embedding: QuantRef
    let layers: [GPULayerRefs]

    /// Reasons the GPU kernels cannot run a checkpoint (nil: they can).
    static func unsupportedReason(_ c: ModelConfig, _ g: KernelGeometry) -> String? {
        if !c.isQuantized { return "the GPU kernels read int4 (QAT) checkpoints; this one is BF16" }
        if c.hiddenSize % 32 != 0 || c.intermediateSize % 32 != 0 || c.intermediateSizeMLP % 32 != 0 {
            return "hidden_size, intermediate_size, intermediate_size_mlp must be multiples of 32"
        }
        if (c.numAttentionHeads * c.headDim) % 32 != 0 { return "num_attention_heads * head_dim must be a multiple of 32" }
        if c.headDim > g.maxHeadDim { return "head_dim \(c.headDim) > \(g.maxHeadDim)" }
        if c.hiddenSize > g.maxHidden { return "hidden_size \(c.hiddenSize) > \(g.maxHidden)" }
        if c.numLocalExperts < 8 || c.numLocalExperts > g.maxExperts {
            return "num_local_experts \(c.numLocalExperts) outside 8...\(g.maxExperts)"
        }
        if c.numExpertsPerTok > g.maxK { return "num_experts_per_tok > \(g.maxK)" }
        return nil
    }

    init(weights w: ModelWeights, geometry: KernelGeometry) {
        config = w.config
        self.geometry = geometry
        embedding = QuantRef(w.embedding)
        layers = w.layers.map { l in
            GPULayerRefs(q: QuantRef(l.q), k: QuantRef(l.k), v: QuantRef(l.v), o: QuantRef(l.o),
                         gateUp: QuantRef(l.gateUp), down: QuantRef(l.down),
                         sharedGate: l.sharedGate.map(QuantRef.init), sharedUp: l.sharedUp.map(QuantRef.init),
                         sharedDown: l.sharedDown.map(QuantRef.init))
        }
    }

    /// Float32 arrays the launches read besides the checkpoint tensors.
    static func constants(_ w: ModelWeights) -> [String: [Float]] {
        let c = w.config
        var out: [String: [Float]] = [
            "norm.final": w.finalNorm,
            "rope.inv_freq": ropeInverseFrequencies(headDim: c.headDim, theta: c.ropeTheta, scaling: c.ropeScaling),
            "zeros": [Float](repeating: 0, count: 64),
        ]
        for (i, l) in w.layers.enumerated() {
            out["norm.\(i).input"] = l.inputNorm
            out["norm.\(i).post"] = l.postAttentionNorm
            out["router.\(i)"] = l.router
            out["expert_bias.\(i)"] = l.expertBias
        }
        return out
    }

    /// Bytes of each scratch buffer for steps of at most `maxStep` tokens and top-k <= `maxK`.
    func scratchBytes(maxStep m: Int, maxK k: Int) -> [Scratch: Int] {
        let c = config, H = c.hiddenSize, QD = c.numAttentionHeads * c.headDim
        let S = c.intermediateSizeMLP
        return [
            .tokens: 4 * m, .h: 4 * m * H, .xn: 4 * m * H, .y: 4 * m * H,
            .q: 4 * m * QD, .attn: 4 * m * QD,
            .moeH: 4 * m * k * c.intermediateSize, .moeHS: 4 * max(m * S, 8),
            .sel: 4 * m * k, .selw: 4 * m * k, .ys: 4 * m * k * H, .ysh: 4 * max(S > 0 ? m * H : 0, 8),
            .last: 4 * H, .logits: 4 * c.vocabSize,
        ]
    }

    var kvRowFloats: Int { config.numKeyValueHeads * config.headDim }

    /// The launches of one step: `T` tokens (already in .tokens) at cache position `pos0`.
    func launches(tokens T: Int, position pos0: Int, expertsPerToken k: Int) -> [KernelLaunch] {
        let c = config, H = c.hiddenSize, D = c.headDim, nH = c.numAttentionHeads, nKV = c.numKeyValueHeads
        let eps = c.rmsNormEps, g = geometry
        var out: [KernelLaunch] = []
        func b(_ r: BufferRef, _ offset: Int = 0) -> Binding { Binding(ref: r, offset: offset) }
        func s(_ x: Scratch, _ offset: Int = 0) -> Binding { Binding(ref: .scratch(x), offset: offset) }
        /// A mobilemoe_ops.h kernel: its buffers, then dims and fp.
        func op(_ name: String, _ buffers: [Binding], dims: [Int], fp: [Float] = [], groups: Int) {
            out.append(KernelLaunch(name, buffers + [b(.dims), b(.fp)], dims: dims, fp: fp, groups: groups))
        }
        func linear(_ x: Binding, _ w: QuantRef, _ y: Binding, rows: Int, in inDim: Int, out outDim: Int, accumulate: Bool = false) {
            op("mobilemoe_linear", [x, b(w.words), b(w.scales), y], dims: [rows, inDim, outDim, accumulate ? 1 : 0],
               groups: ceilDiv(outDim, g.simdGroups) * ceilDiv(rows, g.linearTokens))
        }
        func rmsnorm(_ x: Binding, _ w: BufferRef?, _ y: Binding, rows: Int, n: Int) {
            op("mobilemoe_rmsnorm", [x, b(w ?? .constant("zeros")), y], dims: [rows, n, w == nil ? 0 : 1], fp: [eps], groups: rows)
        }

        op("mobilemoe_embed", [s(.tokens), b(embedding.words), b(embedding.scales), s(.h)], dims: [T, H],
           groups: ceilDiv(T * H, g.threads))
        let kvOffset = 4 * pos0 * kvRowFloats
        for (i, l) in layers.enumerated() {
            // h += o_proj(attn(rmsnorm_in(h)))
            rmsnorm(s(.h), .constant("norm.\(i).input"), s(.xn), rows: T, n: H)
            linear(s(.xn), l.q, s(.q), rows: T, in: H, out: nH * D)
            linear(s(.xn), l.k, b(.keys(i), kvOffset), rows: T, in: H, out: nKV * D)
            linear(s(.xn), l.v, b(.values(i), kvOffset), rows: T, in: H, out: nKV * D)
            let rope = c.usesRope(layer: i) ? 1 : 0, norm = c.usesQKNorm(layer: i) ? 1 : 0
            if rope + norm > 0 {
                for (x, heads) in [(s(.q), nH), (b(.keys(i), kvOffset), nKV)] {
                    op("mobilemoe_rope_norm", [x, b(.constant("rope.inv_freq"))], dims: [T * heads, heads, D, pos0, rope, norm],
                       fp: [eps], groups: ceilDiv(T * heads, g.simdGroups))
                }
            }
            op("mobilemoe_attention", [s(.q), b(.keys(i)), b(.values(i)), s(.attn)], dims: [T, nH, nKV, D, pos0],
               fp: [1 / Float(D).squareRoot()], groups: T * nH)
            linear(s(.attn), l.o, s(.h), rows: T, in: nH * D, out: H, accumulate: true)
            // h += routed(x) + shared(x), x = rmsnorm_post(h)
            rmsnorm(s(.h), .constant("norm.\(i).post"), s(.xn), rows: T, n: H)
            moe(layer: i, refs: l, tokens: T, k: k, into: &out)
            op("mobilemoe_add", [s(.h), s(.y)], dims: [T * H], groups: ceilDiv(T * H, g.threads))
        }
        rmsnorm(s(.h, 4 * (T - 1) * H), .constant("norm.final"), s(.last), rows: 1, n: H)
        linear(s(.last), embedding, s(.logits), rows: 1, in: H, out: c.vocabSize)
        return out
    }

    /// The fused MoE FFN of xn into y through the entry points of kernels/moe_kernels.metal
    /// (buffer orders and grids as documented there; float32 activations: the _f32 variants).
    private func moe(layer i: Int, refs l: GPULayerRefs, tokens T: Int, k: Int, into out: inout [KernelLaunch]) {
        let c = config, H = c.hiddenSize, I = c.intermediateSize, S = c.intermediateSizeMLP, E = c.numLocalExperts
        let dims = [T, H, I, S, E, k, c.normTopkProb ? 1 : 0]
        let fp = [c.routedScalingFactor]
        let g = geometry
        func b(_ r: BufferRef) -> Binding { Binding(ref: r) }
        func s(_ x: Scratch) -> Binding { Binding(ref: .scratch(x)) }
        func launch(_ name: String, _ bindings: [Binding], groups: Int) {
            out.append(KernelLaunch(name, bindings, dims: dims, fp: fp, groups: groups))
        }
        let zeros = b(.constant("zeros"))  // bound to the shared-expert slots when S = 0
        let shared: [Binding] = [l.sharedGate, l.sharedUp].flatMap { q in q.map { [b($0.words), b($0.scales)] } ?? [zeros, zeros] }
        let sharedDown: [Binding] = l.sharedDown.map { [b($0.words), b($0.scales)] } ?? [zeros, zeros]
        let router = b(.constant("router.\(i)")), bias = b(.constant("expert_bias.\(i)"))
        let gu = [b(l.gateUp.words), b(l.gateUp.scales)], dn = [b(l.down.words), b(l.down.scales)]
        if T <= KernelGeometry.decodeMaxTokens {
            let perToken = ceilDiv(k * (I / 8), g.pairsPerGroup) + (S > 0 ? ceilDiv(S, g.sharedRowsPerGroup) : 0)
            launch("moe_gate_up_decode_f32", [s(.xn), router, bias] + gu + shared + [b(.dims), b(.fp), s(.moeH), s(.moeHS), s(.sel), s(.selw)],
                   groups: T * perToken)
            launch("moe_down_decode_f32", [s(.moeH), s(.moeHS), s(.sel), s(.selw)] + dn + sharedDown + [b(.dims), s(.y)],
                   groups: T * ceilDiv(H / 8, g.downWordsPerGroup))
        } else {
            launch("moe_route_f32", [s(.xn), router, bias, b(.dims), b(.fp), s(.sel), s(.selw)], groups: ceilDiv(T, g.simdGroups))
            let sharedTiles = S > 0 ? ceilDiv(T, g.tileRows) * ceilDiv(S, g.tileHalf) : 0
            launch("moe_gate_up_prefill_f32", [s(.xn), s(.sel)] + gu + shared + [b(.dims), s(.moeH), s(.moeHS)],
                   groups: E * ceilDiv(I, g.tileHalf) + sharedTiles)
            launch("moe_down_prefill", [s(.moeH), s(.moeHS), s(.sel), s(.selw)] + dn + sharedDown + [b(.dims), s(.ys), s(.ysh)],
                   groups: (E + (S > 0 ? ceilDiv(T, g.tileRows) : 0)) * ceilDiv(H, 2 * g.tileHalf))
            launch("moe_combine_f32", [s(.ys), s(.ysh), b(.dims), s(.y)], groups: ceilDiv(T * H, g.threads))
        }
    }
}
