// mm_cuda.h — CUDA shim of the mm_ portability layer (see mm_metal.h for the contract).
// Used by mx.fast.cuda_kernel (NVRTC inside MLX) and by any plain nvcc build.
#ifndef MM_SHIM
#define MM_SHIM 1
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <mma.h>

#define MM_FN __device__ __forceinline__
#define MM_GLOBAL
#define MM_SHARED
#define MM_SHARED_DECL __shared__
#define MM_ALIGNED __align__(32)  // wmma tiles are 32-byte aligned
#define MM_THREAD
#define MM_BARRIER() __syncthreads()
#define MM_UNROLL _Pragma("unroll")
#define MM_UNROLL4 _Pragma("unroll 4")  // partial unroll of a runtime-bound loop
#define MM_UNROLL8 _Pragma("unroll 8")

MM_FN float mm_f32(float v) { return v; }
MM_FN float mm_f32(__half v) { return __half2float(v); }
MM_FN float mm_f32(__nv_bfloat16 v) { return __bfloat162float(v); }
template <typename T> struct mm_cvt { static MM_FN T f(float v) { return T(v); } };
template <> struct mm_cvt<__half> { static MM_FN __half f(float v) { return __float2half(v); } };
template <> struct mm_cvt<__nv_bfloat16> {
  static MM_FN __nv_bfloat16 f(float v) { return __float2bfloat16(v); }
};
template <typename T> MM_FN T mm_to(float v) { return mm_cvt<T>::f(v); }
struct mm_float4 { float x, y, z, w; };
MM_FN mm_float4 mm_ld4(const MM_GLOBAL float* p) {  // 16-byte aligned
  const float4 v = *reinterpret_cast<const float4*>(p);
  mm_float4 r; r.x = v.x; r.y = v.y; r.z = v.z; r.w = v.w;
  return r;
}
MM_FN float mm_exp(float v) { return expf(v); }

// Warp (32 lanes) reductions and shuffles; every lane of the warp must take part.
MM_FN float mm_simd_sum(float v) {
  MM_UNROLL for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
MM_FN float mm_shfl_xor(float v, int m) { return __shfl_xor_sync(0xffffffffu, v, m); }
MM_FN int mm_shfl_xor(int v, int m) { return __shfl_xor_sync(0xffffffffu, v, m); }
MM_FN int mm_simd_excl(int v) {
  const int lane = threadIdx.x & 31;
  int x = v;
  MM_UNROLL for (int o = 1; o < 32; o <<= 1) {
    const int n = __shfl_up_sync(0xffffffffu, x, o);
    if (lane >= o) x += n;
  }
  return x - v;
}
// Warp-level matrix multiply: a 16x16 float accumulator per warp, C += A (16x8) * B (8x16) with
// A stored m-major (A[m * lda + k]) and B k-major (B[k * ldb + n]) in shared memory (tile
// pointers 32-byte aligned, ld a multiple of 4). Tensor cores in TF32, three products per step
// (hi*hi + hi*lo + lo*hi, "3xTF32") so that the result keeps float32 accuracy.
struct mm_acc {
  nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, 8, float> c;
};
MM_FN void mm_acc_zero(mm_acc& a) { nvcuda::wmma::fill_fragment(a.c, 0.0f); }
template <typename F>
MM_FN void mm_split_tf32(F& hi, F& lo) {
  MM_UNROLL for (int i = 0; i < hi.num_elements; ++i) {
    const float v = hi.x[i];
    hi.x[i] = nvcuda::wmma::__float_to_tf32(v);
    lo.x[i] = nvcuda::wmma::__float_to_tf32(v - hi.x[i]);
  }
}
MM_FN void mm_mma16(mm_acc& acc, const float* A, int lda, const float* B, int ldb) {
  using namespace nvcuda::wmma;
  fragment<matrix_a, 16, 16, 8, precision::tf32, row_major> a_hi, a_lo;
  fragment<matrix_b, 16, 16, 8, precision::tf32, row_major> b_hi, b_lo;
  load_matrix_sync(a_hi, A, lda);
  load_matrix_sync(b_hi, B, ldb);
  mm_split_tf32(a_hi, a_lo);
  mm_split_tf32(b_hi, b_lo);
  mma_sync(acc.c, a_lo, b_hi, acc.c);
  mma_sync(acc.c, a_hi, b_lo, acc.c);
  mma_sync(acc.c, a_hi, b_hi, acc.c);
}
MM_FN void mm_acc_store(mm_acc& acc, float* C, int ldc) {
  nvcuda::wmma::store_matrix_sync(C, acc.c, ldc, nvcuda::wmma::mem_row_major);
}
#endif
