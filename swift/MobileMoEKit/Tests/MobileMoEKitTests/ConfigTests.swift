// config.json decoding mirrors ModelArgs.from_dict: same fields, defaults and refusals.
import Foundation
import XCTest
@testable import MobileMoEKit

final class ConfigTests: XCTestCase {
    func base() throws -> [String: Any] {
        try JSONSerialization.jsonObject(with: Data(contentsOf: Fixtures.url("tiny-qat/config.json"))) as! [String: Any]
    }

    func parse(_ d: [String: Any]) throws -> ModelConfig {
        try ModelConfig(json: JSONValue.parse(JSONSerialization.data(withJSONObject: d)))
    }

    func testFixtureConfig() throws {
        let c = try ModelConfig(contentsOf: Fixtures.url("tiny-qat/config.json"))
        XCTAssertEqual(c.hiddenSize, 64)
        XCTAssertEqual(c.numExpertsPerTok, 2)
        XCTAssertTrue(c.isQuantized)
        XCTAssertEqual(c.eosTokenIds, [1, 4])
        XCTAssertEqual(c.ropeScaling?.factor, 4)
        XCTAssertTrue(c.usesRope(layer: 0))
        XCTAssertFalse(c.usesRope(layer: 1))
        XCTAssertFalse(c.usesQKNorm(layer: 1), "qk-norm runs on RoPE layers only")
        XCTAssertFalse(try ModelConfig(contentsOf: Fixtures.url("tiny-bf16/config.json")).isQuantized)
    }

    func testDefaultsAndScalarEos() throws {
        var d = try base()
        for k in ["rms_norm_eps", "rope_theta", "no_rope_layers", "quantization", "rope_scaling"] { d.removeValue(forKey: k) }
        d["eos_token_id"] = 7
        d["transformers_version"] = "5.0"  // housekeeping keys are ignored
        let c = try parse(d)
        XCTAssertEqual(c.rmsNormEps, 1e-5)
        XCTAssertEqual(c.ropeTheta, 500_000)
        XCTAssertEqual(c.eosTokenIds, [7])
        XCTAssertTrue(c.usesRope(layer: 1))
        XCTAssertNil(c.ropeScaling)
        XCTAssertFalse(c.isQuantized)
    }

    func testRefusals() throws {
        let edits: [(String, (inout [String: Any]) -> Void)] = [
            ("missing field", { $0.removeValue(forKey: "hidden_size") }),
            ("unknown field", { $0["sliding_window"] = 4096 }),
            ("model type", { $0["model_type"] = "llama" }),
            ("dense layers", { $0["interleave_moe_layer_step"] = 2 }),
            ("top-k > experts", { $0["num_experts_per_tok"] = 9 }),
            ("untied", { $0["tie_word_embeddings"] = false }),
            ("odd head dim", { $0["head_dim"] = 15 }),
            ("no_rope length", { $0["no_rope_layers"] = [1] }),
            ("sliding layers", { $0["layer_types"] = ["full_attention", "sliding_attention"] }),
            ("rope type", { $0["rope_scaling"] = ["rope_type": "yarn", "factor": 2] }),
            ("quant format", { $0["quantization"] = ["format": "gguf-q4"] }),
            ("quant group", { $0["quantization"] = ["format": "mobilemoe-int4-g32", "group_size": 64] }),
            ("hidden act", { $0["hidden_act"] = "gelu" }),
            ("negative size", { $0["vocab_size"] = -1 }),
            ("kv heads", { $0["num_key_value_heads"] = 3 }),
        ]
        for (name, edit) in edits {
            var d = try base()
            edit(&d)
            XCTAssertThrowsError(try parse(d), name) { XCTAssertTrue($0 is ConfigError, "\(name): \($0)") }
        }
    }

