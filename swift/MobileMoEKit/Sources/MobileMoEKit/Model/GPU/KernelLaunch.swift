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

struct KernelLaunch {
    /// The Metal entry point (and emulator case) name.
    let kernel: String
    /// Buffer arguments in entry-point order (buffer index = position), including .dims/.fp.
    let bindings: [Binding]
    let dims: [Int32]      // padded to 16
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

/// Launch geometry constants of the kernel bodies (#defines of metal/moe_*.h and
/// mobilemoe_ops.h); a test checks them against the headers.
enum KernelGeometry {
    static let threads = 256       // MM_NT
    static let simdGroups = 8      // MM_NW
    static let maxExperts = 256    // MM_MAX_E
    static let maxK = 8            // MM_MAX_K
    static let pairsPerGroup = 8   // MM_PT
    static let sharedRowsPerGroup = 32  // MM_RPB
    static let downWordsPerGroup = 4    // MM_CT
    static let tileRows = 32       // MM_BM
    static let tileHalf = 64       // MM_BH
    static let linearTokens = 8    // MO_TOK
    static let maxHeadDim = 256    // MO_MAX_D
    static let maxHidden = 2048    // MM_MAX_H (the MoE decode kernel stages x in threadgroup memory)
    static let decodeMaxTokens = 8 // tokens up to which the MoE takes the decode path (as moe_ffn.py)
}

@inline(__always) func ceilDiv(_ a: Int, _ b: Int) -> Int { (a + b - 1) / b }
