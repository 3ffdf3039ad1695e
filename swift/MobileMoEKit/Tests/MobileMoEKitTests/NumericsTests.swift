// Small numeric pieces of the forward pass against hand-computed values: the router test
// vector of DESIGN.md §4, llama3 RoPE frequencies (where-rule), int4 unpacking, fp16/bf16.
import Foundation
import XCTest
@testable import MobileMoEKit

final class NumericsTests: XCTestCase {
    func testRouterDesignVector() {
        // logits [0, ln 3, -ln 3, ln 4], bias [0, 0, 1, 0], k = 2 -> experts {2, 3}, weights 0.5952, 1.9048 (scaling 2.5)
        let r = route(logits: [0, log(3), -log(3), log(4)], bias: [0, 0, 1, 0], k: 2, normalize: true, scaling: 2.5)
        XCTAssertEqual(Set(r.experts), [2, 3])
        let w = Dictionary(uniqueKeysWithValues: zip(r.experts, r.weights))
        XCTAssertEqual(w[2]!, 0.5952, accuracy: 1e-4)
        XCTAssertEqual(w[3]!, 1.9048, accuracy: 1e-4)
        // Without normalization the weights are the scaled sigmoid scores.
        let raw = route(logits: [0, log(3), -log(3), log(4)], bias: [0, 0, 1, 0], k: 2, normalize: false, scaling: 1)
        XCTAssertEqual(raw.weights.reduce(0, +), 0.25 + 0.8, accuracy: 1e-6)
    }

    func testLlama3RopeWhereRule() {
        let scaling = RopeScaling(ropeType: "llama3", factor: 4, originalMaxPositionEmbeddings: 32, lowFreqFactor: 1, highFreqFactor: 1)
        let plain = ropeInverseFrequencies(headDim: 16, theta: 10_000, scaling: nil)
        let scaled = ropeInverseFrequencies(headDim: 16, theta: 10_000, scaling: scaling)
        XCTAssertEqual(plain[0], 1)
        XCTAssertEqual(plain[1], 1 / powf(10_000, 2 / 16), accuracy: 1e-7)
        for (p, s) in zip(plain, scaled) {
            let wavelen = 2 * Float.pi / p
            XCTAssertEqual(s, wavelen > 32 ? p / 4 : p, accuracy: 1e-9)
            XCTAssertTrue(s.isFinite)
        }
        XCTAssertTrue(zip(plain, scaled).contains { $0 != $1 }, "some frequencies must be scaled")
    }

    func testRopeRotatesAdjacentPairs() {
        var x: [Float] = [1, 0, 0, 1]
        x.withUnsafeMutableBufferPointer { applyRope($0.baseAddress!, heads: 1, headDim: 4, position: 1, invFreq: [Float.pi / 2, 0]) }
        XCTAssertEqual(x[0], 0, accuracy: 1e-6)   // (1, 0) rotated by 90°
        XCTAssertEqual(x[1], 1, accuracy: 1e-6)
        XCTAssertEqual(x[2], 0, accuracy: 1e-6)   // angle 0: unchanged
        XCTAssertEqual(x[3], 1, accuracy: 1e-6)
    }

    func testInt4RowDequantization() {
        // q = [-8, -7, ..., 7, -8, ..., 7] (32 values), packed even index low nibble, scale 0.5.
        let q = (0..<32).map { Int8($0 % 16) - 8 }
        var packed = [UInt8](repeating: 0, count: 16)
        for i in 0..<16 { packed[i] = UInt8(bitPattern: q[2 * i]) & 0xF | (UInt8(bitPattern: q[2 * i + 1]) & 0xF) << 4 }
        let scale: [UInt16] = [floatToFloat16Bits(0.5)]
        var out = [Float](repeating: 0, count: 32)
        packed.withUnsafeBufferPointer { p in
            scale.withUnsafeBytes { s in
                let m = WeightMatrix(rows: 1, cols: 32, storage: .int4(packed: p.baseAddress!, scales: s.baseAddress!), tensors: [])
                out.withUnsafeMutableBufferPointer { m.row(0, into: $0.baseAddress!) }
            }
        }
        XCTAssertEqual(out, q.map { Float($0) * 0.5 })
    }

    func testHalfConversions() {
        XCTAssertEqual(float16ToFloat(0x3C00), 1)
        XCTAssertEqual(float16ToFloat(0xC000), -2)
        XCTAssertEqual(float16ToFloat(0x0001), 5.960464477539063e-08)   // smallest subnormal
        XCTAssertEqual(float16ToFloat(0x7BFF), 65504)
        XCTAssertEqual(float16ToFloat(0x7C00), .infinity)
        XCTAssertTrue(float16ToFloat(0x7E00).isNaN)
        XCTAssertEqual(bfloat16ToFloat(0x3F80), 1)
        XCTAssertEqual(bfloat16ToFloat(0xC040), -3)
        for bits in stride(from: 0, to: 0x7C00, by: 7) {
            XCTAssertEqual(floatToFloat16Bits(float16ToFloat(UInt16(bits))), UInt16(bits))
        }
    }

    func testRmsNorm() {
        var x: [Float] = [3, 4]
        x.withUnsafeMutableBufferPointer { rmsNorm($0.baseAddress!, 2, weight: [2, 1], eps: 0) }
        let r = 1 / Float(12.5).squareRoot()
        XCTAssertEqual(x[0], 3 * r * 2, accuracy: 1e-6)
        XCTAssertEqual(x[1], 4 * r, accuracy: 1e-6)
    }
}
