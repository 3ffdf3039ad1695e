// mm_cuda.h — CUDA shim of the mm_ portability layer (see mm_metal.h for the contract).
// Used by mx.fast.cuda_kernel (NVRTC inside MLX) and by any plain nvcc build.
#ifndef MM_SHIM
#define MM_SHIM 1
#include <cuda_fp16.h>
#include <cuda_bf16.h>

#define MM_FN __device__ __forceinline__
#define MM_GLOBAL
#define MM_SHARED
#define MM_SHARED_DECL __shared__
#define MM_THREAD
#define MM_BARRIER() __syncthreads()
#define MM_UNROLL _Pragma("unroll")
#define MM_UNROLL4 _Pragma("unroll 4")  // partial unroll of a runtime-bound loop

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
#endif
