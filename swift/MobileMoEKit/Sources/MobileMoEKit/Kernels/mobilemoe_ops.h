// mobilemoe_ops.h — the non-MoE kernels of MobileMoEKit's GPU forward pass: INT4 embedding,
// RMS norm, INT4 linear, RoPE + weightless qk-norm, causal GQA attention over the KV cache,
// residual add. Same rules as the MoE bodies of kernels/ (moe_common.h): written against the
// mm_ portability layer only, threadgroups of MM_NT = 256 threads (8 SIMD groups of 32),
// 1-D grids of whole threadgroups, bounds checked inside, float32 arithmetic. Weights are the
// official packed bytes read as little-endian words (mm_word<true>), one fp16 scale per 32.
// Forward semantics: DESIGN.md §4 (the CPU reference, Model/CPU/CPUBackend.swift, is the oracle).
//
// Every kernel takes `dims` (int32[16]) and, where needed, `fp` (float32[8]).
#ifndef MO_OPS_H
#define MO_OPS_H

#ifndef MM_MOE_COMMON_H
#error "include moe_common.h (after a shim) before mobilemoe_ops.h"
#endif

#ifdef __METAL_VERSION__
#define MO_COS(v) metal::precise::cos(v)
#define MO_SIN(v) metal::precise::sin(v)
#define MO_SQRT(v) metal::precise::sqrt(v)
#else
#define MO_COS(v) std::cos(v)
#define MO_SIN(v) std::sin(v)
#define MO_SQRT(v) std::sqrt(v)
#endif
#define MO_MAX_D 256   // largest head_dim the attention and RoPE kernels take
#define MO_TOK 8       // tokens per threadgroup of mo_linear

MM_FN float mo_max(float a, float b) { return a > b ? a : b; }

// out[t, c] = dequant(embed[tokens[t], c]). dims {T, H}. Grid: ceil(T * H / 256).
template <typename ST>
MM_FN void mo_embed(const MM_GLOBAL int* tokens, const MM_GLOBAL uint32_t* w,
                    const MM_GLOBAL ST* s, MM_GLOBAL float* out, const MM_GLOBAL int* dims,
                    uint32_t tid, uint32_t gid) {
  const int T_ = dims[0], H = dims[1];
  const uint32_t idx = gid * uint32_t(MM_NT) + tid;
  if (idx >= uint32_t(T_) * uint32_t(H)) return;
  const uint32_t t = idx / uint32_t(H), c = idx % uint32_t(H);
  const uint32_t row = uint32_t(tokens[t]);
  const uint32_t q = mm_word<true>(w, row * uint32_t(H / 8) + c / 8u);
  out[idx] = mm_nib(q, int(c % 8u)) * mm_f32(s[row * uint32_t(H / 32) + c / 32u]);
}

// out[r] = x[r] * rsqrt(mean(x[r]^2) + eps) (* w when dims[2]). In place allowed.
// dims {rows, n, has_weight}, fp {eps}. Grid: rows threadgroups. red: MM_NW floats.
MM_FN void mo_rmsnorm(const MM_GLOBAL float* x, const MM_GLOBAL float* w, MM_GLOBAL float* out,
                      const MM_GLOBAL int* dims, const MM_GLOBAL float* fp, MM_SHARED float* red,
                      uint32_t tid, uint32_t gid, uint32_t lane, uint32_t warp) {
  const int n = dims[1];
  const bool has_w = dims[2] != 0;
  const MM_GLOBAL float* xr = x + gid * uint32_t(n);
  MM_GLOBAL float* yr = out + gid * uint32_t(n);
  float ss = 0.0f;
  for (int i = int(tid); i < n; i += MM_NT) ss += xr[i] * xr[i];
  ss = mm_simd_sum(ss);
  if (lane == 0) red[warp] = ss;
  MM_BARRIER();
  float total = 0.0f;
  for (int g = 0; g < MM_NW; ++g) total += red[g];
  const float r = 1.0f / MO_SQRT(total / float(n) + fp[0]);
  for (int i = int(tid); i < n; i += MM_NT) yr[i] = has_w ? xr[i] * r * w[i] : xr[i] * r;
}

