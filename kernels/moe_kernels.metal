// moe_kernels.metal — Metal entry points of the fused MoE FFN, for the Swift package.
// GENERATED from mlx_mobilemoe/kernels/table.py (python -m mlx_mobilemoe.kernels); do
// not edit. tests/test_kernels.py checks it is current and compiles it as C++ over stubs.
//
// Same bodies as the Python build (moe_decode.h, moe_prefill.h), reading the OFFICIAL
// MobileMoE packed layout straight from the mmapped safetensors (OFFICIAL = true: two's
// complement nibbles, value = nibble * fp16 scale, 4.5 bits per weight).
//
// Runtime compilation: MTLDevice.makeLibrary(source:) resolves no local #include, so pass the
// concatenation mm_metal.h + moe_common.h + moe_decode.h + moe_prefill.h + this file with the
// `#include "..."` lines removed. Kernel names: <entry>_f32 / <entry>_f16 (activation dtype),
// except entry points without a T parameter (no suffix).
//
// Every kernel: threadgroup = MM_NT (256) x 1 x 1 threads; dispatchThreadgroups(groups, 256)
// with `groups` as listed (dispatchThreads(groups * 256) is the same). Buffers in argument
// order, index = position. Sizes use T tokens, H hidden, I routed width, S shared width (0:
// none), E experts, K experts per token; cdiv = ceil division. Weights are the checkpoint
// tensors (uint8 bytes bound as uint32 words; every row length is a multiple of 4 bytes):
//   gu_w / gu_s  experts.gate_up_qweight [E, H, 2I/2] / gate_up_scale [E, H, 2I/32]
//   dn_w / dn_s  experts.down_qweight [E, I, H/2] / down_scale [E, I, H/32]
//   sg_*, su_*   shared_expert.gate_proj / up_proj qweight [S, H/2], weight_scale [S, H/32]
//   sd_*         shared_expert.down_proj qweight [H, S/2], weight_scale [H, S/32]
//   rw           router.weight [E, H] float32;  eb  expert_bias [E] as float32 (the file has BF16)
// Without a shared expert set dims[3] = 0 and bind any buffer to the shared slots.
// dims: int32[16] = {T, H, I, S, E, K, norm_topk_prob, 0...};  fp: float32[8] = {routed_scaling_factor, 0...}
// Limits: E <= 256, K <= 8, K <= E, H <= 2048; H, I, S multiples of 32.
//
// Decode (T <= 8) is two launches, prefill four:
//   moe_gate_up_decode: x rw eb gu_w gu_s sg_w sg_s su_w su_s dims fp
//       -> h[T * K, I], hs[T, S], sel[T * K], selw[T * K]
//       groups = T * (cdiv(K * (I / 8), MM_PT) + cdiv(S, MM_RPB))
//   moe_down_decode: h hs sel selw dn_w dn_s sd_w sd_s dims
//       -> y[T, H]
//       groups = T * cdiv(H / 8, MM_CT)
//   moe_route: x rw eb dims fp
//       -> sel[T * K], selw[T * K]
//       groups = cdiv(T, MM_NW)
//   moe_gate_up_prefill: x sel gu_w gu_s sg_w sg_s su_w su_s dims
//       -> h[T * K, I], hs[T, S]
//       groups = E * cdiv(I, MM_BH) + cdiv(T, MM_BM) * cdiv(S, MM_BH)
//   moe_down_prefill: h hs sel selw dn_w dn_s sd_w sd_s dims
//       -> ys[T * K, H], ysh[T, H * min(S, 1)]
//       groups = (E + cdiv(T, MM_BM) * min(S, 1)) * cdiv(H, 2 * MM_BH)
//   moe_combine: ys ysh dims
//       -> y[T, H]
//       groups = cdiv(T * H, MM_NT)
// Threadgroup memory is declared inside each kernel (at most ~25 KB).
#include "mm_metal.h"
#include "moe_common.h"
#include "moe_decode.h"
#include "moe_prefill.h"

#define MM_IDS                                                                         \
  uint3 mm_tid3 [[thread_position_in_threadgroup]], uint3 mm_gid3 [[threadgroup_position_in_grid]], \
      uint mm_lane [[thread_index_in_simdgroup]], uint mm_warp [[simdgroup_index_in_threadgroup]]

template <typename T>
[[kernel]] void moe_gate_up_decode(
    const device T* x [[buffer(0)]],
    const device float* rw [[buffer(1)]],
    const device float* eb [[buffer(2)]],
    const device uint32_t* gu_w [[buffer(3)]],
    const device half* gu_s [[buffer(4)]],
    const device uint32_t* sg_w [[buffer(5)]],
    const device half* sg_s [[buffer(6)]],
    const device uint32_t* su_w [[buffer(7)]],
    const device half* su_s [[buffer(8)]],
    const device int* dims [[buffer(9)]],
    const device float* fp [[buffer(10)]],
    device float* h [[buffer(11)]],
    device float* hs [[buffer(12)]],
    device int* sel [[buffer(13)]],
    device float* selw [[buffer(14)]],
    MM_IDS) {
  threadgroup float mm_xs[MM_MAX_H];
  threadgroup float mm_red[MM_DEC_RED];
  threadgroup float mm_scores[MM_MAX_E];
  threadgroup int mm_ch[MM_MAX_K];
  mm_moe_gate_up_decode<T, half, true>(x, rw, eb, gu_w, gu_s, sg_w, sg_s, su_w, su_s, dims, fp, h, hs, sel, selw, mm_xs, mm_red, mm_scores, mm_ch, mm_tid3.x, mm_gid3.x, mm_lane, mm_warp);
}

