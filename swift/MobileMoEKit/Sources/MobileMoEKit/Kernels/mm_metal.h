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
#define MM_THREAD thread           // address space of pointers to a thread's registers
#define MM_BARRIER() threadgroup_barrier(mem_flags::mem_threadgroup)
#define MM_UNROLL _Pragma("clang loop unroll(full)")
#define MM_UNROLL4 _Pragma("clang loop unroll_count(4)")  // partial unroll of a runtime-bound loop

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
#endif
