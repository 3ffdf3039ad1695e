// The sampler against mlx-lm's (scripts/write_swift_sampler_fixtures.py): the same kept set and
// probabilities for fixed logits under every filter and penalty setting; the partial-selection
// fast path against the sort-everything reference on a 128,256-entry vocabulary; draws follow
// the distribution.
import Foundation
import XCTest
@testable import MobileMoEKit

final class SamplerTests: XCTestCase {
    struct Case {
        let settings: [String: Any]
        let expected: [Int: Double]
    }

    func load() throws -> (logits: [Float], history: [Int], cases: [Case]) {
        let json = try Fixtures.json("sampler-cases.json") as! [String: Any]
        let cases = (json["cases"] as! [[String: Any]]).map { c in
            Case(settings: c["settings"] as! [String: Any],
                 expected: Dictionary(uniqueKeysWithValues: zip(c["kept"] as! [Int], c["probabilities"] as! [Double])))
        }
        return ((json["logits"] as! [Double]).map(Float.init), json["history"] as! [Int], cases)
    }

    func parameters(_ s: [String: Any]) -> GenerateParameters {
        func f(_ k: String) -> Float? { (s[k] as? Double).map(Float.init) }
        return GenerateParameters(temperature: f("temp")!, topP: f("top_p") ?? 1, topK: s["top_k"] as? Int ?? 0,
                                  seed: 7, minP: f("min_p") ?? 0, repetitionPenalty: f("repetition_penalty"),
                                  repetitionContextSize: s["repetition_context_size"] as? Int ?? 20,
                                  presencePenalty: f("presence_penalty"), frequencyPenalty: f("frequency_penalty"))
    }

    /// Same kept set (Python's zero-probability tokens excepted: float32 underflow there) and
    /// probabilities within 2e-6 absolute + 1e-4 relative.
    func assertSame(_ got: SamplingDistribution, _ want: [Int: Double], _ what: String) {
        let g = Dictionary(uniqueKeysWithValues: zip(got.ids, got.probabilities))
        XCTAssertTrue(Set(want.keys).isSubset(of: Set(g.keys)), "\(what): Python keeps tokens the Swift sampler drops")
        for (id, p) in g {
            let w = want[id] ?? 0
            XCTAssertLessThanOrEqual(abs(p - w), 2e-6 + 1e-4 * w, "\(what): token \(id) p \(p) vs \(w)")
        }
        XCTAssertEqual(got.probabilities.reduce(0, +), 1, accuracy: 1e-9)
    }

    func testDistributionMatchesMLXLM() throws {
        let (logits, history, cases) = try load()
        XCTAssertEqual(cases.count, 13)
        for c in cases {
            let p = parameters(c.settings)
            var x = logits
            LogitsPenalties(p).apply(to: &x, tokens: history)
            var sampler = Sampler(parameters: p)
            assertSame(sampler.distribution(x), c.expected, "fast \(c.settings)")
            let ref = Sampler.referenceDistribution(x, temperature: p.temperature, topP: p.topP, topK: p.topK, minP: p.minP)
            assertSame(ref, c.expected, "reference \(c.settings)")
            if p.topP < 1 || p.topK > 0 || p.minP > 0 {
                XCTAssertEqual(sampler.distribution(x).ids.count, c.expected.count, "kept set size \(c.settings)")
            }
        }
    }

    func testFastPathEqualsReferenceOnALargeVocabulary() {
        // 32,768 tokens keeps the debug-build reference sort short; the benchmark runs 128,256.
        var rng = SplitMix64(seed: 3)
        let V = 32_768
        var logits = (0..<V).map { _ in Float(Double.random(in: -4...4, using: &rng)) }
        for i in 0..<20 { logits[i * 997] += 9 }  // a head of likely tokens
        logits[5] = logits[7]                     // a tie
        for (t, p, k, m) in [(Float(0.7), Float(0.9), 0, Float(0)), (1.0, 0.95, 40, 0.05), (0.6, 1.0, 0, 0.1)] {
            var s = Sampler(temperature: t, topP: p, topK: k, minP: m, seed: 1)
            let fast = s.distribution(logits)
            let ref = Sampler.referenceDistribution(logits, temperature: t, topP: p, topK: k, minP: m)
            XCTAssertEqual(Set(fast.ids), Set(ref.ids), "kept set t \(t) p \(p) k \(k) m \(m)")
            let r = Dictionary(uniqueKeysWithValues: zip(ref.ids, ref.probabilities))
            for (id, q) in zip(fast.ids, fast.probabilities) { XCTAssertEqual(q, r[id]!, accuracy: 1e-7) }
        }
    }

