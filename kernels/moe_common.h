// moe_common.h — pieces shared by the fused MoE kernels: INT4 words, routing, block scan.
//
// Written against the mm_ portability layer only (mm_metal.h / mm_cuda.h / mm_cpu.h).
// Every kernel runs threadgroups of MM_NT = 256 threads (8 SIMD groups of 32) and is
// launched with a grid that is a whole number of threadgroups; bounds are checked inside.
//
// Weight layout read here: INT4, group 32, two nibbles per byte, even index in the low
// nibble, little-endian 32-bit words (8 values per word), one scale per 32 values along
// the packed axis, no bias. OFFICIAL = true reads the official MobileMoE bytes (two's
// complement nibbles: value = sign-extended nibble * scale); OFFICIAL = false reads MLX's
// affine layout of the same checkpoint (nibble = q + 8, bytes XOR 0x88, biases = -8 * scale,
// which the kernels never read). XOR-ing a word with 0x88888888 turns the first into the
// second, so both are decoded the same way after one instruction.
#ifndef MM_MOE_COMMON_H
#define MM_MOE_COMMON_H

#ifndef MM_SHIM
#error "include a shim (mm_metal.h, mm_cuda.h or mm_cpu.h) before moe_common.h"
#endif

#define MM_NT 256   // threads per threadgroup, every kernel
#define MM_NW 8     // SIMD groups per threadgroup
#define MM_MAX_E 256
#define MM_MAX_K 8
#define MM_NEG (-3.0e38f)

// dims[] (int32, 16 entries) and fp[] (float32, 8 entries) passed to every MoE kernel.
#define MM_D_T 0      // tokens
#define MM_D_H 1      // hidden size
#define MM_D_I 2      // routed expert width
#define MM_D_S 3      // shared expert width (0: no shared expert)
#define MM_D_E 4      // experts
#define MM_D_K 5      // experts per token
#define MM_D_NORM 6   // norm_topk_prob
#define MM_F_RSF 0    // routed_scaling_factor

template <bool OFFICIAL>
MM_FN uint32_t mm_word(const MM_GLOBAL uint32_t* w, uint32_t i) {
  const uint32_t v = w[i];
  return OFFICIAL ? (v ^ 0x88888888u) : v;
}

// Signed INT4 value of nibble i of an unsigned-layout word.
MM_FN float mm_nib(uint32_t w, int i) { return float((w >> (4 * i)) & 15u) - 8.0f; }

MM_FN float mm_silu(float g) { return g / (1.0f + mm_exp(-g)); }

struct mm_choice {
  int e;
  float w;
};

// Router scores of ntok (<= MM_NW) tokens: scores[j * E + e] = sigmoid(x_j . router_e),
// in float32. x: ntok rows of H values (threadgroup floats or the activations in device
// memory). The router is the largest read of a decode step, so each SIMD group keeps 8
// experts' 16-byte loads in flight: SIMD group g takes experts g + 8q (q < 8) of every 64.
// Ends with a barrier.
template <typename XP>
MM_FN void mm_route_scores(XP x, int ntok, const MM_GLOBAL float* rw, int H, int E,
                           MM_SHARED float* scores, uint32_t lane, uint32_t warp) {
  for (int base = 0; base < E; base += 8 * MM_NW) {
    float acc[MM_NW][8];
    MM_UNROLL for (int j = 0; j < MM_NW; ++j) {
      MM_UNROLL for (int q = 0; q < 8; ++q) acc[j][q] = 0.0f;
    }
    for (int h = 4 * int(lane); h < H; h += 128) {
      mm_float4 v[8];
      MM_UNROLL for (int q = 0; q < 8; ++q) {
        const int e = base + int(warp) + MM_NW * q;
        if (e < E) {
          v[q] = mm_ld4(rw + uint32_t(e) * uint32_t(H) + uint32_t(h));
        } else {
          v[q].x = v[q].y = v[q].z = v[q].w = 0.0f;
        }
      }
      MM_UNROLL for (int j = 0; j < MM_NW; ++j) {
        if (j < ntok) {
          const uint32_t o = uint32_t(j) * uint32_t(H) + uint32_t(h);
          const float x0 = mm_f32(x[o]), x1 = mm_f32(x[o + 1]);
          const float x2 = mm_f32(x[o + 2]), x3 = mm_f32(x[o + 3]);
          MM_UNROLL for (int q = 0; q < 8; ++q)
            acc[j][q] += v[q].x * x0 + v[q].y * x1 + v[q].z * x2 + v[q].w * x3;
        }
      }
    }
    MM_UNROLL for (int j = 0; j < MM_NW; ++j) {
      if (j < ntok) {
        MM_UNROLL for (int q = 0; q < 8; ++q) {
          const int e = base + int(warp) + MM_NW * q;
          const float s = mm_simd_sum(acc[j][q]);
          if (lane == 0 && e < E) scores[j * E + e] = 1.0f / (1.0f + mm_exp(-s));
        }
      }
    }
  }
  MM_BARRIER();
}

