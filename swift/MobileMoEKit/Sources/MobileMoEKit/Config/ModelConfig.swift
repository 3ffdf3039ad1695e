// port of mlx_mobilemoe/config.py (ModelArgs): the fields of an official MobileMoE
// config.json, the same names, defaults and checks, so both sides accept the same files.
import Foundation

public struct ConfigError: Error, CustomStringConvertible, Equatable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { "config.json: \(message)" }
}

public struct RopeScaling: Equatable, Sendable {
    public var ropeType: String
    public var factor: Double
    public var originalMaxPositionEmbeddings: Double
    public var lowFreqFactor: Double
    public var highFreqFactor: Double
}

public struct ModelConfig: Equatable, Sendable {
    public static let quantFormat = "mobilemoe-int4-g32"

    public var vocabSize: Int
    public var hiddenSize: Int
    /// Width of one routed expert.
    public var intermediateSize: Int
    /// Width of the shared expert (0 = none).
    public var intermediateSizeMLP: Int
    public var numHiddenLayers: Int
    public var numAttentionHeads: Int
    public var numKeyValueHeads: Int
    public var headDim: Int
    public var numLocalExperts: Int
    public var numExpertsPerTok: Int
    public var rmsNormEps: Float = 1e-5
    public var ropeTheta: Double = 500_000
    public var ropeScaling: RopeScaling? = nil
    public var maxPositionEmbeddings: Int = 8192
    public var routedScalingFactor: Float = 1
    public var normTopkProb: Bool = true
    public var useQKNorm: Bool = true
    public var tieWordEmbeddings: Bool = true
    public var interleaveMoeLayerStep: Int = 1
    public var noRopeLayers: [Int] = []
    public var layerTypes: [String]? = nil
    public var bosTokenId: Int? = nil
    public var eosTokenIds: [Int] = []
    /// True when config.json carries the `quantization` block (QAT int4 g32 checkpoint).
    public var isQuantized: Bool = false
    public var modelType: String = "mobilemoe"
    /// The dtype of the checkpoint's float tensors (bfloat16, float16 or float32).
    public var torchDType: String = "bfloat16"

    /// Llama 4 convention: no_rope_layers[i] == 1 means layer i applies RoPE.
    public func usesRope(layer: Int) -> Bool {
        noRopeLayers.isEmpty || noRopeLayers[layer] != 0
    }

    /// The weightless qk-norm runs on RoPE layers only (Llama 4).
    public func usesQKNorm(layer: Int) -> Bool { useQKNorm && usesRope(layer: layer) }
}

extension ModelConfig {
    // The rules below are those of mlx_mobilemoe/config.py (ModelArgs.from_dict / validate):
    // tests/fixtures/config_contract.json holds cases both sides must judge alike.
    static let required = ["vocab_size", "hidden_size", "intermediate_size", "intermediate_size_mlp",
                           "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim",
                           "num_local_experts", "num_experts_per_tok"]
    static let optional = ["rms_norm_eps", "rope_theta", "rope_scaling", "max_position_embeddings",
                           "routed_scaling_factor", "norm_topk_prob", "use_qk_norm", "tie_word_embeddings",
                           "interleave_moe_layer_step", "no_rope_layers", "layer_types", "bos_token_id",
                           "eos_token_id", "quantization", "model_type", "architectures", "hidden_act",
                           "attention_bias", "attn_temperature_tuning", "attention_dropout", "torch_dtype"]
    /// Keys Hugging Face writes that say nothing about the forward pass (not checked).
    static let housekeeping: Set<String> = [
        "_name_or_path", "auto_map", "dtype", "transformers_version", "use_cache",
        "initializer_range", "pad_token_id", "output_router_logits",
        "router_aux_loss_coef", "router_jitter_noise", "pretraining_tp", "return_dict"]
    /// The quantization block of a released QAT config.json: every key and its only value.
    /// Keys left out take these values (older files written here lack the two axis strings);
    /// keys not listed are refused.
    static let officialQuantization: [String: JSONValue] = [
        "format": .string(quantFormat), "group_size": .integer(32), "embedding_group_size": .integer(32),
        "qmin": .integer(-8), "qmax": .integer(7), "symmetric": .bool(true), "scale_dtype": .string("float16"),
        "packed": .bool(true), "linear_group_axis": .string("in (last dim of [out, in])"),
        "expert_group_axis": .string("out (last dim of [E, in, out])")]
    static let floatDTypes = ["bfloat16", "float16", "float32"]
    /// Upper bounds of the sizes: far above any MobileMoE model, low enough that no size the
    /// loader or a backend derives from them can overflow (the same bounds as Python's).
    public static let sizeLimits: [(String, Int)] = [
        ("vocab_size", 1 << 22), ("hidden_size", 1 << 16), ("intermediate_size", 1 << 18),
        ("intermediate_size_mlp", 1 << 18), ("num_hidden_layers", 1024), ("num_attention_heads", 1024),
        ("num_key_value_heads", 1024), ("head_dim", 4096), ("num_local_experts", 4096),
        ("num_experts_per_tok", 4096), ("max_position_embeddings", 1 << 24)]
    static let ropeScalingKeys: Set<String> = ["rope_type", "type", "factor", "original_max_position_embeddings",
                                               "low_freq_factor", "high_freq_factor"]