    /// Non-finite logits (damaged weights: found by mobilemoe-fuzz) give some token id, never a trap.
    func testNonFiniteLogitsNeverTrap() {
        let n = 6000
        let allNaN = [Float](repeating: .nan, count: n)
        var mixed = (0..<n).map { Float($0 % 97) * -0.1 }
        mixed[3] = .nan; mixed[10] = .infinity; mixed[11] = -.infinity
        var flat = [Float](repeating: 0, count: n)  // top-p past the near-top shortcut
        flat[7] = .nan
        for x in [allNaN, mixed, flat] {
            for (t, p, k, m) in [(Float(0), Float(1), 0, Float(0)), (1, 0.9, 0, 0), (0.8, 0.9, 5, 0), (1, 1, 5, 0.1), (1, 1, 0, 0)] {
                var s = Sampler(temperature: t, topP: p, topK: k, minP: m, seed: 1)
                XCTAssertTrue((0..<n).contains(s.sample(x)))
            }
        }
    }

    func testTopKTiesKeepTheLowerId() {
        var s = Sampler(temperature: 1, topK: 2, seed: 1)
        XCTAssertEqual(Set(s.distribution([1, 3, 3, 3, 0]).ids), [1, 2])
    }

    func testDrawsFollowTheDistribution() throws {
        let (logits, _, cases) = try load()
        let c = cases.first { ($0.settings["top_k"] as? Int) == 5 }!
        var sampler = Sampler(parameters: parameters(c.settings))
        let n = 3_000
        var counts: [Int: Int] = [:]
        for _ in 0..<n { counts[sampler.sample(logits), default: 0] += 1 }
        XCTAssertEqual(Set(counts.keys), Set(c.expected.keys))
        for (id, p) in c.expected { XCTAssertEqual(Double(counts[id] ?? 0) / Double(n), p, accuracy: 0.03, "token \(id)") }
        // Unfiltered draws (the no-sort path over every token) too.
        var plain = Sampler(temperature: 1, seed: 5)
        var top = 0
        for _ in 0..<500 where plain.sample(logits) == 0 { top += 1 }
        XCTAssertEqual(Double(top) / 500, cases[0].expected[0]!, accuracy: 0.07)
    }

    func testGreedyAndSimdExp() {
        var s = Sampler(temperature: 0)
        XCTAssertEqual(s.sample([0, 2, 2, 1]), 1)
        let xs: [Float] = [0, -1e-3, -0.5, -1, -3.3, -10, -40, -87, -100, -1e-30, 0.7, 5]
        var out = [Float](repeating: 0, count: xs.count)
        _ = xs.withUnsafeBufferPointer { expShifted($0, shift: 0, scale: 1, into: &out) }
        for (x, e) in zip(xs, out) {
            if x < -87.3 { XCTAssertLessThan(e, 1.3e-38, "exp(\(x))"); continue }  // floored, not 0
            XCTAssertEqual(e, expf(x), accuracy: max(2e-7 * expf(x), Float.leastNonzeroMagnitude), "exp(\(x))")
        }
    }

    func testBadParametersAreNamed() {
        for p in [GenerateParameters(topP: 0), GenerateParameters(topK: 600), GenerateParameters(minP: 2),
                  GenerateParameters(stopStrings: [""]), GenerateParameters(maxKVSize: 3)] {
            XCTAssertThrowsError(try p.validate(vocabSize: 512)) { XCTAssertTrue("\($0)".contains("bad generation parameter"), "\($0)") }
        }
    }
}
