// Next-token choice from logits, with the semantics of mlx-lm's sampler (sample_utils.py):
// logits processors (penalties, LogitsProcessor.swift) first; temperature 0 is greedy; else the
// filters work on the temperature-1 distribution in mlx-lm's order — top-p, then min-p, then
// top-k — and the draw is from softmax(logit / temperature) over the tokens kept. The filters
// only ever keep a prefix of the tokens ranked by logit, so the kept set is the shortest of the
// three prefixes; ties at a top-p or min-p cut are kept (as mlx-lm's `logprobs < threshold`),
// ties at the top-k cut are broken by the lower id (mlx-lm's argpartition breaks them
// arbitrarily).
//
// Nothing sorts the whole vocabulary: max and exp are one vectorized pass each, top-k is a
// bounded heap, top-p buckets the probability mass by distance to the top logit (0.25 nats per
// bucket) and sorts only the bucket where the nucleus ends. `Sampler.referenceDistribution`
// is the plain sort-everything version beside it (tests compare the two). Draws use SplitMix64
// (seeded: reproducible across platforms).
import Foundation

public struct SplitMix64: RandomNumberGenerator, Sendable {
    private var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// The probability distribution a sampler draws from: the kept token ids (order unspecified)
/// and their probabilities (sum 1).
public struct SamplingDistribution: Sendable, Equatable {
    public var ids: [Int]
    public var probabilities: [Double]
}

public struct Sampler {
    public let temperature: Float
    public let topP: Float
    public let topK: Int
    public let minP: Float
    private var rng: SplitMix64
    /// Reused per-token buffers (no allocation per token once warm).
    private var weights: [Float] = []
    private var blockSums: [Double] = []
    private var candidates: [Int] = []
    private var candidateWeights: [Float] = []
    static let block = 128

    public init(parameters p: GenerateParameters) {
        self.init(temperature: p.temperature, topP: p.topP, topK: p.topK, minP: p.minP, seed: p.seed)
    }

    public init(temperature: Float, topP: Float = 1, topK: Int = 0, minP: Float = 0, seed: UInt64? = nil) {
        self.temperature = temperature
        self.topP = topP
        self.topK = topK
        self.minP = minP
        rng = SplitMix64(seed: seed ?? UInt64.random(in: .min ... .max))
    }

    /// Filters as mlx-lm's make_sampler enables them.
    var usesTopP: Bool { topP > 0 && topP < 1 }
    var usesMinP: Bool { minP > 0 }
    var usesTopK: Bool { topK > 0 }

    /// First index of the largest logit (as mx.argmax).
    public static func argmax(_ logits: [Float]) -> Int {
        logits.withUnsafeBufferPointer { argmax($0) }
    }

    static func argmax(_ x: UnsafeBufferPointer<Float>) -> Int {
        var best = 0
        var m = -Float.infinity
        for i in 0..<x.count where x[i] > m { m = x[i]; best = i }
        return best
    }

    public mutating func sample(_ logits: [Float]) -> Int {
        guard temperature > 0 else { return Sampler.argmax(logits) }
        return logits.withUnsafeBufferPointer { x in
            let m = maxValue(x)
            let invT = 1 / temperature
            keptCandidates(x, max: m)
            if candidates.isEmpty {
                // No filter: draw from all V tokens, weights exp((x - m) / T) in one vectorized
                // pass that also sums blocks of `Sampler.block`; the draw walks blocks, then
                // one block.
                if weights.count < x.count { weights = [Float](repeating: 0, count: x.count) }
                let blocks = (x.count + Sampler.block - 1) / Sampler.block
                if blockSums.count < blocks { blockSums = [Double](repeating: 0, count: blocks) }
                let total = weights.withUnsafeMutableBufferPointer { w in
                    blockSums.withUnsafeMutableBufferPointer { b in
                        expShifted(x, shift: m, scale: invT, into: w.baseAddress!, blockSums: b.baseAddress!)
                    }
                }
                var r = Double.random(in: 0..<1, using: &rng) * total
                for b in 0..<blocks {
                    if r >= blockSums[b] { r -= blockSums[b]; continue }
                    let end = min(x.count, (b + 1) * Sampler.block)
                    for i in b * Sampler.block..<end {
                        r -= Double(weights[i])
                        if r < 0 { return i }
                    }
                    return end - 1  // float vs double rounding of the block sum
                }
                return Sampler.argmax(x)  // rounding left r >= 0: the mass ends at the top tokens
            }
            // Filtered: the kept tokens' weights once, then the draw.
            if candidateWeights.count < candidates.count { candidateWeights = [Float](repeating: 0, count: candidates.count) }
            var total = 0.0
            for (j, i) in candidates.enumerated() {
                let w = expf((x[i] - m) * invT)
                candidateWeights[j] = w
                total += Double(w)
            }
            var r = Double.random(in: 0..<1, using: &rng) * total
            for j in candidates.indices {
                r -= Double(candidateWeights[j])
                if r < 0 { return candidates[j] }
            }
            return candidates[Sampler.argmax(Array(candidateWeights[0..<candidates.count]))]
        }
    }