    /// Reads config.json: a regular file of at most FileLimits.smallJSON bytes, UTF-8 JSON.
    public init(contentsOf url: URL) throws {
        let data: Data
        do { data = try RegularFile.read(url.path, limit: FileLimits.smallJSON) } catch { throw ConfigError("cannot read \(url.path): \(error)") }
        let json: JSONValue
        do { json = try JSONValue.parse(data) } catch { throw ConfigError("not valid JSON: \(error)") }
        try self.init(json: json)
    }

    public init(json: JSONValue) throws {
        guard let d = json.object else { throw ConfigError("config is a JSON \(json.kindName), not an object") }
        let missing = Self.required.filter { d[$0] == nil }
        guard missing.isEmpty else { throw ConfigError("missing required field(s): \(missing.joined(separator: ", "))") }
        let known = Set(Self.required + Self.optional)
        let unknown = d.keys.filter { !known.contains($0) && !Self.housekeeping.contains($0) }.sorted()
        guard unknown.isEmpty else {
            throw ConfigError("field(s) this implementation does not know: \(unknown.joined(separator: ", ")); refusing to guess what they change")
        }

        /// An integer field (a JSON integer literal), range-checked by validate().
        func int(_ k: String) throws -> Int {
            guard let v = d[k]?.int else { throw ConfigError("\(k) must be an integer, got \(d[k].map { "\($0)" } ?? "nothing")") }
            return v
        }
        /// A finite number > 0 (absent: the default; null, false, 0, NaN or a string: an error).
        func positive(_ k: String, _ def: Double) throws -> Double {
            guard let v = d[k] else { return def }
            guard let x = v.double, x.isFinite, x > 0 else { throw ConfigError("\(k) must be a finite positive number, got \(v)") }
            return x
        }
        func bool(_ k: String, _ def: Bool) throws -> Bool {
            guard let v = d[k] else { return def }
            guard let b = v.bool else { throw ConfigError("\(k) must be true or false, got \(v)") }
            return b
        }
        func string(_ k: String, _ def: String) throws -> String {
            guard let v = d[k] else { return def }
            guard let s = v.string else { throw ConfigError("\(k) must be a string, got \(v)") }
            return s
        }

        vocabSize = try int("vocab_size")
        hiddenSize = try int("hidden_size")
        intermediateSize = try int("intermediate_size")
        intermediateSizeMLP = try int("intermediate_size_mlp")
        numHiddenLayers = try int("num_hidden_layers")
        numAttentionHeads = try int("num_attention_heads")
        numKeyValueHeads = try int("num_key_value_heads")
        headDim = try int("head_dim")
        numLocalExperts = try int("num_local_experts")
        numExpertsPerTok = try int("num_experts_per_tok")
        if d["max_position_embeddings"] != nil { maxPositionEmbeddings = try int("max_position_embeddings") }
        if d["interleave_moe_layer_step"] != nil { interleaveMoeLayerStep = try int("interleave_moe_layer_step") }
        modelType = try string("model_type", "mobilemoe")
        torchDType = try string("torch_dtype", "bfloat16")
        let act = try string("hidden_act", "silu")
        if let v = d["architectures"] {
            guard let a = v.array, a.allSatisfy({ $0.string != nil }), a.contains(.string("MobileMoEForCausalLM")) else {
                throw ConfigError("architectures must be a list of strings naming MobileMoEForCausalLM, got \(v)")
            }
        }
        try Self.checkSizes(self)  // before anything is derived from the sizes

        let eps = try positive("rms_norm_eps", 1e-5)
        guard eps < 1 else { throw ConfigError("rms_norm_eps must be below 1, got \(eps)") }
        rmsNormEps = Float(eps)
        guard rmsNormEps > 0 else { throw ConfigError("rms_norm_eps \(eps) underflows float32") }
        // Upper bounds as config.py's (rope_theta 1e15, routed_scaling_factor 1e6).
        func atMost(_ k: String, _ def: Double, _ top: Double) throws -> Double {
            let x = try positive(k, def)
            guard x <= top else { throw ConfigError("\(k) must be at most \(top), got \(d[k]!)") }
            return x
        }
        ropeTheta = try atMost("rope_theta", 500_000, 1e15)
        routedScalingFactor = Float(try atMost("routed_scaling_factor", 1, 1e6))
        guard routedScalingFactor.isFinite else { throw ConfigError("routed_scaling_factor \(d["routed_scaling_factor"]!) overflows float32") }
        if let v = d["attention_dropout"], !(v.double.map { $0.isFinite && $0 >= 0 && $0 < 1 } ?? false) {
            throw ConfigError("attention_dropout must be a number in [0, 1), got \(v)")
        }
        normTopkProb = try bool("norm_topk_prob", true)
        useQKNorm = try bool("use_qk_norm", true)
        tieWordEmbeddings = try bool("tie_word_embeddings", true)
        let attentionBias = try bool("attention_bias", false)
        let temperatureTuning = try bool("attn_temperature_tuning", false)
        if !Self.floatDTypes.contains(torchDType) {
            throw ConfigError("torch_dtype '\(torchDType)' is not one of \(Self.floatDTypes.joined(separator: ", "))")
        }
        if let v = d["no_rope_layers"] {
            guard let a = v.array else { throw ConfigError("no_rope_layers must be a list of 0/1 flags, got \(v)") }
            noRopeLayers = try a.map { f in
                guard let i = f.int, i == 0 || i == 1 else { throw ConfigError("no_rope_layers must be a list of 0/1 flags, got \(f) in it") }
                return i
            }
        }
        if let v = d["layer_types"], !v.isNull {
            guard let a = v.array?.compactMap(\.string), a.count == v.array?.count else { throw ConfigError("layer_types must be a list of strings, got \(v)") }
            layerTypes = a
        }
        if let v = d["bos_token_id"], !v.isNull {
            guard let b = v.int, (0..<vocabSize).contains(b) else {
                throw ConfigError("bos_token_id must be an integer in 0..\(vocabSize - 1) (vocab_size), got \(v)")
            }
            bosTokenId = b
        }
        if let v = d["eos_token_id"], !v.isNull {
            let items = v.array ?? [v]
            eosTokenIds = try items.map {
                guard let i = $0.int, (0..<vocabSize).contains(i) else {
                    throw ConfigError("eos_token_id must be an integer or a list of integers in 0..\(vocabSize - 1) (vocab_size), got \(v)")
                }
                return i
            }
        }
        if modelType != "mobilemoe" { throw ConfigError("model_type is '\(modelType)', expected 'mobilemoe'") }
        if act != "silu" { throw ConfigError("hidden_act '\(act)' is not supported (MobileMoE uses silu)") }
        if attentionBias { throw ConfigError("attention_bias=true is not part of MobileMoE") }
        if temperatureTuning {
            throw ConfigError("attn_temperature_tuning=true (Llama 4's query temperature scaling) is not implemented; the released MobileMoE models set it to false")
        }
        if let v = d["rope_scaling"], !v.isNull { ropeScaling = try Self.parseRopeScaling(v) }
        if let q = d["quantization"], !q.isNull {
            try Self.checkQuantization(q)
            isQuantized = true
        }
        try validate()
    }

