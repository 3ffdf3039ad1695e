// Runs the GPU kernels of MobileMoEKit on the CPU through kernels/mm_cpu.h (one std::thread per
// GPU thread, one threadgroup at a time), with the same bodies the Metal backend compiles: the
// copies of kernels/ in Sources/MobileMoEKit/Kernels and mobilemoe_ops.h. Each case below is the
// CPU twin of one Metal entry point (Model/GPU/KernelSources.swift, Kernels/moe_kernels.metal):
// same buffers in the same order, same threadgroup memory, so the host code
// (Model/GPU/GPUForwardPlan.swift) is tested as it runs.
#include "KernelEmulator.h"

#include "mm_cpu.h"
#include "moe_common.h"
#include "moe_decode.h"
#include "moe_prefill.h"
#include "mobilemoe_ops.h"

#include <cstring>
#include <functional>
#include <mutex>

namespace {
// mm_emu::launch starts 256 threads per threadgroup; this keeps 256 workers alive instead
// (same thread ids, group state and barriers), which makes emulated runs ~10x faster.
struct Pool {
  std::vector<std::thread> workers;
  std::barrier<> start{MM_NT + 1}, done{MM_NT + 1};
  std::function<void()> *body = nullptr;
  int block = 0;

  Pool() {
    for (int t = 0; t < MM_NT; ++t) {
      workers.emplace_back([this, t] {
        mm_emu::tid = uint32_t(t), mm_emu::lane = uint32_t(t % 32), mm_emu::warp = uint32_t(t / 32);
        for (;;) {
          start.arrive_and_wait();
          mm_emu::gid = uint32_t(block);
          (*body)();
          done.arrive_and_wait();
        }
      });
      workers.back().detach();
    }
  }

  std::mutex busy;  // one launch at a time, whichever thread calls

  void launch(int nblocks, std::function<void()> f) {
    std::lock_guard<std::mutex> hold(busy);
    std::barrier<> bar(MM_NT);
    mm_emu::Group g;
    g.bar = &bar;
    for (int w = 0; w < MM_NT / 32; ++w) g.simd.emplace_back(new std::barrier<>(32));
    mm_emu::group = &g;
    body = &f;
    for (int b = 0; b < nblocks; ++b) {
      block = b;
      start.arrive_and_wait();
      done.arrive_and_wait();
    }
    mm_emu::group = nullptr;
  }
};

Pool &pool() {
  static Pool *p = new Pool();  // never destroyed: the workers live as long as the process
  return *p;
}
}  // namespace

using mm_emu::gid;
using mm_emu::lane;
using mm_emu::tid;
using mm_emu::warp;
typedef mm_half H16;

#define BUF(i, T) (static_cast<T>(b[i]))