    /// The distribution `sample` draws from (for tests and callers that want probabilities).
    public mutating func distribution(_ logits: [Float]) -> SamplingDistribution {
        guard temperature > 0 else { return SamplingDistribution(ids: [Sampler.argmax(logits)], probabilities: [1]) }
        return logits.withUnsafeBufferPointer { x in
            let m = maxValue(x)
            keptCandidates(x, max: m)
            let ids = candidates.isEmpty ? Array(0..<x.count) : candidates
            let w = ids.map { Double(expf((x[$0] - m) / temperature)) }
            let total = w.reduce(0, +)
            return SamplingDistribution(ids: ids, probabilities: w.map { $0 / total })
        }
    }

    // MARK: - The kept set without a full sort

    /// Fills `candidates` with the kept ids (empty: no filter, every token is kept).
    private mutating func keptCandidates(_ x: UnsafeBufferPointer<Float>, max m: Float) {
        candidates.removeAll(keepingCapacity: true)
        guard usesTopP || usesMinP || usesTopK else { return }
        // min-p: logprob >= max logprob + log(min_p)  <=>  logit >= max + log(min_p).
        let floor = usesMinP ? m + logf(minP) : -Float.infinity
        if usesTopP {
            topPCandidates(x, max: m)
            if usesMinP { candidates.removeAll { x[$0] < floor } }
            if usesTopK && candidates.count > topK { candidates = Sampler.largest(topK, of: candidates, in: x) }
        } else if usesTopK {
            candidates = Sampler.largest(topK, in: x, atLeast: floor)
        } else {
            for i in 0..<x.count where x[i] >= floor { candidates.append(i) }
        }
    }

    /// Top-p on the temperature-1 distribution: a token is kept when the mass of the tokens
    /// ranked above it is < top_p (mlx-lm: mass_above >= top_p * total is dropped), and so is
    /// every token tied with the last one kept. Only the edge bucket is sorted.
    private mutating func topPCandidates(_ x: UnsafeBufferPointer<Float>, max m: Float) {
        if weights.count < x.count { weights = [Float](repeating: 0, count: x.count) }
        let total = weights.withUnsafeMutableBufferPointer { expShifted(x, shift: m, scale: 1, into: $0.baseAddress!) }
        let target = Double(topP) * total
        @inline(__always) func descending(_ a: Int, _ b: Int) -> Bool { x[a] > x[b] || (x[a] == x[b] && a < b) }

        // Usually the nucleus lies within a few nats of the top: when the tokens >= m - delta
        // already hold the target mass, the cut is among them (every other token ranks below
        // all of them), so sorting those few is exact.
        for delta: Float in [4, 8, 16] {
            let floor = m - delta
            var near: [Int] = []
            var mass = 0.0
            var tooMany = false
            for i in 0..<x.count where x[i] >= floor {
                near.append(i)
                mass += Double(weights[i])
                if near.count > 4096 { tooMany = true; break }
            }
            if tooMany { break }
            guard mass >= target else { continue }
            near.sort(by: descending)
            candidates = Sampler.nucleus(near, massAbove: 0, target: target, x: x, weights: weights)
            return
        }

        // Else bucket the mass by (m - x) * 4 (0.25 nats per bucket; the last takes everything
        // further down) and sort only the bucket where the nucleus ends.
        let perNat: Float = 4, buckets = 128
        // NaN or infinite distances (non-finite logits, e.g. from damaged weights) go to the
        // last bucket instead of trapping in Int(_:).
        @inline(__always) func bucket(_ v: Float) -> Int {
            let d = (m - v) * perNat
            if d >= 0 && d < Float(buckets - 1) { return Int(d) }
            return d < 0 ? 0 : buckets - 1
        }
        var mass = [Double](repeating: 0, count: buckets)
        var count = [Int](repeating: 0, count: buckets)
        weights.withUnsafeBufferPointer { w in
            mass.withUnsafeMutableBufferPointer { mb in
                count.withUnsafeMutableBufferPointer { cb in
                    for i in 0..<x.count {
                        let b = bucket(x[i])
                        mb[b] += Double(w[i])
                        cb[b] += 1
                    }
                }
            }
        }
        var above = 0.0, edge = buckets - 1
        for b in 0..<buckets {
            if above + mass[b] >= target { edge = b; break }
            above += mass[b]
        }
        // Every token of the buckets above `edge` is kept (the mass above any of them is < the
        // mass above `edge` < target); below `edge` none is.
        var kept: [Int] = [], edgeIds: [Int] = []
        kept.reserveCapacity(count[0..<edge].reduce(0, +))
        edgeIds.reserveCapacity(count[edge])
        let below = m - Float(edge + 2) / perNat  // every token of a bucket <= edge is above this
        for i in 0..<x.count where x[i] > below || edge == buckets - 1 {
            let b = bucket(x[i])
            if b < edge { kept.append(i) } else if b == edge { edgeIds.append(i) }
        }
        edgeIds.sort(by: descending)
        candidates = kept + Sampler.nucleus(edgeIds, massAbove: above, target: target, x: x, weights: weights)
    }