    static func parseRopeScaling(_ v: JSONValue) throws -> RopeScaling? {
        guard let o = v.object else { throw ConfigError("rope_scaling must be an object or null, got \(v)") }
        let kindValue = o["rope_type"] ?? o["type"] ?? .null
        guard kindValue.isNull || ["llama3", "default"].contains(kindValue.string ?? "") else {
            throw ConfigError("rope_scaling.rope_type \(kindValue) is not supported (llama3 only)")
        }
        guard kindValue.string == "llama3" else { return nil }
        var x: [String: Double] = [:]
        for k in ["factor", "original_max_position_embeddings", "low_freq_factor", "high_freq_factor"] {
            guard let raw = o[k] else { throw ConfigError("rope_scaling.\(k) is missing") }
            guard let d = raw.double, d.isFinite, d > 0, d <= 1e9 else { throw ConfigError("rope_scaling.\(k) must be a finite positive number, got \(raw)") }
            x[k] = d
        }
        guard o["original_max_position_embeddings"]?.int != nil else {
            throw ConfigError("rope_scaling.original_max_position_embeddings must be an integer, got \(o["original_max_position_embeddings"]!)")
        }
        guard x["factor"]! >= 1 else { throw ConfigError("rope_scaling.factor must be >= 1, got \(x["factor"]!)") }
        guard x["high_freq_factor"]! >= x["low_freq_factor"]! else { throw ConfigError("rope_scaling.high_freq_factor must be >= low_freq_factor") }
        let extra = Set(o.keys).subtracting(ropeScalingKeys).sorted()
        guard extra.isEmpty else { throw ConfigError("rope_scaling has field(s) this implementation does not know: \(extra.joined(separator: ", "))") }
        return RopeScaling(ropeType: "llama3", factor: x["factor"]!, originalMaxPositionEmbeddings: x["original_max_position_embeddings"]!,
                           lowFreqFactor: x["low_freq_factor"]!, highFreqFactor: x["high_freq_factor"]!)
    }