// Top-k of scores + bias within one SIMD group (all 32 lanes call it with the same
// arguments). Lane r < K gets choice r: expert and weight = score / (sum + 1e-20) * rsf
// (norm) or score * rsf. Ties go to the lower expert index. Needs K <= E.
MM_FN mm_choice mm_topk(const MM_SHARED float* scores, const MM_GLOBAL float* eb, int E, int K,
                        bool norm, float rsf, uint32_t lane) {
  float v[MM_MAX_E / 32];
  MM_UNROLL for (int c = 0; c < MM_MAX_E / 32; ++c) {
    const int e = int(lane) + 32 * c;
    v[c] = e < E ? scores[e] + eb[e] : MM_NEG;
  }
  mm_choice mine;
  mine.e = 0;
  mine.w = 0.0f;
  float total = 0.0f;
  for (int r = 0; r < K; ++r) {
    float bv = MM_NEG;
    int bi = 0;  // stays a valid expert even if scores are NaN
    MM_UNROLL for (int c = 0; c < MM_MAX_E / 32; ++c) {
      if (v[c] > bv) {
        bv = v[c];
        bi = int(lane) + 32 * c;
      }
    }
    MM_UNROLL for (int m = 16; m > 0; m >>= 1) {
      const float ov = mm_shfl_xor(bv, m);
      const int oi = mm_shfl_xor(bi, m);
      if (ov > bv || (ov == bv && oi < bi)) {
        bv = ov;
        bi = oi;
      }
    }
    MM_UNROLL for (int c = 0; c < MM_MAX_E / 32; ++c) {
      if (int(lane) + 32 * c == bi) v[c] = MM_NEG;
    }
    const float s = scores[bi];
    total += s;
    if (int(lane) == r) {
      mine.e = bi;
      mine.w = s;
    }
  }
  mine.w = norm ? mine.w / (total + 1e-20f) * rsf : mine.w * rsf;
  return mine;
}

struct mm_scan {
  int excl;
  int total;
};

// Exclusive prefix sum of v over the threadgroup; tmp holds MM_NW + 1 ints. Barriers inside.
MM_FN mm_scan mm_block_scan(int v, MM_SHARED int* tmp, uint32_t lane, uint32_t warp) {
  const int ex = mm_simd_excl(v);
  if (lane == 31) tmp[warp] = ex + v;
  MM_BARRIER();
  if (warp == 0) {
    const int ws = lane < MM_NW ? tmp[lane] : 0;
    const int wex = mm_simd_excl(ws);
    if (lane < MM_NW) tmp[lane] = wex;
    if (lane == MM_NW - 1) tmp[MM_NW] = wex + ws;
  }
  MM_BARRIER();
  mm_scan out;
  out.excl = ex + tmp[warp];
  out.total = tmp[MM_NW];
  MM_BARRIER();
  return out;
}

#endif
