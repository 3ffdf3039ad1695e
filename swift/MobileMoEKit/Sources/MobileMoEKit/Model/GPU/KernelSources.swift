// The Metal library source, assembled at run time from the package resources: the Metal shim
// and MoE bodies copied from metal/ (swift/sync-kernels.sh), mobilemoe_ops.h, and the entry
// points below. Compiled with makeLibrary(source:options:) (SwiftPM does not build .metal).
import Foundation

enum KernelSources {
    /// In include order.
    static let files = ["mm_metal.h", "moe_common.h", "moe_decode.h", "moe_prefill.h", "mobilemoe_ops.h"]

    static func directory() throws -> URL {
        guard let url = Bundle.module.url(forResource: "Kernels", withExtension: nil) else {
            throw InferenceError.backendUnavailable("kernel sources (Kernels/) missing from the MobileMoEKit resource bundle")
        }
        return url
    }

    static func text(_ file: String) throws -> String {
        try String(contentsOf: directory().appendingPathComponent(file), encoding: .utf8)
    }

    /// One translation unit: the headers inlined in order, then the entry points.
    static func metalLibrarySource() throws -> String {
        try files.map(text).joined(separator: "\n") + "\n" + entryPoints
    }

    /// `kernel void` wrappers: buffers in KernelLaunch.bindings order, then dims, then fp;
    /// threadgroup memory declared here and handed to the bodies (as the emulator does).
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

    kernel void mobilemoe_moe_gate_up_decode(
        const device float* x [[buffer(0)]], const device float* rw [[buffer(1)]], const device float* eb [[buffer(2)]],
        const device uint32_t* gu_w [[buffer(3)]], const device half* gu_s [[buffer(4)]],
        const device uint32_t* sg_w [[buffer(5)]], const device half* sg_s [[buffer(6)]],
        const device uint32_t* su_w [[buffer(7)]], const device half* su_s [[buffer(8)]],
        device float* h [[buffer(9)]], device float* hs [[buffer(10)]], device int* sel [[buffer(11)]],
        device float* selw [[buffer(12)]], const device int* dims [[buffer(13)]], const device float* fp [[buffer(14)]],
        MO_IDS) {
      threadgroup float red[MM_DEC_RED];
      threadgroup float scores[MM_MAX_E];
      threadgroup int ch[MM_MAX_K];
      mm_moe_gate_up_decode<float, half, true>(x, rw, eb, gu_w, gu_s, sg_w, sg_s, su_w, su_s, dims, fp,
                                               h, hs, sel, selw, red, scores, ch, tid, gid, lane, warp);
    }

    kernel void mobilemoe_moe_down_decode(
        const device float* h [[buffer(0)]], const device float* hs [[buffer(1)]], const device int* sel [[buffer(2)]],
        const device float* selw [[buffer(3)]], const device uint32_t* dn_w [[buffer(4)]], const device half* dn_s [[buffer(5)]],
        const device uint32_t* sd_w [[buffer(6)]], const device half* sd_s [[buffer(7)]], device float* y [[buffer(8)]],
        const device int* dims [[buffer(9)]], const device float* fp [[buffer(10)]], MO_IDS) {
      threadgroup float red[MM_DEC_RED];
      threadgroup float sh[MM_CT * 8];
      mm_moe_down_decode<float, half, true>(h, hs, sel, selw, dn_w, dn_s, sd_w, sd_s, dims, y, red, sh,
                                            tid, gid, lane, warp);
    }

    kernel void mobilemoe_moe_route(
        const device float* x [[buffer(0)]], const device float* rw [[buffer(1)]], const device float* eb [[buffer(2)]],
        device int* sel [[buffer(3)]], device float* selw [[buffer(4)]], const device int* dims [[buffer(5)]],
        const device float* fp [[buffer(6)]], MO_IDS) {
      threadgroup float scores[MM_NW * MM_MAX_E];
      mm_moe_route<float>(x, rw, eb, dims, fp, sel, selw, scores, gid, lane, warp);
    }

    kernel void mobilemoe_moe_gate_up_prefill(
        const device float* x [[buffer(0)]], const device int* sel [[buffer(1)]],
        const device uint32_t* gu_w [[buffer(2)]], const device half* gu_s [[buffer(3)]],
        const device uint32_t* sg_w [[buffer(4)]], const device half* sg_s [[buffer(5)]],
        const device uint32_t* su_w [[buffer(6)]], const device half* su_s [[buffer(7)]],
        device float* h [[buffer(8)]], device float* hs [[buffer(9)]], const device int* dims [[buffer(10)]],
        const device float* fp [[buffer(11)]], MO_IDS) {
      threadgroup float as[MM_AS_SIZE];
      threadgroup float bs[MM_BS_SIZE];
      threadgroup int list[MM_LIST_SIZE];
      threadgroup int tmp[MM_NW + 1];
      mm_moe_gate_up_prefill<float, half, true>(x, sel, gu_w, gu_s, sg_w, sg_s, su_w, su_s, dims, h, hs,
                                                as, bs, list, tmp, tid, gid, lane, warp);
    }

    kernel void mobilemoe_moe_down_prefill(
        const device float* h [[buffer(0)]], const device float* hs [[buffer(1)]], const device int* sel [[buffer(2)]],
        const device float* selw [[buffer(3)]], const device uint32_t* dn_w [[buffer(4)]], const device half* dn_s [[buffer(5)]],
        const device uint32_t* sd_w [[buffer(6)]], const device half* sd_s [[buffer(7)]],
        device float* ys [[buffer(8)]], device float* ysh [[buffer(9)]], const device int* dims [[buffer(10)]],
        const device float* fp [[buffer(11)]], MO_IDS) {
      threadgroup float as[MM_AS_SIZE];
      threadgroup float bs[MM_BS_SIZE];
      threadgroup int list[MM_LIST_SIZE];
      threadgroup int tmp[MM_NW + 1];
      mm_moe_down_prefill<half, true>(h, hs, sel, selw, dn_w, dn_s, sd_w, sd_s, dims, ys, ysh,
                                      as, bs, list, tmp, tid, gid, lane, warp);
    }

    kernel void mobilemoe_moe_combine(const device float* ys [[buffer(0)]], const device float* ysh [[buffer(1)]],
                               device float* y [[buffer(2)]], const device int* dims [[buffer(3)]],
                               const device float* fp [[buffer(4)]], MO_IDS) {
      mm_moe_combine<float>(ys, ysh, dims, y, tid, gid);
    }
    """

    /// Entry point names, as the plan uses them.
    static let kernelNames = ["mobilemoe_embed", "mobilemoe_rmsnorm", "mobilemoe_linear", "mobilemoe_rope_norm", "mobilemoe_attention", "mobilemoe_add",
                              "mobilemoe_moe_gate_up_decode", "mobilemoe_moe_down_decode", "mobilemoe_moe_route",
                              "mobilemoe_moe_gate_up_prefill", "mobilemoe_moe_down_prefill", "mobilemoe_moe_combine"]
}