extern "C" int mme_launch(const char *name, void *const *b, int32_t count, int32_t groups) {
  auto is = [name](const char *n) { return std::strcmp(name, n) == 0; };
  auto run = [groups](auto &&body) { pool().launch(groups, body); };
  // mobilemoe_ops.h entry points: buffers, then dims and fp (the last two arguments).
  const int *d = BUF(count - 2, const int *);
  const float *fp = BUF(count - 1, const float *);

  if (is("mobilemoe_embed")) {
    run([&] { mo_embed<H16>(BUF(0, const int *), BUF(1, const uint32_t *), BUF(2, const H16 *), BUF(3, float *), d, tid, gid); });
  } else if (is("mobilemoe_rmsnorm")) {
    run([&] {
      MM_SHARED_DECL float red[MM_NW];
      mo_rmsnorm(BUF(0, const float *), BUF(1, const float *), BUF(2, float *), d, fp, red, tid, gid, lane, warp);
    });
  } else if (is("mobilemoe_linear")) {
    run([&] { mo_linear<H16>(BUF(0, const float *), BUF(1, const uint32_t *), BUF(2, const H16 *), BUF(3, float *), d, gid, lane, warp); });
  } else if (is("mobilemoe_rope_norm")) {
    run([&] { mo_rope_norm(BUF(0, float *), BUF(1, const float *), d, fp, gid, lane, warp); });
  } else if (is("mobilemoe_attention")) {
    run([&] {
      MM_SHARED_DECL float sm[MM_NW];
      MM_SHARED_DECL float sl[MM_NW];
      MM_SHARED_DECL float so[MM_NW * MO_MAX_D];
      mo_attention(BUF(0, const float *), BUF(1, const float *), BUF(2, const float *), BUF(3, float *), d, fp, sm, sl, so, tid, gid, lane, warp);
    });
  } else if (is("mobilemoe_add")) {
    run([&] { mo_add(BUF(0, float *), BUF(1, const float *), d, tid, gid); });
  }
  // kernels/moe_kernels.metal entry points (float32 activations), buffers in their order.
  else if (is("moe_gate_up_decode_f32")) {
    run([&] {
      MM_SHARED_DECL float xs[MM_MAX_H];
      MM_SHARED_DECL float red[MM_DEC_RED];
      MM_SHARED_DECL float scores[MM_MAX_E];
      MM_SHARED_DECL int ch[MM_MAX_K];
      mm_moe_gate_up_decode<float, H16, true>(
          BUF(0, const float *), BUF(1, const float *), BUF(2, const float *), BUF(3, const uint32_t *), BUF(4, const H16 *),
          BUF(5, const uint32_t *), BUF(6, const H16 *), BUF(7, const uint32_t *), BUF(8, const H16 *), BUF(9, const int *),
          BUF(10, const float *), BUF(11, float *), BUF(12, float *), BUF(13, int *), BUF(14, float *), xs, red, scores, ch,
          tid, gid, lane, warp);
    });
  } else if (is("moe_down_decode_f32")) {
    run([&] {
      MM_SHARED_DECL float red[MM_DEC_RED];
      MM_SHARED_DECL float sh[MM_CT * 8];
      MM_SHARED_DECL int ch[MM_MAX_K];
      MM_SHARED_DECL float chw[MM_MAX_K];
      mm_moe_down_decode<float, H16, true>(
          BUF(0, const float *), BUF(1, const float *), BUF(2, const int *), BUF(3, const float *), BUF(4, const uint32_t *),
          BUF(5, const H16 *), BUF(6, const uint32_t *), BUF(7, const H16 *), BUF(8, const int *), BUF(9, float *), red, sh,
          ch, chw, tid, gid, lane, warp);
    });
  } else if (is("moe_route_f32")) {
    run([&] {
      MM_SHARED_DECL float scores[MM_NW * MM_MAX_E];
      mm_moe_route<float>(BUF(0, const float *), BUF(1, const float *), BUF(2, const float *), BUF(3, const int *),
                          BUF(4, const float *), BUF(5, int *), BUF(6, float *), scores, gid, lane, warp);
    });
  } else if (is("moe_gate_up_prefill_f32")) {
    run([&] {
      MM_SHARED_DECL float as[MM_AS_SIZE];
      MM_SHARED_DECL float bs[MM_BS_SIZE];
      MM_SHARED_DECL int list[MM_LIST_SIZE];
      MM_SHARED_DECL int tmp[MM_NW + 1];
      mm_moe_gate_up_prefill<float, H16, true>(
          BUF(0, const float *), BUF(1, const int *), BUF(2, const uint32_t *), BUF(3, const H16 *), BUF(4, const uint32_t *),
          BUF(5, const H16 *), BUF(6, const uint32_t *), BUF(7, const H16 *), BUF(8, const int *), BUF(9, float *),
          BUF(10, float *), as, bs, list, tmp, tid, gid, lane, warp);
    });
  } else if (is("moe_down_prefill")) {
    run([&] {
      MM_SHARED_DECL float as[MM_AS_SIZE];
      MM_SHARED_DECL float bs[MM_BS_SIZE];
      MM_SHARED_DECL int list[MM_LIST_SIZE];
      MM_SHARED_DECL int tmp[MM_NW + 1];
      mm_moe_down_prefill<H16, true>(
          BUF(0, const float *), BUF(1, const float *), BUF(2, const int *), BUF(3, const float *), BUF(4, const uint32_t *),
          BUF(5, const H16 *), BUF(6, const uint32_t *), BUF(7, const H16 *), BUF(8, const int *), BUF(9, float *),
          BUF(10, float *), as, bs, list, tmp, tid, gid, lane, warp);
    });
  } else if (is("moe_combine_f32")) {
    run([&] { mm_moe_combine<float>(BUF(0, const float *), BUF(1, const float *), BUF(2, const int *), BUF(3, float *), tid, gid); });
  } else {
    return -1;
  }
  return 0;
}
