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
    public var maxPositionEmbeddings: Int = 131_072
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

    /// Llama 4 convention: no_rope_layers[i] == 1 means layer i applies RoPE.
    public func usesRope(layer: Int) -> Bool {
        noRopeLayers.isEmpty || noRopeLayers[layer] != 0
    }

    /// The weightless qk-norm runs on RoPE layers only (Llama 4).
    public func usesQKNorm(layer: Int) -> Bool { useQKNorm && usesRope(layer: layer) }
}

extension ModelConfig {
    static let required = ["vocab_size", "hidden_size", "intermediate_size", "intermediate_size_mlp",
                           "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim",
                           "num_local_experts", "num_experts_per_tok"]
    static let optional = ["rms_norm_eps", "rope_theta", "rope_scaling", "max_position_embeddings",
                           "routed_scaling_factor", "norm_topk_prob", "use_qk_norm", "tie_word_embeddings",
                           "interleave_moe_layer_step", "no_rope_layers", "layer_types", "bos_token_id",
                           "eos_token_id", "quantization", "model_type", "architectures", "hidden_act",
                           "attention_bias"]
    /// Keys Hugging Face writes that say nothing about the forward pass.
    static let housekeeping: Set<String> = [
        "_name_or_path", "auto_map", "torch_dtype", "dtype", "transformers_version", "use_cache",
        "initializer_range", "attention_dropout", "pad_token_id", "output_router_logits",
        "router_aux_loss_coef", "router_jitter_noise", "pretraining_tp", "return_dict"]
    static let officialQuantization: [String: JSONValue] = [
        "format": .string(quantFormat), "group_size": .number(32), "embedding_group_size": .number(32),
        "qmin": .number(-8), "qmax": .number(7), "symmetric": .bool(true), "scale_dtype": .string("float16"),
        "packed": .bool(true)]

    public init(contentsOf url: URL) throws {
        let data: Data
        do { data = try Data(contentsOf: url) } catch { throw ConfigError("cannot read \(url.path): \(error)") }
        let json: JSONValue
        do { json = try JSONValue.parse(data) } catch { throw ConfigError("not valid JSON: \(error)") }
        try self.init(json: json)
    }