    /// The prefix of `sorted` (descending) that top-p keeps, given the mass ranked above it:
    /// a token is kept while the mass before it is < target, and so is any token tied with
    /// the last one kept.
    static func nucleus(_ sorted: [Int], massAbove: Double, target: Double,
                        x: UnsafeBufferPointer<Float>, weights: [Float]) -> [Int] {
        var cum = massAbove
        var n = 0
        var lastKept = -Float.infinity
        for i in sorted {
            if cum >= target && x[i] < lastKept { break }
            lastKept = x[i]
            cum += Double(weights[i])
            n += 1
        }
        return Array(sorted.prefix(n))
    }

    /// The `k` largest logits (ties: lower id first) among those >= `floor`, in descending order;
    /// one pass with a bounded min-heap.
    static func largest(_ k: Int, in x: UnsafeBufferPointer<Float>, atLeast floor: Float) -> [Int] {
        var heap = BoundedHeap(capacity: k, x: x)
        var i = 0
        // Fill, then only values above the weakest kept one (ids rise, so a tie loses) enter.
        while i < x.count && heap.items.count < k { if x[i] >= floor { heap.offer(i) }; i += 1 }
        guard k > 0, heap.items.count == k else { return heap.sortedDescending() }
        var weakest = x[heap.items[0]]
        while i < x.count {
            if x[i] > weakest {
                heap.offer(i)
                weakest = x[heap.items[0]]
            }
            i += 1
        }
        return heap.sortedDescending()
    }

    static func largest(_ k: Int, of ids: [Int], in x: UnsafeBufferPointer<Float>) -> [Int] {
        var heap = BoundedHeap(capacity: k, x: x)
        for i in ids { heap.offer(i) }
        return heap.sortedDescending()
    }

    // MARK: - Plain reference (sorts everything)

    /// mlx-lm's filters written the direct way: sort all tokens by logit, cut, softmax. The
    /// parity test checks `distribution` against this and against Python's numbers.
    public static func referenceDistribution(_ logits: [Float], temperature: Float, topP: Float = 1, topK: Int = 0,
                                             minP: Float = 0) -> SamplingDistribution {
        guard temperature > 0 else { return SamplingDistribution(ids: [argmax(logits)], probabilities: [1]) }
        let order = logits.indices.sorted { logits[$0] > logits[$1] || (logits[$0] == logits[$1] && $0 < $1) }
        let m = logits[order[0]]
        let p1 = order.map { exp(Double(logits[$0] - m)) }
        let z = p1.reduce(0, +)
        var keep = order.count
        if topP > 0 && topP < 1 {
            var cum = 0.0, n = 0
            while n < order.count && cum < Double(topP) * z { cum += p1[n]; n += 1 }
            while n < order.count && logits[order[n]] == logits[order[n - 1]] { n += 1 }
            keep = min(keep, n)
        }
        if minP > 0 {
            let floor = m + logf(minP)
            keep = min(keep, order.prefix { logits[$0] >= floor }.count)
        }
        if topK > 0 { keep = min(keep, topK) }
        let ids = Array(order.prefix(keep))
        let w = ids.map { exp(Double(logits[$0] - m) / Double(temperature)) }
        let total = w.reduce(0, +)
        let filtered = keep < order.count
        let pairs = zip(ids, w.map { $0 / total })
        let sorted = filtered ? Array(pairs) : pairs.sorted { $0.0 < $1.0 }
        return SamplingDistribution(ids: sorted.map(\.0), probabilities: sorted.map(\.1))
    }
}

/// A min-heap of at most `capacity` token ids ordered by (logit, -id): the root is the weakest
/// of the kept ones, so most tokens are rejected by one comparison.
struct BoundedHeap {
    let capacity: Int
    let x: UnsafeBufferPointer<Float>
    var items: [Int] = []

