// port of rope_inv_freq / Attention.rope in mlx_mobilemoe/model.py: RoPE on adjacent pairs
// (x[2i], x[2i+1]) ("traditional"), llama3 frequency scaling with the `where` rule.
// The steps are done in Float32 in the same order as MLX (inv -> freqs = 1/inv -> 1/freqs).
import Foundation

public func ropeInverseFrequencies(headDim: Int, theta: Double, scaling: RopeScaling?) -> [Float] {
    let theta = Float(theta)
    var inv = stride(from: 0, to: headDim, by: 2).map { 1 / powf(theta, Float($0) / Float(headDim)) }
    if let s = scaling, s.ropeType == "llama3" {
        let factor = Float(s.factor), orig = Float(s.originalMaxPositionEmbeddings)
        let low = Float(s.lowFreqFactor), high = Float(s.highFreqFactor)
        let lowWavelen = orig / low, highWavelen = orig / high
        inv = inv.map { f in
            let wavelen = 2 * Float.pi / f
            var scaled = wavelen > lowWavelen ? f / factor : f
            if high != low && wavelen >= highWavelen && wavelen <= lowWavelen {
                let smooth = (orig / wavelen - low) / (high - low)
                scaled = (1 - smooth) * f / factor + smooth * f
            }
            return scaled
        }
    }
    // MLX is handed freqs = 1/inv and takes its reciprocal again.
    return inv.map { 1 / (1 / $0) }
}

/// Rotates `heads` vectors of `headDim` floats at sequence position `position`, in place.
func applyRope(_ x: UnsafeMutablePointer<Float>, heads: Int, headDim: Int, position: Int, invFreq: [Float]) {
    for i in 0..<headDim / 2 {
        let angle = Float(position) * invFreq[i]
        let c = cos(angle), s = sin(angle)
        for h in 0..<heads {
            let p = x + h * headDim + 2 * i
            let x0 = p[0], x1 = p[1]
            p[0] = x0 * c - x1 * s
            p[1] = x0 * s + x1 * c
        }
    }
}