    /// config.json of a released S checkpoint (facebook/MobileMoE-S-QAT), every key with its
    /// released value (key set and values as lalamo's and the Java port's readers require them).
    static func releasedS(quantized: Bool = true) -> [String: Any] {
        var d: [String: Any] = [
            "architectures": ["MobileMoEForCausalLM"], "model_type": "mobilemoe",
            "auto_map": ["AutoConfig": "configuration_mobilemoe.MobileMoEConfig"], "transformers_version": "4.55.0",
            "vocab_size": 128256, "hidden_size": 768, "intermediate_size": 384, "intermediate_size_mlp": 1536,
            "num_hidden_layers": 20, "num_attention_heads": 12, "num_key_value_heads": 4, "head_dim": 64,
            "hidden_act": "silu", "max_position_embeddings": 8192, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
            "rope_scaling": ["rope_type": "llama3", "factor": 16.0, "original_max_position_embeddings": 8192,
                             "low_freq_factor": 1.0, "high_freq_factor": 1.0],
            "num_local_experts": 60, "num_experts_per_tok": 4, "interleave_moe_layer_step": 1,
            "no_rope_layers": Array(repeating: 1, count: 20), "layer_types": Array(repeating: "full_attention", count: 20),
            "use_qk_norm": true, "attn_temperature_tuning": false, "tie_word_embeddings": true,
            "torch_dtype": "bfloat16", "attention_bias": false, "attention_dropout": 0.0,
            "routed_scaling_factor": 2.5, "norm_topk_prob": true,
            "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009], "pad_token_id": NSNull(),
        ]
        if quantized {
            d["quantization"] = ["format": "mobilemoe-int4-g32", "group_size": 32, "embedding_group_size": 32,
                                 "qmin": -8, "qmax": 7, "symmetric": true, "scale_dtype": "float16",
                                 "linear_group_axis": "in (last dim of [out, in])",
                                 "expert_group_axis": "out (last dim of [E, in, out])", "packed": true]
        }
        return d
    }

    func testReleasedConfigAccepted() throws {
        let c = try parse(Self.releasedS())
        XCTAssertTrue(c.isQuantized)
        XCTAssertEqual(c.routedScalingFactor, 2.5)
        XCTAssertEqual(c.maxPositionEmbeddings, 8192)
        XCTAssertEqual(c.eosTokenIds, [128001, 128008, 128009])
        XCTAssertEqual(c.layerTypes, Array(repeating: "full_attention", count: 20))
        XCTAssertTrue((0..<20).allSatisfy(c.usesRope(layer:)))
        XCTAssertFalse(try parse(Self.releasedS(quantized: false)).isQuantized)
        // Older files written here lack the two axis strings: still accepted.
        var old = Self.releasedS()
        var q = old["quantization"] as! [String: Any]
        q.removeValue(forKey: "linear_group_axis"); q.removeValue(forKey: "expert_group_axis")
        old["quantization"] = q
        XCTAssertTrue(try parse(old).isQuantized)
    }