    init(capacity: Int, x: UnsafeBufferPointer<Float>) {
        self.capacity = capacity
        self.x = x
        items.reserveCapacity(capacity)
    }

    /// a ranks below b.
    @inline(__always) func weaker(_ a: Int, _ b: Int) -> Bool { x[a] < x[b] || (x[a] == x[b] && a > b) }

    mutating func offer(_ i: Int) {
        if items.count < capacity {
            items.append(i)
            var c = items.count - 1
            while c > 0 {
                let p = (c - 1) / 2
                guard weaker(items[c], items[p]) else { break }
                items.swapAt(c, p)
                c = p
            }
        } else if capacity > 0, weaker(items[0], i) {
            items[0] = i
            var p = 0
            while true {
                let l = 2 * p + 1, r = l + 1
                var m = p
                if l < items.count && weaker(items[l], items[m]) { m = l }
                if r < items.count && weaker(items[r], items[m]) { m = r }
                if m == p { break }
                items.swapAt(p, m)
                p = m
            }
        }
    }

    func sortedDescending() -> [Int] { items.sorted { weaker($1, $0) } }
}

// MARK: - Vectorized helpers

/// Largest value (NaN-free input assumed, as logits are).
func maxValue(_ x: UnsafeBufferPointer<Float>) -> Float {
    let n = x.count
    var acc = SIMD8<Float>(repeating: -.infinity)
    var i = 0
    let raw = UnsafeRawPointer(x.baseAddress!)
    while i + 8 <= n {
        acc = pointwiseMax(acc, raw.loadUnaligned(fromByteOffset: 4 * i, as: SIMD8<Float>.self))
        i += 8
    }
    var m = acc.max()
    while i < n { m = max(m, x[i]); i += 1 }
    return m
}

/// out[i] = exp((x[i] - shift) * scale); returns the sum (Double). With `blockSums`, also the
/// sum of each block of `Sampler.block` values.
func expShifted(_ x: UnsafeBufferPointer<Float>, shift: Float, scale: Float, into out: UnsafeMutablePointer<Float>,
                blockSums: UnsafeMutablePointer<Double>? = nil) -> Double {
    let n = x.count
    var total = 0.0
    let raw = UnsafeRawPointer(x.baseAddress!), dst = UnsafeMutableRawPointer(out)
    let s = SIMD8<Float>(repeating: shift), c = SIMD8<Float>(repeating: scale)
    var start = 0, b = 0
    while start < n {
        let end = min(n, start + Sampler.block)
        var acc = SIMD8<Float>(repeating: 0)
        var i = start
        while i + 8 <= end {
            let e = simdExp((raw.loadUnaligned(fromByteOffset: 4 * i, as: SIMD8<Float>.self) - s) * c)
            dst.storeBytes(of: e, toByteOffset: 4 * i, as: SIMD8<Float>.self)
            acc += e
            i += 8
        }
        var sum = Double(acc.sum())
        while i < end { out[i] = expf((x[i] - shift) * scale); sum += Double(out[i]); i += 1 }
        blockSums?[b] = sum
        total += sum
        start = end
        b += 1
    }
    return total
}

/// exp for 8 floats x <= 88: 2^n * p(r), r = x - n ln 2 in [-ln2/2, ln2/2], degree-6
/// polynomial (Cephes expf coefficients, ~1 ulp). Below -87.3 it returns exp(-87.3) ≈ 1.2e-38
/// instead of 0 (no weight anyone can tell apart). n is rounded with the 1.5 * 2^23 trick, so
/// every step is a plain lane-wise operation.
@inline(__always)
func simdExp(_ v: SIMD8<Float>) -> SIMD8<Float> {
    let x = pointwiseMax(v, SIMD8(repeating: -87.3))
    let magic = SIMD8<Float>(repeating: 12_582_912)  // 1.5 * 2^23
    let t = x * 1.442_695_04 + magic
    let n = t - magic
    var r = x - n * 0.693_359_375
    r = r - n * -2.121_944_4e-4
    var p = SIMD8<Float>(repeating: 1.987_569_1e-4)
    p = p * r + 1.398_199_9e-3
    p = p * r + 8.333_452e-3
    p = p * r + 4.166_579_6e-2
    p = p * r + 1.666_666_5e-1
    p = p * r + 5e-1
    p = p * r * r + r + 1
    // t's low mantissa bits hold n (two's complement offset by magic's).
    let ni = unsafeBitCast(t, to: SIMD8<Int32>.self) &- unsafeBitCast(magic, to: SIMD8<Int32>.self)
    return p * unsafeBitCast((ni &+ 127) &<< 23, to: SIMD8<Float>.self)
}
