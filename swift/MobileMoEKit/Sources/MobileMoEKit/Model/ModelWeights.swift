// The checkpoint contract (DESIGN.md §3) on the Swift side: maps the official tensor names of a
// QAT (int4 g32) or BF16 checkpoint to typed matrices, checks every dtype and shape, and names
// any tensor it does not know. Nothing is copied except the small float vectors.

public struct LayerWeights: Sendable {
    public var inputNorm: [Float]
    public var postAttentionNorm: [Float]
    public var q, k, v, o: WeightMatrix           // [out, in]
    public var router: [Float]                    // [E, H] float32
    public var expertBias: [Float]                // [E]
    public var gateUp: WeightMatrix               // E*H rows of 2I (gate columns first)
    public var down: WeightMatrix                 // E*I rows of H
    public var sharedGate, sharedUp, sharedDown: WeightMatrix?  // [S, H], [S, H], [H, S]
}

public struct ModelWeights: Sendable {
    public let config: ModelConfig
    public let embedding: WeightMatrix            // [V, H]; also the tied head
    public let finalNorm: [Float]
    public let layers: [LayerWeights]

    public init(config c: ModelConfig, store: TensorStore) throws {
        // ModelConfig's fields are public vars: re-check, so every size below (products
        // included) is known to fit in Int before it is computed.
        try c.validate()
        var used = Set<String>()
        func take(_ name: String) throws -> TensorView {
            used.insert(name)
            return try store.tensor(name)
        }
        let floats: [DType] = [.bf16, .f16, .f32]
        func vector(_ name: String, _ n: Int) throws -> [Float] {
            let t = try take(name)
            try t.expect(dtype: floats, shape: [n])
            return t.floats()
        }
        /// A linear [out, in] (or the embedding): `prefix.qweight/.weight_scale` or `prefix.weight`.
        func linear(_ prefix: String, out: Int, in inDim: Int) throws -> WeightMatrix {
            if c.isQuantized {
                let q = try take(prefix + ".qweight"), s = try take(prefix + ".weight_scale")
                try q.expect(dtype: [.u8], shape: [out, inDim / 2])
                try s.expect(dtype: [.f16], shape: [out, inDim / 32])
                return WeightMatrix(int4: q, scales: s, rows: out, cols: inDim)
            }
            let w = try take(prefix + ".weight")
            try w.expect(dtype: floats, shape: [out, inDim])
            return WeightMatrix(dense: w, rows: out, cols: inDim)
        }
        /// Stacked experts [E, in, out] (x @ W): `qname/sname` (QAT) or `dname` (BF16).
        func experts(q qname: String, scale sname: String, dense dname: String, e: Int, in inDim: Int, out: Int) throws -> WeightMatrix {
            if c.isQuantized {
                let q = try take(qname), s = try take(sname)
                try q.expect(dtype: [.u8], shape: [e, inDim, out / 2])
                try s.expect(dtype: [.f16], shape: [e, inDim, out / 32])
                return WeightMatrix(int4: q, scales: s, rows: e * inDim, cols: out)
            }
            let w = try take(dname)
            try w.expect(dtype: floats, shape: [e, inDim, out])
            return WeightMatrix(dense: w, rows: e * inDim, cols: out)
        }

        let H = c.hiddenSize, D = c.headDim, E = c.numLocalExperts, I = c.intermediateSize, S = c.intermediateSizeMLP
        config = c
        embedding = try linear("model.embed_tokens", out: c.vocabSize, in: H)
        finalNorm = try vector("model.norm.weight", H)
        layers = try (0..<c.numHiddenLayers).map { i in
            let p = "model.layers.\(i)."
            let ff = p + "feed_forward."
            let router = try take(ff + "router.weight")
            try router.expect(dtype: floats, shape: [E, H])
            let hasShared = S > 0
            return LayerWeights(
                inputNorm: try vector(p + "input_layernorm.weight", H),
                postAttentionNorm: try vector(p + "post_attention_layernorm.weight", H),
                q: try linear(p + "self_attn.q_proj", out: c.numAttentionHeads * D, in: H),
                k: try linear(p + "self_attn.k_proj", out: c.numKeyValueHeads * D, in: H),
                v: try linear(p + "self_attn.v_proj", out: c.numKeyValueHeads * D, in: H),
                o: try linear(p + "self_attn.o_proj", out: H, in: c.numAttentionHeads * D),
                router: router.floats(),
                expertBias: try vector(ff + "expert_bias", E),
                gateUp: try experts(q: ff + "experts.gate_up_qweight", scale: ff + "experts.gate_up_scale",
                                    dense: ff + "experts.gate_up_proj", e: E, in: H, out: 2 * I),
                down: try experts(q: ff + "experts.down_qweight", scale: ff + "experts.down_scale",
                                  dense: ff + "experts.down_proj", e: E, in: I, out: H),
                sharedGate: hasShared ? try linear(ff + "shared_expert.gate_proj", out: S, in: H) : nil,
                sharedUp: hasShared ? try linear(ff + "shared_expert.up_proj", out: S, in: H) : nil,
                sharedDown: hasShared ? try linear(ff + "shared_expert.down_proj", out: H, in: S) : nil)
        }
        let unknown = store.tensors.keys.filter { !used.contains($0) }.sorted()
        guard unknown.isEmpty else {
            let shown = unknown.prefix(8).joined(separator: ", ") + (unknown.count > 8 ? ", … (\(unknown.count) in all)" : "")
            throw CheckpointError.unknownTensors(shown, layout: c.isQuantized ? "QAT int4" : "BF16")
        }
    }
}

public enum CheckpointError: Error, CustomStringConvertible {
    case unknownTensors(String, layout: String)
    case missingFile(String)
    case unsupported(String)

    public var description: String {
        switch self {
        case let .unknownTensors(names, layout): return "checkpoint has tensors the \(layout) layout does not know: \(names)"
        case let .missingFile(what): return "checkpoint file missing: \(what)"
        case let .unsupported(why): return "unsupported checkpoint: \(why)"
        }
    }
}
