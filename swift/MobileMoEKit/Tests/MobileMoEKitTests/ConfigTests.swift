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
}
