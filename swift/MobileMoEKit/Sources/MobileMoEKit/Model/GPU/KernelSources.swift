// The Metal library source, assembled at run time from the package resources: the Metal shim,
// MoE bodies and MoE entry points copied from kernels/ (swift/sync-kernels.sh; issue 5),
// mobilemoe_ops.h and its entry points below, with local #include lines dropped (everything
// is one translation unit). Compiled with makeLibrary(source:options:): SwiftPM does not
// build .metal files.
import Foundation

enum KernelSources {
    /// In include order.
    static let files = ["mm_metal.h", "moe_common.h", "moe_decode.h", "moe_prefill.h", "moe_kernels.metal", "mobilemoe_ops.h"]
    /// The files that are copies of kernels/.
    static let sharedFiles = ["mm_metal.h", "moe_common.h", "moe_decode.h", "moe_prefill.h", "moe_kernels.metal"]

    static func directory() throws -> URL {
        guard let url = Bundle.module.url(forResource: "Kernels", withExtension: nil) else {
            throw InferenceError.backendUnavailable("kernel sources (Kernels/) missing from the MobileMoEKit resource bundle")
        }
        return url
    }

    static func text(_ file: String) throws -> String {
        try String(contentsOf: directory().appendingPathComponent(file), encoding: .utf8)
    }

    /// One translation unit: the files in order without their local includes, then the entry points.
    static func metalLibrarySource() throws -> String {
        let body = try files.map { file in
            try text(file).split(separator: "\n", omittingEmptySubsequences: false)
                .filter { !$0.hasPrefix("#include \"") }.joined(separator: "\n")
        }
        return body.joined(separator: "\n") + "\n" + entryPoints
    }

    /// `kernel void` wrappers of mobilemoe_ops.h: buffers in KernelLaunch.bindings order, then
    /// dims, then fp; threadgroup memory declared here and handed to the bodies (as the emulator
    /// does). The MoE entry points come from kernels/moe_kernels.metal.
    static let entryPoints = """
    // ---- MobileMoEKit entry points (Model/GPU/KernelSources.swift) ----
    #define MO_IDS uint tid [[thread_index_in_threadgroup]], uint gid [[threadgroup_position_in_grid]], \\
                   uint lane [[thread_index_in_simdgroup]], uint warp [[simdgroup_index_in_threadgroup]]

    kernel void mobilemoe_embed(const device int* tokens [[buffer(0)]], const device uint32_t* w [[buffer(1)]],
                         const device half* s [[buffer(2)]], device float* out [[buffer(3)]],
                         const device int* dims [[buffer(4)]], const device float* fp [[buffer(5)]], MO_IDS) {
      mo_embed<half>(tokens, w, s, out, dims, tid, gid);
    }

    kernel void mobilemoe_rmsnorm(const device float* x [[buffer(0)]], const device float* w [[buffer(1)]],
                           device float* out [[buffer(2)]], const device int* dims [[buffer(3)]],
                           const device float* fp [[buffer(4)]], MO_IDS) {
      threadgroup float red[MM_NW];
      mo_rmsnorm(x, w, out, dims, fp, red, tid, gid, lane, warp);
    }

    kernel void mobilemoe_linear(const device float* x [[buffer(0)]], const device uint32_t* w [[buffer(1)]],
                          const device half* s [[buffer(2)]], device float* y [[buffer(3)]],
                          const device int* dims [[buffer(4)]], const device float* fp [[buffer(5)]], MO_IDS) {
      mo_linear<half>(x, w, s, y, dims, gid, lane, warp);
    }

    kernel void mobilemoe_rope_norm(device float* x [[buffer(0)]], const device float* inv_freq [[buffer(1)]],
                             const device int* dims [[buffer(2)]], const device float* fp [[buffer(3)]], MO_IDS) {
      mo_rope_norm(x, inv_freq, dims, fp, gid, lane, warp);
    }

    kernel void mobilemoe_attention(const device float* q [[buffer(0)]], const device float* kc [[buffer(1)]],
                             const device float* vc [[buffer(2)]], device float* out [[buffer(3)]],
                             const device int* dims [[buffer(4)]], const device float* fp [[buffer(5)]], MO_IDS) {
      threadgroup float sm[MM_NW];
      threadgroup float sl[MM_NW];
      threadgroup float so[MM_NW * MO_MAX_D];
      mo_attention(q, kc, vc, out, dims, fp, sm, sl, so, tid, gid, lane, warp);
    }

    kernel void mobilemoe_add(device float* x [[buffer(0)]], const device float* y [[buffer(1)]],
                       const device int* dims [[buffer(2)]], const device float* fp [[buffer(3)]], MO_IDS) {
      mo_add(x, y, dims, tid, gid);
    }
    """

    /// Entry point names, as the plan uses them.
    static let kernelNames = ["mobilemoe_embed", "mobilemoe_rmsnorm", "mobilemoe_linear", "mobilemoe_rope_norm",
                              "mobilemoe_attention", "mobilemoe_add",
                              "moe_gate_up_decode_f32", "moe_down_decode_f32", "moe_route_f32",
                              "moe_gate_up_prefill_f32", "moe_down_prefill", "moe_combine_f32"]
}
