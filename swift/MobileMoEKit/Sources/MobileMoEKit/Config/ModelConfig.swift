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
                           "attention_bias", "attn_temperature_tuning"]
    /// Keys Hugging Face writes that say nothing about the forward pass (types still checked
    /// where a wrong type would show a broken file: see `checkHousekeeping`).
    static let housekeeping: Set<String> = [
        "_name_or_path", "auto_map", "torch_dtype", "dtype", "transformers_version", "use_cache",
        "initializer_range", "attention_dropout", "pad_token_id", "output_router_logits",
        "router_aux_loss_coef", "router_jitter_noise", "pretraining_tp", "return_dict"]
    /// The quantization block of a released QAT config.json: every key, its only value.
    /// `linear_group_axis` / `expert_group_axis` are descriptive strings the released files
    /// carry (older files written here lack them: both are optional, but must match if present).
    static let officialQuantization: [String: JSONValue] = [
        "format": .string(quantFormat), "group_size": .integer(32), "embedding_group_size": .integer(32),
        "qmin": .integer(-8), "qmax": .integer(7), "symmetric": .bool(true), "scale_dtype": .string("float16"),
        "packed": .bool(true), "linear_group_axis": .string("in (last dim of [out, in])"),
        "expert_group_axis": .string("out (last dim of [E, in, out])")]
    static let optionalQuantizationKeys: Set<String> = ["linear_group_axis", "expert_group_axis"]
    static let torchDTypes: Set<String> = ["bfloat16", "float16", "float32"]

    /// Reads config.json: a regular file of at most FileLimits.smallJSON bytes, UTF-8 JSON.
    public init(contentsOf url: URL) throws {
        let data: Data
        do { data = try RegularFile.read(url.path, limit: FileLimits.smallJSON) } catch { throw ConfigError("cannot read \(url.path): \(error)") }
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

        /// A present, non-null value (nil when the key is absent or null).
        func given(_ k: String) -> JSONValue? {
            guard let v = d[k], !v.isNull else { return nil }
            return v
        }
        func show(_ v: JSONValue?) -> String { v.map { "\($0)" } ?? "nothing" }
        func int(_ k: String, min lo: Int) throws -> Int {
            guard let v = d[k]?.int, v >= lo else {
                throw ConfigError("\(k) must be an integer >= \(lo), got \(show(d[k]))")
            }
            return v
        }
        /// A finite number > 0 (absent: the default; null, false, 0 or a string: an error).
        func positive(_ k: String, _ def: Double) throws -> Double {
            guard let v = d[k] else { return def }
            guard let x = v.double, x.isFinite, x > 0 else { throw ConfigError("\(k) must be a finite number > 0, got \(v)") }
            return x
        }
        func bool(_ k: String, _ def: Bool) throws -> Bool {
            guard let v = d[k] else { return def }
            guard let b = v.bool else { throw ConfigError("\(k) must be true or false, got \(v)") }
            return b
        }
        func ints(_ v: JSONValue, _ k: String) throws -> [Int] {
            if let i = v.int, i >= 0 { return [i] }
            guard let a = v.array else { throw ConfigError("\(k) must be an integer or a list of integers") }
            return try a.map { guard let i = $0.int, i >= 0 else { throw ConfigError("\(k) must hold integers >= 0, got \($0)") }; return i }
        }

        vocabSize = try int("vocab_size", min: 1)
        hiddenSize = try int("hidden_size", min: 1)
        intermediateSize = try int("intermediate_size", min: 1)
        intermediateSizeMLP = try int("intermediate_size_mlp", min: 0)
        numHiddenLayers = try int("num_hidden_layers", min: 1)
        numAttentionHeads = try int("num_attention_heads", min: 1)
        numKeyValueHeads = try int("num_key_value_heads", min: 1)
        headDim = try int("head_dim", min: 2)
        numLocalExperts = try int("num_local_experts", min: 1)
        numExpertsPerTok = try int("num_experts_per_tok", min: 1)
        rmsNormEps = Float(try positive("rms_norm_eps", 1e-5))
        guard rmsNormEps > 0 else { throw ConfigError("rms_norm_eps \(d["rms_norm_eps"]!) underflows float32") }
        ropeTheta = try positive("rope_theta", 500_000)
        if d["max_position_embeddings"] != nil { maxPositionEmbeddings = try int("max_position_embeddings", min: 1) }
        routedScalingFactor = Float(try positive("routed_scaling_factor", 1))
        guard routedScalingFactor.isFinite else { throw ConfigError("routed_scaling_factor \(d["routed_scaling_factor"]!) overflows float32") }
        normTopkProb = try bool("norm_topk_prob", true)
        useQKNorm = try bool("use_qk_norm", true)
        tieWordEmbeddings = try bool("tie_word_embeddings", true)
        if d["interleave_moe_layer_step"] != nil { interleaveMoeLayerStep = try int("interleave_moe_layer_step", min: 1) }
        if let v = given("no_rope_layers") {
            guard let a = v.array else { throw ConfigError("no_rope_layers must be a list of 0/1 flags") }
            noRopeLayers = try a.map { f in
                guard let i = f.int, i == 0 || i == 1 else { throw ConfigError("no_rope_layers must hold 0/1 flags, got \(f)") }
                return i
            }
        }
        if let v = given("layer_types") {
            guard let a = v.array?.compactMap(\.string), a.count == v.array?.count else { throw ConfigError("layer_types must be a list of strings") }
            layerTypes = a
        }
        if let v = given("bos_token_id") {
            guard let b = v.int, b >= 0 else { throw ConfigError("bos_token_id must be an integer >= 0, got \(v)") }
            bosTokenId = b
        }
        if let v = given("eos_token_id") { eosTokenIds = try ints(v, "eos_token_id") }
        if let v = d["model_type"] {
            guard let t = v.string else { throw ConfigError("model_type must be a string, got \(v)") }
            modelType = t
        }
        if let v = given("architectures") {
            guard let a = v.array, a.allSatisfy({ $0.string != nil }) else { throw ConfigError("architectures must be a list of strings") }
        }
        if let v = d["hidden_act"], v.string != "silu" {
            throw ConfigError("hidden_act \(v) is not supported (MobileMoE uses silu)")
        }
        if try bool("attention_bias", false) { throw ConfigError("attention_bias=true is not part of MobileMoE") }
        if try bool("attn_temperature_tuning", false) {
            throw ConfigError("attn_temperature_tuning=true (Llama 4 attention temperature tuning) is not implemented; released MobileMoE checkpoints set it to false")
        }
        if let v = given("rope_scaling") { ropeScaling = try Self.parseRopeScaling(v) }
        if let q = given("quantization") {
            guard let qo = q.object else { throw ConfigError("quantization must be an object, got \(q)") }
            guard qo["format"]?.string == Self.quantFormat else {
                throw ConfigError("quantization format \(show(qo["format"])) is not supported (expected '\(Self.quantFormat)')")
            }
            let unknownQ = qo.keys.filter { Self.officialQuantization[$0] == nil }.sorted()
            guard unknownQ.isEmpty else { throw ConfigError("quantization has field(s) this implementation does not know: \(unknownQ.joined(separator: ", "))") }
            let absent = Self.officialQuantization.keys.filter { qo[$0] == nil && !Self.optionalQuantizationKeys.contains($0) }.sorted()
            guard absent.isEmpty else { throw ConfigError("quantization is missing \(absent.joined(separator: ", "))") }
            let differing = qo.keys.filter { k in !Self.officialQuantization[k]!.sameValue(as: qo[k]!) || qo[k]!.bool != Self.officialQuantization[k]!.bool }.sorted()
            guard differing.isEmpty else {
                throw ConfigError("quantization settings \(differing) differ from the official int4 g32 format")
            }
            isQuantized = true
        }
        try Self.checkHousekeeping(d)
        try validate()
    }

    /// Housekeeping keys are not used, but a value of the wrong kind means a broken file.
    static func checkHousekeeping(_ d: [String: JSONValue]) throws {
        for k in ["torch_dtype", "dtype"] {
            if let v = d[k], !v.isNull, !(v.string.map(torchDTypes.contains) ?? false) {
                throw ConfigError("\(k) must be one of \(torchDTypes.sorted()), got \(v)")
            }
        }
        if let v = d["attention_dropout"], !(v.double.map { $0.isFinite && $0 >= 0 && $0 <= 1 } ?? false) {
            throw ConfigError("attention_dropout must be a number in [0, 1], got \(v)")
        }
        if let v = d["pad_token_id"], !v.isNull, !(v.int.map { $0 >= 0 } ?? false) {
            throw ConfigError("pad_token_id must be an integer >= 0 or null, got \(v)")
        }
        if let v = d["transformers_version"], v.string == nil { throw ConfigError("transformers_version must be a string, got \(v)") }
    }

    static func parseRopeScaling(_ v: JSONValue) throws -> RopeScaling? {
        guard let o = v.object else { throw ConfigError("rope_scaling must be an object, got \(v)") }
        let kindValue = o["rope_type"] ?? o["type"]
        if let k = kindValue, !k.isNull, k.string == nil { throw ConfigError("rope_scaling.rope_type must be a string, got \(k)") }
        let kind = kindValue?.string
        if kind == nil || kind == "default" { return nil }
        guard kind == "llama3" else { throw ConfigError("rope_scaling type '\(kind!)' is not supported (llama3 only)") }
        func positive(_ k: String) throws -> Double {
            guard let x = o[k] else { throw ConfigError("rope_scaling is missing \(k)") }
            guard let d = x.double, d.isFinite, d > 0 else { throw ConfigError("rope_scaling.\(k) must be a finite number > 0, got \(x)") }
            return d
        }
        return RopeScaling(ropeType: "llama3", factor: try positive("factor"),
                           originalMaxPositionEmbeddings: try positive("original_max_position_embeddings"),
                           lowFreqFactor: try positive("low_freq_factor"), highFreqFactor: try positive("high_freq_factor"))
    }

    /// Upper bound of every size field (2^24: a thousand times the released models' sizes,
    /// and contexts up to 16M tokens), so no derived size can overflow.
    public static let maxDimension = 1 << 24

    /// a * b * ..., or a ConfigError naming `what` when it does not fit in Int.
    static func product(_ factors: [Int], _ what: String) throws -> Int {
        var p = 1
        for f in factors {
            let (r, overflow) = p.multipliedReportingOverflow(by: f)
            if overflow { throw ConfigError("\(what) (\(factors.map(String.init).joined(separator: " x "))) is too large") }
            p = r
        }
        return p
    }

    public func validate() throws {
        if modelType != "mobilemoe" { throw ConfigError("model_type is '\(modelType)', expected 'mobilemoe'") }
        if interleaveMoeLayerStep != 1 {
            throw ConfigError("interleave_moe_layer_step != 1 (dense layers between MoE layers) is not supported; got \(interleaveMoeLayerStep)")
        }
        for (name, n, lo) in [("vocab_size", vocabSize, 1), ("hidden_size", hiddenSize, 1), ("intermediate_size", intermediateSize, 1),
                              ("intermediate_size_mlp", intermediateSizeMLP, 0), ("num_hidden_layers", numHiddenLayers, 1),
                              ("num_attention_heads", numAttentionHeads, 1), ("num_key_value_heads", numKeyValueHeads, 1),
                              ("head_dim", headDim, 2), ("num_local_experts", numLocalExperts, 1),
                              ("num_experts_per_tok", numExpertsPerTok, 1), ("max_position_embeddings", maxPositionEmbeddings, 1)]
        where n < lo || n > Self.maxDimension {
            throw ConfigError("\(name) must be in \(lo)...\(Self.maxDimension), got \(n)")
        }
        if intermediateSizeMLP > 0 && intermediateSizeMLP % intermediateSize != 0 {
            throw ConfigError("shared expert width intermediate_size_mlp=\(intermediateSizeMLP) is not a multiple of the routed expert width intermediate_size=\(intermediateSize)")
        }
        if numAttentionHeads % numKeyValueHeads != 0 {
            throw ConfigError("num_attention_heads must be a multiple of num_key_value_heads")
        }
        if numExpertsPerTok > numLocalExperts {
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
        // Every size the loader and the backends derive must fit in Int (bytes included), so
        // a config with absurd dimensions is refused here instead of trapping later.
        let q = try Self.product([numAttentionHeads, headDim], "num_attention_heads * head_dim")
        _ = try Self.product([numKeyValueHeads, headDim, 4], "num_key_value_heads * head_dim")
        _ = try Self.product([vocabSize, hiddenSize, 4], "vocab_size * hidden_size")
        _ = try Self.product([q, hiddenSize, 4], "attention projection size")
        _ = try Self.product([numLocalExperts, hiddenSize, intermediateSize, 2, 4], "expert weights size")
        _ = try Self.product([max(intermediateSizeMLP, 1), hiddenSize, 4], "shared expert size")
        _ = try Self.product([numHiddenLayers, numLocalExperts, hiddenSize], "router size")
        if isQuantized {
            for (name, n) in [("hidden_size", hiddenSize), ("intermediate_size", intermediateSize),
                              ("intermediate_size_mlp", intermediateSizeMLP), ("num_attention_heads * head_dim", q)]
            where n % 32 != 0 {
                throw ConfigError("\(name)=\(n) is not a multiple of the int4 group size 32")
            }
        }
    }
}