    public init(json: JSONValue) throws {
        guard let d = json.object else { throw ConfigError("top level is not an object") }
        let missing = Self.required.filter { d[$0] == nil }
        guard missing.isEmpty else { throw ConfigError("missing required field(s): \(missing.joined(separator: ", "))") }
        let known = Set(Self.required + Self.optional)
        let unknown = d.keys.filter { !known.contains($0) && !Self.housekeeping.contains($0) }.sorted()
        guard unknown.isEmpty else {
            throw ConfigError("field(s) this implementation does not know: \(unknown.joined(separator: ", ")); refusing to guess what they change")
        }

        func int(_ k: String) throws -> Int {
            guard let v = d[k]?.int, v >= 0 else { throw ConfigError("\(k) must be a non-negative integer, got \(d[k].map { "\($0)" } ?? "nothing")") }
            return v
        }
        func number(_ k: String, _ def: Double) throws -> Double {
            guard let v = d[k], !v.isNull else { return def }
            guard let x = v.double else { throw ConfigError("\(k) must be a number") }
            return x
        }
        func bool(_ k: String, _ def: Bool) throws -> Bool {
            guard let v = d[k], !v.isNull else { return def }
            guard let b = v.bool else { throw ConfigError("\(k) must be true or false") }
            return b
        }
        func ints(_ v: JSONValue, _ k: String) throws -> [Int] {
            if let i = v.int { return [i] }
            guard let a = v.array else { throw ConfigError("\(k) must be an integer or a list of integers") }
            return try a.map { guard let i = $0.int else { throw ConfigError("\(k) must hold integers") }; return i }
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
        rmsNormEps = Float(try number("rms_norm_eps", 1e-5))
        ropeTheta = try number("rope_theta", 500_000)
        if d["max_position_embeddings"] != nil { maxPositionEmbeddings = try int("max_position_embeddings") }
        routedScalingFactor = Float(try number("routed_scaling_factor", 1))
        normTopkProb = try bool("norm_topk_prob", true)
        useQKNorm = try bool("use_qk_norm", true)
        tieWordEmbeddings = try bool("tie_word_embeddings", true)
        if d["interleave_moe_layer_step"] != nil { interleaveMoeLayerStep = try int("interleave_moe_layer_step") }
        if let v = d["no_rope_layers"], !v.isNull { noRopeLayers = try ints(v, "no_rope_layers") }
        if let v = d["layer_types"], !v.isNull {
            guard let a = v.array?.compactMap(\.string), a.count == v.array?.count else { throw ConfigError("layer_types must be a list of strings") }
            layerTypes = a
        }
        if let v = d["bos_token_id"], !v.isNull {
            guard let b = v.int else { throw ConfigError("bos_token_id must be an integer") }
            bosTokenId = b
        }
        if let v = d["eos_token_id"], !v.isNull { eosTokenIds = try ints(v, "eos_token_id") }
        if let v = d["model_type"] { modelType = v.string ?? "\(v)" }
        if let v = d["hidden_act"], v.string != "silu" {
            throw ConfigError("hidden_act \(v) is not supported (MobileMoE uses silu)")
        }
        if try bool("attention_bias", false) { throw ConfigError("attention_bias=true is not part of MobileMoE") }
        if let v = d["rope_scaling"], !v.isNull { ropeScaling = try Self.parseRopeScaling(v) }
        if let q = d["quantization"], !q.isNull {
            guard let qo = q.object else { throw ConfigError("quantization must be an object") }
            guard qo["format"]?.string == Self.quantFormat else {
                throw ConfigError("quantization format \(qo["format"].map { "\($0)" } ?? "nothing") is not supported (expected '\(Self.quantFormat)')")
            }
            let differing = Self.officialQuantization.keys.filter { k in qo[k].map { $0 != Self.officialQuantization[k] } ?? false }
            guard differing.isEmpty else {
                throw ConfigError("quantization settings \(differing.sorted()) differ from the official int4 g32 format")
            }
            isQuantized = true
        }
        try validate()
    }

    static func parseRopeScaling(_ v: JSONValue) throws -> RopeScaling? {
        guard let o = v.object else { throw ConfigError("rope_scaling must be an object") }
        let kind = o["rope_type"]?.string ?? o["type"]?.string
        if kind == nil || kind == "default" { return nil }
        guard kind == "llama3" else { throw ConfigError("rope_scaling type '\(kind!)' is not supported (llama3 only)") }
        let need = ["factor", "original_max_position_embeddings", "low_freq_factor", "high_freq_factor"]
        let miss = need.filter { o[$0]?.double == nil }
        guard miss.isEmpty else { throw ConfigError("rope_scaling is missing \(miss.joined(separator: ", "))") }
        return RopeScaling(ropeType: "llama3", factor: o["factor"]!.double!,
                           originalMaxPositionEmbeddings: o["original_max_position_embeddings"]!.double!,
                           lowFreqFactor: o["low_freq_factor"]!.double!, highFreqFactor: o["high_freq_factor"]!.double!)
    }

    public func validate() throws {
        if modelType != "mobilemoe" { throw ConfigError("model_type is '\(modelType)', expected 'mobilemoe'") }
        if interleaveMoeLayerStep != 1 {
            throw ConfigError("interleave_moe_layer_step != 1 (dense layers between MoE layers) is not supported; got \(interleaveMoeLayerStep)")
        }
        if intermediateSize == 0 || (intermediateSizeMLP > 0 && intermediateSizeMLP % intermediateSize != 0) {
            throw ConfigError("shared expert width intermediate_size_mlp=\(intermediateSizeMLP) is not a multiple of the routed expert width intermediate_size=\(intermediateSize)")
        }
        if numKeyValueHeads == 0 || numAttentionHeads % numKeyValueHeads != 0 {
            throw ConfigError("num_attention_heads must be a multiple of num_key_value_heads")
        }
        if !(1...max(numLocalExperts, 1)).contains(numExpertsPerTok) || numLocalExperts == 0 {
            throw ConfigError("num_experts_per_tok=\(numExpertsPerTok) must be in 1..num_local_experts=\(numLocalExperts)")
        }
        if !tieWordEmbeddings { throw ConfigError("untied word embeddings are not part of the MobileMoE checkpoint contract") }
        if headDim % 2 != 0 { throw ConfigError("head_dim must be even for RoPE") }
        if !noRopeLayers.isEmpty && noRopeLayers.count != numHiddenLayers {
            throw ConfigError("no_rope_layers has \(noRopeLayers.count) entries for \(numHiddenLayers) layers")
        }
        if let lt = layerTypes {
            if lt.count != numHiddenLayers { throw ConfigError("layer_types has \(lt.count) entries for \(numHiddenLayers) layers") }
            let other = Set(lt).subtracting(["full_attention"]).sorted()
            if !other.isEmpty { throw ConfigError("layer_types \(other) are not supported (only full_attention)") }
        }
        if isQuantized {
            for (name, n) in [("hidden_size", hiddenSize), ("intermediate_size", intermediateSize),
                              ("intermediate_size_mlp", intermediateSizeMLP), ("num_attention_heads * head_dim", numAttentionHeads * headDim)]
            where n % 32 != 0 {
                throw ConfigError("\(name)=\(n) is not a multiple of the int4 group size 32")
            }
        }
    }
}