template <typename T>
[[kernel]] void moe_down_decode(
    const device float* h [[buffer(0)]],
    const device float* hs [[buffer(1)]],
    const device int* sel [[buffer(2)]],
    const device float* selw [[buffer(3)]],
    const device uint32_t* dn_w [[buffer(4)]],
    const device half* dn_s [[buffer(5)]],
    const device uint32_t* sd_w [[buffer(6)]],
    const device half* sd_s [[buffer(7)]],
    const device int* dims [[buffer(8)]],
    device T* y [[buffer(9)]],
    MM_IDS) {
  threadgroup float mm_red[MM_DEC_RED];
  threadgroup float mm_sh[MM_CT * 8];
  threadgroup int mm_ch[MM_MAX_K];
  threadgroup float mm_chw[MM_MAX_K];
  mm_moe_down_decode<T, half, true>(h, hs, sel, selw, dn_w, dn_s, sd_w, sd_s, dims, y, mm_red, mm_sh, mm_ch, mm_chw, mm_tid3.x, mm_gid3.x, mm_lane, mm_warp);
}

template <typename T>
[[kernel]] void moe_route(
    const device T* x [[buffer(0)]],
    const device float* rw [[buffer(1)]],
    const device float* eb [[buffer(2)]],
    const device int* dims [[buffer(3)]],
    const device float* fp [[buffer(4)]],
    device int* sel [[buffer(5)]],
    device float* selw [[buffer(6)]],
    MM_IDS) {
  threadgroup float mm_scores[MM_NW * MM_MAX_E];
  mm_moe_route<T>(x, rw, eb, dims, fp, sel, selw, mm_scores, mm_gid3.x, mm_lane, mm_warp);
}

template <typename T>
[[kernel]] void moe_gate_up_prefill(
    const device T* x [[buffer(0)]],
    const device int* sel [[buffer(1)]],
    const device uint32_t* gu_w [[buffer(2)]],
    const device half* gu_s [[buffer(3)]],
    const device uint32_t* sg_w [[buffer(4)]],
    const device half* sg_s [[buffer(5)]],
    const device uint32_t* su_w [[buffer(6)]],
    const device half* su_s [[buffer(7)]],
    const device int* dims [[buffer(8)]],
    device float* h [[buffer(9)]],
    device float* hs [[buffer(10)]],
    MM_IDS) {
  threadgroup float mm_as[MM_AS_SIZE];
  threadgroup float mm_bs[MM_BS_SIZE];
  threadgroup int mm_list[MM_LIST_SIZE];
  threadgroup int mm_tmp[MM_NW + 1];
  mm_moe_gate_up_prefill<T, half, true>(x, sel, gu_w, gu_s, sg_w, sg_s, su_w, su_s, dims, h, hs, mm_as, mm_bs, mm_list, mm_tmp, mm_tid3.x, mm_gid3.x, mm_lane, mm_warp);
}

[[kernel]] void moe_down_prefill(
    const device float* h [[buffer(0)]],
    const device float* hs [[buffer(1)]],
    const device int* sel [[buffer(2)]],
    const device float* selw [[buffer(3)]],
    const device uint32_t* dn_w [[buffer(4)]],
    const device half* dn_s [[buffer(5)]],
    const device uint32_t* sd_w [[buffer(6)]],
    const device half* sd_s [[buffer(7)]],
    const device int* dims [[buffer(8)]],
    device float* ys [[buffer(9)]],
    device float* ysh [[buffer(10)]],
    MM_IDS) {
  threadgroup float mm_as[MM_AS_SIZE];
  threadgroup float mm_bs[MM_BS_SIZE];
  threadgroup int mm_list[MM_LIST_SIZE];
  threadgroup int mm_tmp[MM_NW + 1];
  mm_moe_down_prefill<half, true>(h, hs, sel, selw, dn_w, dn_s, sd_w, sd_s, dims, ys, ysh, mm_as, mm_bs, mm_list, mm_tmp, mm_tid3.x, mm_gid3.x, mm_lane, mm_warp);
}

template <typename T>
[[kernel]] void moe_combine(
    const device float* ys [[buffer(0)]],
    const device float* ysh [[buffer(1)]],
    const device int* dims [[buffer(2)]],
    device T* y [[buffer(3)]],
    MM_IDS) {
  mm_moe_combine<T>(ys, ysh, dims, y, mm_tid3.x, mm_gid3.x);
}

#define MM_INSTANTIATE(entry, suffix, type) \
  template [[host_name(#entry "_" #suffix)]] [[kernel]] decltype(entry<type>) entry<type>;

MM_INSTANTIATE(moe_gate_up_decode, f32, float)
MM_INSTANTIATE(moe_gate_up_decode, f16, half)
MM_INSTANTIATE(moe_down_decode, f32, float)
MM_INSTANTIATE(moe_down_decode, f16, half)
MM_INSTANTIATE(moe_route, f32, float)
MM_INSTANTIATE(moe_route, f16, half)
MM_INSTANTIATE(moe_gate_up_prefill, f32, float)
MM_INSTANTIATE(moe_gate_up_prefill, f16, half)
MM_INSTANTIATE(moe_combine, f32, float)
MM_INSTANTIATE(moe_combine, f16, half)