// y[t, o] (+)= x[t, :] . W[o, :] for W [out, in] packed INT4 g32 along in.
// dims {T, in, out, accumulate}. Grid: ceil(out / 8) * ceil(T / MO_TOK) threadgroups; SIMD
// group g of threadgroup b owns row (b % row_groups) * 8 + g for MO_TOK tokens.
template <typename ST>
MM_FN void mo_linear(const MM_GLOBAL float* x, const MM_GLOBAL uint32_t* w,
                     const MM_GLOBAL ST* s, MM_GLOBAL float* y, const MM_GLOBAL int* dims,
                     uint32_t gid, uint32_t lane, uint32_t warp) {
  const int T_ = dims[0], IN = dims[1], OUT = dims[2];
  const bool accumulate = dims[3] != 0;
  const int row_groups = (OUT + MM_NW - 1) / MM_NW;
  const int o = (int(gid) % row_groups) * MM_NW + int(warp);
  const int t0 = (int(gid) / row_groups) * MO_TOK;
  if (o >= OUT || t0 >= T_) return;  // uniform over the SIMD group
  const int nt = T_ - t0 < MO_TOK ? T_ - t0 : MO_TOK;
  const int W = IN / 8, G = IN / 32;
  float acc[MO_TOK];
  MM_UNROLL for (int j = 0; j < MO_TOK; ++j) acc[j] = 0.0f;
  for (int wi = int(lane); wi < W; wi += 32) {
    const uint32_t q = mm_word<true>(w, uint32_t(o) * uint32_t(W) + uint32_t(wi));
    const float sc = mm_f32(s[uint32_t(o) * uint32_t(G) + uint32_t(wi / 4)]);
    float wv[8];
    MM_UNROLL for (int i = 0; i < 8; ++i) wv[i] = mm_nib(q, i) * sc;
    MM_UNROLL for (int j = 0; j < MO_TOK; ++j) {
      if (j < nt) {
        const MM_GLOBAL float* xr = x + uint32_t(t0 + j) * uint32_t(IN) + uint32_t(wi * 8);
        float d = 0.0f;
        MM_UNROLL for (int i = 0; i < 8; ++i) d += xr[i] * wv[i];
        acc[j] += d;
      }
    }
  }
  MM_UNROLL for (int j = 0; j < MO_TOK; ++j) {
    if (j < nt) {
      const float v = mm_simd_sum(acc[j]);
      if (lane == 0) {
        const uint32_t idx = uint32_t(t0 + j) * uint32_t(OUT) + uint32_t(o);
        y[idx] = accumulate ? y[idx] + v : v;
      }
    }
  }
}

// In place on rows of D floats (row r = token r / heads at position pos0 + r / heads):
// RoPE on adjacent pairs (x[2i], x[2i+1]) with angle pos * inv_freq[i] when dims[4], then
// x * rsqrt(mean(x^2) + eps) when dims[5]. dims {rows, heads, D, pos0, rope, norm}, fp {eps}.
// Grid: ceil(rows / 8) threadgroups, one SIMD group per row. D <= MO_MAX_D.
MM_FN void mo_rope_norm(MM_GLOBAL float* x, const MM_GLOBAL float* inv_freq,
                        const MM_GLOBAL int* dims, const MM_GLOBAL float* fp, uint32_t gid,
                        uint32_t lane, uint32_t warp) {
  const int rows = dims[0], heads = dims[1], D = dims[2], pos0 = dims[3];
  const bool rope = dims[4] != 0, norm = dims[5] != 0;
  const int row = int(gid) * MM_NW + int(warp);
  if (row >= rows) return;  // uniform over the SIMD group
  const float pos = float(pos0 + row / heads);
  MM_GLOBAL float* v = x + uint32_t(row) * uint32_t(D);
  const int P = D / 2;
  float a[MO_MAX_D / 64], b[MO_MAX_D / 64];
  float ss = 0.0f;
  MM_UNROLL for (int c = 0; c < MO_MAX_D / 64; ++c) {
    const int p = int(lane) + 32 * c;
    a[c] = b[c] = 0.0f;
    if (p < P) {
      const float x0 = v[2 * p], x1 = v[2 * p + 1];
      if (rope) {
        const float ang = pos * inv_freq[p];
        const float cs = MO_COS(ang), sn = MO_SIN(ang);
        a[c] = x0 * cs - x1 * sn;
        b[c] = x0 * sn + x1 * cs;
      } else {
        a[c] = x0;
        b[c] = x1;
      }
      ss += a[c] * a[c] + b[c] * b[c];
    }
  }
  float r = 1.0f;
  if (norm) r = 1.0f / MO_SQRT(mm_simd_sum(ss) / float(D) + fp[0]);
  MM_UNROLL for (int c = 0; c < MO_MAX_D / 64; ++c) {
    const int p = int(lane) + 32 * c;
    if (p < P) {
      v[2 * p] = a[c] * r;
      v[2 * p + 1] = b[c] * r;
    }
  }
}