    static func checkQuantization(_ q: JSONValue) throws {
        guard let qo = q.object else { throw ConfigError("quantization must be an object or null, got \(q)") }
        guard qo["format"]?.sameValue(as: .string(quantFormat)) == true else {
            throw ConfigError("quantization.format \(qo["format"].map { "\($0)" } ?? "nothing") is not supported (expected '\(quantFormat)')")
        }
        let differing = officialQuantization.keys.filter { k in qo[k].map { !$0.sameValue(as: officialQuantization[k]!) } ?? false }.sorted()
        guard differing.isEmpty else {
            throw ConfigError("quantization settings \(differing.map { "\($0)=\(qo[$0]!)" }.joined(separator: ", ")) differ from the official int4 g32 format")
        }
        let extra = qo.keys.filter { officialQuantization[$0] == nil }.sorted()
        guard extra.isEmpty else { throw ConfigError("quantization has field(s) this implementation does not know: \(extra.joined(separator: ", "))") }
    }

    static func checkSizes(_ c: ModelConfig) throws {
        let values: [String: Int] = [
            "vocab_size": c.vocabSize, "hidden_size": c.hiddenSize, "intermediate_size": c.intermediateSize,
            "intermediate_size_mlp": c.intermediateSizeMLP, "num_hidden_layers": c.numHiddenLayers,
            "num_attention_heads": c.numAttentionHeads, "num_key_value_heads": c.numKeyValueHeads, "head_dim": c.headDim,
            "num_local_experts": c.numLocalExperts, "num_experts_per_tok": c.numExpertsPerTok,
            "max_position_embeddings": c.maxPositionEmbeddings]
        for (name, limit) in sizeLimits {
            let low = name == "intermediate_size_mlp" ? 0 : 1
            let v = values[name]!
            if v < low || v > limit { throw ConfigError("\(name) must be an integer in \(low)..\(limit), got \(v)") }
        }
    }

    /// The checks that hold for any ModelConfig (its fields are public vars: the weight
    /// loader runs this again, so every size it derives is known to be in range).
    public func validate() throws {
        try Self.checkSizes(self)
        if modelType != "mobilemoe" { throw ConfigError("model_type is '\(modelType)', expected 'mobilemoe'") }
        if interleaveMoeLayerStep != 1 {
            throw ConfigError("interleave_moe_layer_step != 1 (dense layers between MoE layers) is not supported; got \(interleaveMoeLayerStep)")
        }
        if intermediateSizeMLP % intermediateSize != 0 {
            throw ConfigError("shared expert width intermediate_size_mlp=\(intermediateSizeMLP) is not a multiple of the routed expert width intermediate_size=\(intermediateSize)")
        }
        if numAttentionHeads % numKeyValueHeads != 0 {
            throw ConfigError("num_attention_heads must be a multiple of num_key_value_heads")
        }
        if numExpertsPerTok > numLocalExperts {
            throw ConfigError("num_experts_per_tok=\(numExpertsPerTok) must be in 1..num_local_experts=\(numLocalExperts)")
        }
        if !tieWordEmbeddings { throw ConfigError("tie_word_embeddings=false (untied embeddings) is not part of the MobileMoE checkpoint contract") }
        if headDim % 2 != 0 { throw ConfigError("head_dim must be even for RoPE") }
        if !noRopeLayers.isEmpty && noRopeLayers.count != numHiddenLayers {
            throw ConfigError("no_rope_layers has \(noRopeLayers.count) entries for \(numHiddenLayers) layers")
        }
        if let lt = layerTypes {
            if lt.count != numHiddenLayers { throw ConfigError("layer_types has \(lt.count) entries for \(numHiddenLayers) layers") }
            let other = Set(lt).subtracting(["full_attention"]).sorted()
            if !other.isEmpty { throw ConfigError("layer_types \(other) are not supported (only full_attention)") }
        }
        if let b = bosTokenId, !(0..<vocabSize).contains(b) { throw ConfigError("bos_token_id \(b) is outside 0..\(vocabSize - 1) (vocab_size)") }
        if let e = eosTokenIds.first(where: { !(0..<vocabSize).contains($0) }) {
            throw ConfigError("eos_token_id \(e) is outside 0..\(vocabSize - 1) (vocab_size)")
        }
        if isQuantized {
            for (name, n) in [("hidden_size", hiddenSize), ("2 * intermediate_size", 2 * intermediateSize),
                              ("intermediate_size_mlp", intermediateSizeMLP), ("num_attention_heads * head_dim", numAttentionHeads * headDim)]
            where n % 32 != 0 {
                throw ConfigError("\(name)=\(n) is not a multiple of the int4 group size 32")
            }
        }
    }
}
