// mm_metal.h — Metal shim of the mm_ portability layer.
//
// The kernel bodies (moe_*.h) are written once against the names below; mm_cuda.h gives
// the same names for CUDA and mm_cpu.h emulates them on the CPU for tests. A body never
// uses a backend name directly. Thread ids reach the bodies as arguments (mm_tid, mm_gid,
// mm_lane, mm_warp), set by each entry point's prologue from the backend's attributes.
#ifndef MM_SHIM
#define MM_SHIM 1
#include <metal_stdlib>
using namespace metal;

#define MM_FN inline
#define MM_GLOBAL device           // address space of buffers
#define MM_SHARED threadgroup      // address space of pointers into threadgroup memory
#define MM_SHARED_DECL threadgroup // declares a threadgroup array (kernel scope only)
#define MM_ALIGNED           // threadgroup arrays need no extra alignment
#define MM_THREAD thread           // address space of pointers to a thread's registers
#define MM_BARRIER() threadgroup_barrier(mem_flags::mem_threadgroup)
#define MM_UNROLL _Pragma("clang loop unroll(full)")
#define MM_UNROLL4 _Pragma("clang loop unroll_count(4)")  // partial unroll of a runtime-bound loop
#define MM_UNROLL8 _Pragma("clang loop unroll_count(8)")

MM_FN float mm_f32(float v) { return v; }
MM_FN float mm_f32(half v) { return float(v); }
template <typename T> MM_FN T mm_to(float v) { return static_cast<T>(v); }
struct mm_float4 { float x, y, z, w; };
MM_FN mm_float4 mm_ld4(const MM_GLOBAL float* p) {  // 16-byte aligned
  const float4 v = *reinterpret_cast<const MM_GLOBAL float4*>(p);
  mm_float4 r; r.x = v.x; r.y = v.y; r.z = v.z; r.w = v.w;
  return r;
}
MM_FN float mm_exp(float v) { return metal::exp(v); }

// SIMD-group (32 lanes on every Apple GPU) reductions and shuffles.
MM_FN float mm_simd_sum(float v) { return simd_sum(v); }
MM_FN float mm_shfl_xor(float v, int m) { return simd_shuffle_xor(v, ushort(m)); }
MM_FN int mm_shfl_xor(int v, int m) { return simd_shuffle_xor(v, ushort(m)); }
MM_FN int mm_simd_excl(int v) { return simd_prefix_exclusive_sum(v); }
// Warp-level matrix multiply: a 16x16 float accumulator per SIMD group, C += A (16x8) * B (8x16)
// with A stored m-major (A[m * lda + k]) and B k-major (B[k * ldb + n]) in threadgroup memory.
// Apple GPUs (Apple7+): four 8x8 simdgroup matrices, full float32.
struct mm_acc {
  simdgroup_float8x8 c[2][2];
};
MM_FN void mm_acc_zero(thread mm_acc& a) {
  a.c[0][0] = a.c[0][1] = a.c[1][0] = a.c[1][1] = make_filled_simdgroup_matrix<float, 8, 8>(0.0f);
}
MM_FN void mm_mma16(thread mm_acc& acc, const threadgroup float* A, int lda,
                    const threadgroup float* B, int ldb) {
  simdgroup_float8x8 a0, a1, b0, b1;
  simdgroup_load(a0, A, ulong(lda));
  simdgroup_load(a1, A + 8 * lda, ulong(lda));
  simdgroup_load(b0, B, ulong(ldb));
  simdgroup_load(b1, B + 8, ulong(ldb));
  simdgroup_multiply_accumulate(acc.c[0][0], a0, b0, acc.c[0][0]);
  simdgroup_multiply_accumulate(acc.c[0][1], a0, b1, acc.c[0][1]);
  simdgroup_multiply_accumulate(acc.c[1][0], a1, b0, acc.c[1][0]);
  simdgroup_multiply_accumulate(acc.c[1][1], a1, b1, acc.c[1][1]);
}
MM_FN void mm_acc_store(thread mm_acc& acc, threadgroup float* C, int ldc) {
  simdgroup_store(acc.c[0][0], C, ulong(ldc));
  simdgroup_store(acc.c[0][1], C + 8, ulong(ldc));
  simdgroup_store(acc.c[1][0], C + 8 * ldc, ulong(ldc));
  simdgroup_store(acc.c[1][1], C + 8 * ldc + 8, ulong(ldc));
}
#endif