// Causal GQA attention of T queries at positions pos0..pos0+T-1 over the cache (rows
// [position][kv_heads][D]); query head h reads kv head h / (heads / kv_heads).
// dims {T, heads, kv_heads, D, pos0}, fp {scale}. Grid: T * heads threadgroups. SIMD group g
// takes keys g, g + 8, ... with an online softmax; the 8 partial results are merged at the
// end. sm, sl: MM_NW floats; so: MM_NW * MO_MAX_D floats.
MM_FN void mo_attention(const MM_GLOBAL float* q, const MM_GLOBAL float* kc,
                        const MM_GLOBAL float* vc, MM_GLOBAL float* out,
                        const MM_GLOBAL int* dims, const MM_GLOBAL float* fp, MM_SHARED float* sm,
                        MM_SHARED float* sl, MM_SHARED float* so, uint32_t tid, uint32_t gid,
                        uint32_t lane, uint32_t warp) {
  const int heads = dims[1], kv_heads = dims[2], D = dims[3], pos0 = dims[4];
  const float scale = fp[0];
  const int t = int(gid) / heads, h = int(gid) % heads;
  const int kvh = h / (heads / kv_heads);
  const int n = pos0 + t + 1;
  const MM_GLOBAL float* qv = q + uint32_t(t * heads + h) * uint32_t(D);
  float qr[MO_MAX_D / 32], o[MO_MAX_D / 32];
  MM_UNROLL for (int c = 0; c < MO_MAX_D / 32; ++c) {
    const int d = int(lane) + 32 * c;
    qr[c] = d < D ? qv[d] : 0.0f;
    o[c] = 0.0f;
  }
  float m = -INFINITY, l = 0.0f;
  for (int j = int(warp); j < n; j += MM_NW) {  // uniform over the SIMD group
    const uint32_t base = uint32_t(j * kv_heads + kvh) * uint32_t(D);
    float part = 0.0f;
    MM_UNROLL for (int c = 0; c < MO_MAX_D / 32; ++c) {
      const int d = int(lane) + 32 * c;
      if (d < D) part += qr[c] * kc[base + uint32_t(d)];
    }
    const float sc = mm_simd_sum(part) * scale;
    const float mn = mo_max(m, sc);
    const float corr = mm_exp(m - mn);
    const float p = mm_exp(sc - mn);
    l = l * corr + p;
    MM_UNROLL for (int c = 0; c < MO_MAX_D / 32; ++c) {
      const int d = int(lane) + 32 * c;
      if (d < D) o[c] = o[c] * corr + p * vc[base + uint32_t(d)];
    }
    m = mn;
  }
  if (lane == 0) {
    sm[warp] = m;
    sl[warp] = l;
  }
  MM_UNROLL for (int c = 0; c < MO_MAX_D / 32; ++c) {
    const int d = int(lane) + 32 * c;
    if (d < D) so[int(warp) * MO_MAX_D + d] = o[c];
  }
  MM_BARRIER();
  if (int(tid) < D) {
    float M = -INFINITY;
    for (int g = 0; g < MM_NW; ++g) M = mo_max(M, sm[g]);
    float L = 0.0f, O = 0.0f;
    for (int g = 0; g < MM_NW; ++g) {
      const float f = sl[g] > 0.0f ? mm_exp(sm[g] - M) : 0.0f;  // groups without keys add 0
      L += sl[g] * f;
      O += so[g * MO_MAX_D + int(tid)] * f;
    }
    out[uint32_t(t * heads + h) * uint32_t(D) + tid] = O / L;
  }
}

// x[i] += y[i]. dims {n}. Grid: ceil(n / 256).
MM_FN void mo_add(MM_GLOBAL float* x, const MM_GLOBAL float* y, const MM_GLOBAL int* dims,
                  uint32_t tid, uint32_t gid) {
  const uint32_t i = gid * uint32_t(MM_NT) + tid;
  if (i < uint32_t(dims[0])) x[i] += y[i];
}

#endif