    func testReleasedConfigRefusals() throws {
        let edits: [(String, String, (inout [String: Any]) -> Void)] = [
            ("attn_temperature_tuning", "attn_temperature_tuning true", { $0["attn_temperature_tuning"] = true }),
            ("attn_temperature_tuning", "attn_temperature_tuning not a bool", { $0["attn_temperature_tuning"] = "no" }),
            ("does not know", "unknown forward-changing key", { $0["attention_chunk_size"] = 8192 }),
            ("quantization", "unknown quantization key", { $0["quantization"] = (($0["quantization"] as! [String: Any]).merging(["bits": 4]) { a, _ in a }) }),
            ("quantization", "other group axis", { $0["quantization"] = (($0["quantization"] as! [String: Any]).merging(["linear_group_axis": "out"]) { _, b in b }) }),
            ("quantization", "symmetric as 1", { $0["quantization"] = (($0["quantization"] as! [String: Any]).merging(["symmetric": 1]) { _, b in b }) }),
            ("quantization", "quantization a list", { $0["quantization"] = [1] }),
            ("rope_scaling", "rope_scaling a string", { $0["rope_scaling"] = "llama3" }),
            ("rope_scaling.factor", "rope factor below 1", { $0["rope_scaling"] = ["rope_type": "llama3", "factor": 0.5, "original_max_position_embeddings": 8192, "low_freq_factor": 1, "high_freq_factor": 1] }),
            ("rope_scaling.factor", "rope factor 0", { $0["rope_scaling"] = ["rope_type": "llama3", "factor": 0, "original_max_position_embeddings": 8192, "low_freq_factor": 1, "high_freq_factor": 1] }),
            ("torch_dtype", "torch_dtype int8", { $0["torch_dtype"] = "int8" }),
            ("rms_norm_eps", "rms_norm_eps null", { $0["rms_norm_eps"] = NSNull() }),
            ("rms_norm_eps", "rms_norm_eps 0", { $0["rms_norm_eps"] = 0 }),
            ("rms_norm_eps", "rms_norm_eps false", { $0["rms_norm_eps"] = false }),
            ("rope_theta", "rope_theta negative", { $0["rope_theta"] = -1.0 }),
            ("routed_scaling_factor", "routed_scaling_factor string", { $0["routed_scaling_factor"] = "2.5" }),
            ("routed_scaling_factor", "routed_scaling_factor beyond float32", { $0["routed_scaling_factor"] = 1e300 }),
            ("norm_topk_prob", "norm_topk_prob as 1", { $0["norm_topk_prob"] = 1 }),
            ("intermediate_size", "intermediate_size 0", { $0["intermediate_size"] = 0 }),
            ("no_rope_layers", "no_rope_layers flag 2", { $0["no_rope_layers"] = Array(repeating: 2, count: 20) }),
            ("layer_types", "layer_types numbers", { $0["layer_types"] = Array(repeating: 1, count: 20) }),
            ("eos_token_id", "eos_token_id negative", { $0["eos_token_id"] = [-1] }),
            ("eos_token_id", "eos_token_id = vocab_size", { $0["eos_token_id"] = [128_256] }),
            ("bos_token_id", "bos_token_id = vocab_size", { $0["bos_token_id"] = 128_256 }),
            ("architectures", "architectures null", { $0["architectures"] = NSNull() }),
            ("torch_dtype", "torch_dtype null", { $0["torch_dtype"] = NSNull() }),
            ("no_rope_layers", "no_rope_layers null", { $0["no_rope_layers"] = NSNull() }),
            ("model_type", "model_type a number", { $0["model_type"] = 3 }),
        ]
        for (field, name, edit) in edits {
            var d = Self.releasedS()
            edit(&d)
            XCTAssertThrowsError(try parse(d), name) { error in
                XCTAssertTrue(error is ConfigError, "\(name): \(error)")
                XCTAssertTrue("\(error)".contains(field), "\(name): the error names \(field): \(error)")
            }
        }
    }

    func testFloatLiteralIsNotAnInteger() throws {
        // Python's json reads 768.0 as a float, which is not an int.
        var text = String(decoding: try JSONSerialization.data(withJSONObject: Self.releasedS()), as: UTF8.self)
        text = text.replacingOccurrences(of: "\"hidden_size\":768", with: "\"hidden_size\":768.0")
        XCTAssertTrue(text.contains("768.0"))
        XCTAssertThrowsError(try ModelConfig(json: JSONValue.parse(Data(text.utf8)))) { XCTAssertTrue("\($0)".contains("hidden_size"), "\($0)") }
    }

    func testHugeSizesThrowNotTrap() throws {
        // Each would overflow Int in a product the loader or a backend computes.
        let huge = 1 << 40
        for (k, v) in [("num_attention_heads", huge), ("head_dim", huge), ("hidden_size", huge), ("vocab_size", Int.max),
                       ("num_local_experts", huge), ("intermediate_size", huge), ("num_hidden_layers", Int.max),
                       ("max_position_embeddings", Int.max)] {
            var d = Self.releasedS(quantized: false)
            d[k] = v
            if k == "num_attention_heads" { d["num_key_value_heads"] = 1 << 20 }
            if k == "num_local_experts" { d["num_experts_per_tok"] = 4 }
            if k == "intermediate_size" { d["intermediate_size_mlp"] = 0 }
            if k == "num_hidden_layers" { d.removeValue(forKey: "no_rope_layers"); d.removeValue(forKey: "layer_types") }
            XCTAssertThrowsError(try parse(d), k) { XCTAssertTrue($0 is ConfigError, "\(k): \($0)") }
        }
        // A config changed in code after parsing is checked again by the weight loader.
        var c = try parse(Self.releasedS(quantized: false))
        c.numAttentionHeads = Int.max
        XCTAssertThrowsError(try ModelWeights(config: c, store: TensorStore(tensors: [:]))) { XCTAssertTrue($0 is ConfigError, "\($0)") }
    }
}
