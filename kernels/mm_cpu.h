// mm_cpu.h — CPU emulation of the mm_ portability layer, for tests only.
//
// Runs a kernel body with one std::thread per GPU thread, one threadgroup at a time, so
// that bodies can be checked without a GPU (tests/kernel_emu.py builds and calls it).
// Threadgroup arrays become function-level statics (shared by the group's threads);
// barriers are std::barrier; SIMD operations go through a per-SIMD-group scratch row.
// Slow by design: only tiny shapes.
#ifndef MM_SHIM
#define MM_SHIM 1
#include <barrier>
#include <cmath>
#include <cstdint>
#include <memory>
#include <thread>
#include <vector>

#define MM_FN inline
#define MM_GLOBAL
#define MM_SHARED
#define MM_SHARED_DECL static
#define MM_ALIGNED __attribute__((aligned(32)))
#define MM_THREAD
#define MM_BARRIER() mm_emu::block_barrier()
#define MM_UNROLL
#define MM_UNROLL4
#define MM_UNROLL8

typedef _Float16 mm_half;

namespace mm_emu {
struct Group {
  std::barrier<>* bar;
  std::vector<std::unique_ptr<std::barrier<>>> simd;
  float f[1024];
  int i[1024];
};
inline Group* group = nullptr;
inline thread_local uint32_t tid, gid, lane, warp;
inline void block_barrier() { group->bar->arrive_and_wait(); }
inline void simd_sync() { group->simd[warp]->arrive_and_wait(); }

template <typename F>
void launch(int nblocks, int nthreads, F&& body) {
  for (int b = 0; b < nblocks; ++b) {
    std::barrier<> bar(nthreads);
    Group g;
    g.bar = &bar;
    for (int w = 0; w < nthreads / 32; ++w) g.simd.emplace_back(new std::barrier<>(32));
    group = &g;
    std::vector<std::thread> threads;
    threads.reserve(nthreads);
    for (int t = 0; t < nthreads; ++t) {
      threads.emplace_back([&body, t, b] {
        tid = t, gid = b, lane = t % 32, warp = t / 32;
        body();
      });
    }
    for (auto& th : threads) th.join();
  }
}
}  // namespace mm_emu

MM_FN float mm_f32(float v) { return v; }
MM_FN float mm_f32(_Float16 v) { return static_cast<float>(v); }
template <typename T> MM_FN T mm_to(float v) { return static_cast<T>(v); }
struct mm_float4 { float x, y, z, w; };
MM_FN mm_float4 mm_ld4(const MM_GLOBAL float* p) {
  mm_float4 r; r.x = p[0]; r.y = p[1]; r.z = p[2]; r.w = p[3];
  return r;
}
MM_FN float mm_exp(float v) { return std::exp(v); }

MM_FN float mm_simd_sum(float v) {
  using namespace mm_emu;
  group->f[tid] = v;
  simd_sync();
  float s = 0.0f;
  for (int l = 0; l < 32; ++l) s += group->f[warp * 32 + l];
  simd_sync();
  return s;
}
MM_FN float mm_shfl_xor(float v, int m) {
  using namespace mm_emu;
  group->f[tid] = v;
  simd_sync();
  const float r = group->f[warp * 32 + (lane ^ m)];
  simd_sync();
  return r;
}
MM_FN int mm_shfl_xor(int v, int m) {
  using namespace mm_emu;
  group->i[tid] = v;
  simd_sync();
  const int r = group->i[warp * 32 + (lane ^ m)];
  simd_sync();
  return r;
}
MM_FN int mm_simd_excl(int v) {
  using namespace mm_emu;
  group->i[tid] = v;
  simd_sync();
  int s = 0;
  for (uint32_t l = 0; l < lane; ++l) s += group->i[warp * 32 + l];
  simd_sync();
  return s;
}
// Warp-level matrix multiply (see mm_metal.h): lane l keeps row l / 2, columns 8 (l % 2) ..+8.
struct mm_acc {
  float v[8];
};
MM_FN void mm_acc_zero(mm_acc& a) {
  for (int j = 0; j < 8; ++j) a.v[j] = 0.0f;
}
MM_FN void mm_mma16(mm_acc& acc, const float* A, int lda, const float* B, int ldb) {
  const int row = int(mm_emu::lane) / 2, c0 = (int(mm_emu::lane) % 2) * 8;
  for (int j = 0; j < 8; ++j)
    for (int k = 0; k < 8; ++k) acc.v[j] += A[row * lda + k] * B[k * ldb + c0 + j];
  mm_emu::simd_sync();  // operands are read by the whole SIMD group before anyone moves on
}
MM_FN void mm_acc_store(mm_acc& acc, float* C, int ldc) {
  const int row = int(mm_emu::lane) / 2, c0 = (int(mm_emu::lane) % 2) * 8;
  for (int j = 0; j < 8; ++j) C[row * ldc + c0 + j] = acc.v[j];
}
#endif
