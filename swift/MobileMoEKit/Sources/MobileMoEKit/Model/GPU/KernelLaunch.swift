// The GPU forward pass as data: a list of kernel launches over named buffers. The plan
// (GPUForwardPlan.swift) is platform-free; an executor (Metal, or the CPU kernel emulator in
// the tests) binds the names to memory and runs the launches in order.

/// Per-session activation buffers.
enum Scratch: CaseIterable {
    case tokens            // int32 [M]
    case h, xn, y          // [M, H]: residual stream, normed input, MoE output
    case q, attn           // [M, heads * D]
    case moeH              // [M * k, I]   routed SwiGLU activations
    case moeHS             // [M, S]       shared-expert activations
    case sel               // int32 [M * k] chosen experts
    case selw              // [M * k]      their weights
    case ys                // [M * k, H]   prefill: weighted routed outputs
    case ysh               // [M, H]       prefill: shared-expert output
    case last              // [H]          final-normed last row
    case logits            // [V]
}

enum BufferRef: Hashable {
    /// A checkpoint tensor (packed int4 words, fp16 scales), by name.
    case tensor(String)
    /// A float32 array fixed at load time (norm weights, router, expert bias, RoPE frequencies).
    case constant(String)
    case scratch(Scratch)
    /// Layer l's KV cache: [capacity][kv_heads * D] float32.
    case keys(Int), values(Int)
    /// The launch's own int32[16] / float32[8] parameters.
    case dims, fp
}

struct Binding: Hashable {
    var ref: BufferRef
    /// Byte offset into the buffer.
    var offset: Int = 0
}

struct KernelLaunch: Equatable {
    /// The Metal entry point (and emulator case) name.
    let kernel: String
    /// Buffer arguments in entry-point order (buffer index = position), including .dims/.fp.
    var bindings: [Binding]
    var dims: [Int32]      // padded to 16
    let fp: [Float]        // padded to 8
    /// Threadgroups of 256 threads (1-D).
    let groups: Int

    init(_ kernel: String, _ bindings: [Binding], dims: [Int], fp: [Float] = [], groups: Int) {
        precondition(dims.count <= 16 && fp.count <= 8)
        self.kernel = kernel
        self.bindings = bindings
        self.dims = dims.map { Int32($0) } + Array(repeating: 0, count: 16 - dims.count)
        self.fp = fp + Array(repeating: 0, count: 8 - fp.count)
        self.groups = groups
    }
}

/// Launch geometry of the kernel bodies, read from the #defines of the shipped headers at run
/// time (as mlx_mobilemoe/kernels/moe.py does), so grids always match the bodies.
struct KernelGeometry {
    let threads: Int             // MM_NT
    let simdGroups: Int          // MM_NW
    let maxExperts: Int          // MM_MAX_E
    let maxK: Int                // MM_MAX_K
    let maxHidden: Int           // MM_MAX_H (the MoE decode kernel stages x in threadgroup memory)
    let pairsPerGroup: Int       // MM_PT
    let sharedRowsPerGroup: Int  // MM_RPB
    let downWordsPerGroup: Int   // MM_CT
    let tileRows: Int            // MM_BM
    let tileHalf: Int            // MM_BH
    let linearTokens: Int        // MO_TOK
    let maxHeadDim: Int          // MO_MAX_D
    /// Tokens up to which the MoE takes the decode kernels (as mlx_mobilemoe/kernels/moe.py's DECODE_MAX_TOKENS).
    static let decodeMaxTokens = 8

    init(defines d: [String: Int]) throws {
        func v(_ name: String) throws -> Int {
            guard let x = d[name], x > 0 else { throw InferenceError.backendUnavailable("kernel headers define no \(name)") }
            return x
        }
        threads = try v("MM_NT"); simdGroups = try v("MM_NW"); maxExperts = try v("MM_MAX_E"); maxK = try v("MM_MAX_K")
        maxHidden = try v("MM_MAX_H"); pairsPerGroup = try v("MM_PT"); sharedRowsPerGroup = try v("MM_RPB")
        downWordsPerGroup = try v("MM_CT"); tileRows = try v("MM_BM"); tileHalf = try v("MM_BH")
        linearTokens = try v("MO_TOK"); maxHeadDim = try v("MO_MAX_D")
    }

    /// From the package's kernel sources (parsed once).
    static func shipped() throws -> KernelGeometry { try cached.get() }
    private static let cached = Result { try KernelGeometry(defines: defines(in: KernelSources.files.map(KernelSources.text))) }

    /// Integer #defines (literals and + - * / ( ) of earlier ones) of MM_* and MO_* names.
    static func defines(in sources: [String]) -> [String: Int] {
        var out: [String: Int] = [:]
        for source in sources {
            for line in source.split(separator: "\n") where line.hasPrefix("#define MM_") || line.hasPrefix("#define MO_") {
                let body = line.dropFirst("#define ".count)
                guard let space = body.firstIndex(of: " ") else { continue }
                let name = String(body[..<space])
                var expr = String(body[space...])
                if let comment = expr.range(of: "//") { expr = String(expr[..<comment.lowerBound]) }
                if let value = IntExpression.evaluate(expr, names: out) { out[name] = value }
            }
        }
        return out
    }
}

/// A tiny evaluator for the integer expressions of #defines.
enum IntExpression {
    static func evaluate(_ text: String, names: [String: Int]) -> Int? {
        var tokens: [String] = []
        var current = ""
        for c in text {
            if c.isLetter || c.isNumber || c == "_" { current.append(c); continue }
            if !current.isEmpty { tokens.append(current); current = "" }
            if "+-*/()".contains(c) { tokens.append(String(c)) } else if !c.isWhitespace { return nil }
        }
        if !current.isEmpty { tokens.append(current) }
        var i = 0
        func atom() -> Int? {
            guard i < tokens.count else { return nil }
            let t = tokens[i]; i += 1
            if t == "(" { let v = sum(); guard i < tokens.count, tokens[i] == ")" else { return nil }; i += 1; return v }
            return Int(t) ?? names[t]
        }
        func product() -> Int? {
            guard var v = atom() else { return nil }
            while i < tokens.count, tokens[i] == "*" || tokens[i] == "/" {
                let op = tokens[i]; i += 1
                guard let r = atom(), op == "*" || r != 0 else { return nil }
                v = op == "*" ? v * r : v / r
            }
            return v
        }
        func sum() -> Int? {
            guard var v = product() else { return nil }
            while i < tokens.count, tokens[i] == "+" || tokens[i] == "-" {
                let op = tokens[i]; i += 1
                guard let r = product() else { return nil }
                v = op == "+" ? v + r : v - r
            }
            return v
        }
        guard !tokens.isEmpty, let v = sum(), i == tokens.count else { return nil }
        return v
    }
}

@inline(__always) func ceilDiv(_ a: Int, _ b: Int) -> Int { (a + b - 1) / b }
