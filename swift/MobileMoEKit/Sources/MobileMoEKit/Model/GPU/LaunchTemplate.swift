// The launch plan, built once per step shape (tokens, experts per token) instead of once per
// token. The cache position enters a step's launches only linearly — the attention/RoPE
// `pos0` dims entry and the byte offset of the K/V cache rows written — so a template keeps the
// launches at position 0 and, per launch, the dims entries and binding offsets that move with
// the position and by how much. `instantiate(position:)` equals `GPUForwardPlan.launches` at
// that position (checked when a template is built, and by the tests at many positions).
import Foundation

final class LaunchTemplate: @unchecked Sendable {
    let tokens: Int
    let expertsPerToken: Int
    /// The launches at position 0.
    let base: [KernelLaunch]
    /// Per launch: (dims index, change per position).
    let dimPatches: [[(index: Int, step: Int32)]]
    /// Per launch: (binding index, byte-offset change per position).
    let offsetPatches: [[(index: Int, step: Int)]]

    init(plan: GPUForwardPlan, tokens T: Int, expertsPerToken k: Int) {
        tokens = T
        expertsPerToken = k
        let a = plan.launches(tokens: T, position: 0, expertsPerToken: k)
        let b = plan.launches(tokens: T, position: 1, expertsPerToken: k)
        base = a
        var dp: [[(Int, Int32)]] = [], op: [[(Int, Int)]] = []
        for (la, lb) in zip(a, b) {
            precondition(la.kernel == lb.kernel && la.groups == lb.groups && la.fp == lb.fp && la.bindings.count == lb.bindings.count,
                         "the launch plan's shape depends on the position")
            dp.append(zip(la.dims, lb.dims).enumerated().compactMap { i, v in v.0 == v.1 ? nil : (i, v.1 - v.0) })
            op.append(zip(la.bindings, lb.bindings).enumerated().compactMap { i, v in
                precondition(v.0.ref == v.1.ref, "the launch plan's buffers depend on the position")
                return v.0.offset == v.1.offset ? nil : (i, v.1.offset - v.0.offset)
            })
        }
        dimPatches = dp.map { $0.map { (index: $0.0, step: $0.1) } }
        offsetPatches = op.map { $0.map { (index: $0.0, step: $0.1) } }
    }

    /// Launches that move with the position.
    var patchedLaunches: Int { zip(dimPatches, offsetPatches).filter { !$0.0.isEmpty || !$0.1.isEmpty }.count }

    /// The launches at `position` (what an executor without its own resolved copy runs).
    func instantiate(position p: Int) -> [KernelLaunch] {
        guard p != 0 else { return base }
        return base.indices.map { i in
            var l = base[i]
            for d in dimPatches[i] { l.dims[d.index] += Int32(p) * d.step }
            for o in offsetPatches[i] { l.bindings[o.index].offset += p * o.step }
            return l
        }
    }
}

/// Templates by (tokens, experts per token); thread-safe.
final class LaunchTemplateCache: @unchecked Sendable {
    let plan: GPUForwardPlan
    private let lock = NSLock()
    private var templates: [Int: LaunchTemplate] = [:]
    /// Templates built so far (tests: built once per shape).
    private(set) var builds = 0

    init(plan: GPUForwardPlan) { self.plan = plan }

    func template(tokens: Int, expertsPerToken k: Int) -> LaunchTemplate {
        let key = tokens &* 1024 &+ k
        lock.lock()
        defer { lock.unlock() }
        if let t = templates[key] { return t }
        let t = LaunchTemplate(plan: plan, tokens: tokens, expertsPerToken: k)
        templates[key] = t
        builds += 1
        return t
    }

    /// Drops the templates (memory warning); they are rebuilt on demand.
    func removeAll() {
        lock.lock()
        templates = [:]
        lock.unlock()
    }
}

/// Encoder state between launches of one command encoder: what is bound at each buffer index,
/// so an executor skips a bind that is already in place and moves only the offset when the
/// buffer is the same (setBufferOffset). Buffers are identified by any Hashable id.
struct EncoderBindings<ID: Hashable> {
    enum Action: Equatable { case skip, setOffset, setBuffer }
    private var bound: [Int: (ID, Int)] = [:]
    private var pipeline: Int?

    /// true when the pipeline must be set.
    mutating func use(pipeline p: Int) -> Bool {
        defer { pipeline = p }
        return pipeline != p
    }

    mutating func bind(_ id: ID, offset: Int, index: Int) -> Action {
        defer { bound[index] = (id, offset) }
        guard let (b, o) = bound[index] else { return .setBuffer }
        if b != id { return .setBuffer }
        return o == offset ? .skip : .setOffset
    }

    /// Inline bytes (setBytes) replace whatever was bound at `index`.
    mutating func bytes(index: Int) { bound[index] = nil }
}

/// Encoder calls one step makes (for the tests and README): naive = one pipeline set and one
/// setBuffer per binding per launch (the per-token parameter buffer included); encoded = with
/// `EncoderBindings` elision, dims/fp as setBytes.
struct EncoderCallCount: Equatable {
    var dispatches = 0
    var naive = 0
    var pipelines = 0, setBuffer = 0, setOffset = 0, setBytes = 0, skipped = 0
    var encoded: Int { pipelines + setBuffer + setOffset + setBytes }

    init(_ launches: [KernelLaunch], kernelIndex: (String) -> Int) {
        var state = EncoderBindings<BufferRef>()
        for l in launches {
            dispatches += 1
            naive += 1 + l.bindings.count
            if state.use(pipeline: kernelIndex(l.kernel)) { pipelines += 1 }
            for (i, b) in l.bindings.enumerated() {
                switch b.ref {
                case .dims, .fp:
                    setBytes += 1
                    state.bytes(index: i)
                default:
                    switch state.bind(b.ref, offset: b.offset, index: i) {
                    case .skip: skipped += 1
                    case .setOffset: setOffset += 1
                    case .setBuffer: setBuffer += 1
                    }
                }
            }
        }
    }
}
