// moe_decode.h — the decode path of the fused MoE FFN: two launches for a few tokens.
//
//   launch 1, mm_moe_gate_up_decode: routing + gate_up + SwiGLU of the k chosen experts
//             and of the shared expert -> h [T, K, I], hs [T, S], sel/selw [T, K]
//   launch 2, mm_moe_down_decode: down projections, weighted combine, shared down -> y [T, H]
//
// Routed experts are [E, in, out] grouped along out (x @ W); the shared expert's linears are
// [out, in] grouped along in. Intermediates are float32; weights are read once per token.
#ifndef MM_MOE_DECODE_H
#define MM_MOE_DECODE_H

#define MM_PT 4                 // launch 1: word pairs (gate word + up word) per routed group
#define MM_RS (MM_NT / MM_PT)   // launch 1: row splits of the hidden axis
#define MM_RPW 4                // launch 1: shared-expert rows per SIMD group
#define MM_RPB (MM_RPW * MM_NW) // launch 1: shared-expert rows per threadgroup
#define MM_CT 4                 // launch 2: output words (32 columns) per threadgroup
#define MM_DRS (MM_NT / MM_CT)  // launch 2: row splits of the routed K*I rows
#define MM_DEC_RED (MM_NT * 16) // floats of threadgroup scratch either launch needs
#define MM_MAX_H 2048          // launch 1 stages x in threadgroup memory

MM_FN int mm_gate_up_decode_groups(int K, int I, int S) {
  const int routed = (K * (I / 8) + MM_PT - 1) / MM_PT;
  const int shared = S > 0 ? (S + MM_RPB - 1) / MM_RPB : 0;
  return routed + shared;  // threadgroups per token
}

// Launch 1. Grid: T * mm_gate_up_decode_groups(K, I, S) threadgroups of MM_NT threads.
// x is first staged in threadgroup memory as float (xs, H <= MM_MAX_H).
// Threadgroup j of token t: j < R (routed): routes token t (recomputed by every routed
// group: cheaper than a launch), then for its MM_PT (slot, word) pairs sums over the hidden
// axis in MM_RS row splits and applies SwiGLU; group 0 also writes sel/selw. j >= R:
// MM_RPB rows of the shared expert's gate and up, one SIMD group per MM_RPW rows.
template <typename T, typename ST, bool OFFICIAL>
MM_FN void mm_moe_gate_up_decode(
    const MM_GLOBAL T* x, const MM_GLOBAL float* rw, const MM_GLOBAL float* eb,
    const MM_GLOBAL uint32_t* gu_w, const MM_GLOBAL ST* gu_s,
    const MM_GLOBAL uint32_t* sg_w, const MM_GLOBAL ST* sg_s,
    const MM_GLOBAL uint32_t* su_w, const MM_GLOBAL ST* su_s,
    const MM_GLOBAL int* dims, const MM_GLOBAL float* fp,
    MM_GLOBAL float* h, MM_GLOBAL float* hs, MM_GLOBAL int* sel, MM_GLOBAL float* selw,
    MM_SHARED float* xs, MM_SHARED float* red, MM_SHARED float* scores, MM_SHARED int* ch_e,
    uint32_t tid, uint32_t gid, uint32_t lane, uint32_t warp) {
  const int T_ = dims[MM_D_T], H = dims[MM_D_H], I = dims[MM_D_I], S = dims[MM_D_S];
  const int E = dims[MM_D_E], K = dims[MM_D_K];
  const int R = (K * (I / 8) + MM_PT - 1) / MM_PT;
  const int per_tok = mm_gate_up_decode_groups(K, I, S);
  const int t = int(gid) / per_tok, j = int(gid) % per_tok;
  if (t >= T_) return;
  const MM_GLOBAL T* xt = x + uint32_t(t) * uint32_t(H);
  for (int h = int(tid); h < H; h += MM_NT) xs[h] = mm_f32(xt[h]);
  MM_BARRIER();

  if (j < R) {
    mm_route_scores(xs, 1, rw, H, E, scores, lane, warp);
    if (warp == 0) {
      const mm_choice c = mm_topk(scores, eb, E, K, dims[MM_D_NORM] != 0, fp[MM_F_RSF], lane);
      if (int(lane) < K) {
        ch_e[lane] = c.e;
        if (j == 0) {
          sel[t * K + int(lane)] = c.e;
          selw[t * K + int(lane)] = c.w;
        }
      }
    }
    MM_BARRIER();

    const int IW = I / 8;  // words per half row (gate or up)
    const int pl = int(tid) % MM_PT, rs = int(tid) / MM_PT;
    const int p = j * MM_PT + pl;
    float ag[8], au[8];
    MM_UNROLL for (int i = 0; i < 8; ++i) ag[i] = au[i] = 0.0f;
    if (p < K * IW) {
      const int r = p / IW, w = p % IW;
      const uint32_t e = uint32_t(ch_e[r]);
      const uint32_t ldw = uint32_t(I / 4), lds = uint32_t(I / 16);  // gate_up row: 2I values
      const MM_GLOBAL uint32_t* wp = gu_w + e * uint32_t(H) * ldw + uint32_t(w);
      const MM_GLOBAL ST* sp = gu_s + e * uint32_t(H) * lds + uint32_t(w / 4);
      MM_UNROLL4 for (int hh = rs; hh < H; hh += MM_RS) {
        const uint32_t qg = mm_word<OFFICIAL>(wp, uint32_t(hh) * ldw);
        const uint32_t qu = mm_word<OFFICIAL>(wp, uint32_t(hh) * ldw + uint32_t(IW));
        const float xv = xs[hh];
        const float cg = xv * mm_f32(sp[uint32_t(hh) * lds]);
        const float cu = xv * mm_f32(sp[uint32_t(hh) * lds + uint32_t(I / 32)]);
        MM_UNROLL for (int i = 0; i < 8; ++i) {
          ag[i] += cg * mm_nib(qg, i);
          au[i] += cu * mm_nib(qu, i);
        }
      }
    }
    MM_UNROLL for (int i = 0; i < 8; ++i) {
      red[(rs * MM_PT + pl) * 16 + i] = ag[i];
      red[(rs * MM_PT + pl) * 16 + 8 + i] = au[i];
    }
    MM_BARRIER();
    // MM_PT * 16 sums over MM_RS row splits: 4 partial sums per output, then their total
    const int o = int(tid) % (MM_PT * 16), part = int(tid) / (MM_PT * 16);
    constexpr int NPART = MM_NT / (MM_PT * 16), SPAN = MM_RS / NPART;
    float v = 0.0f;
    MM_UNROLL for (int s = 0; s < SPAN; ++s) v += red[(part * SPAN + s) * MM_PT * 16 + o];
    MM_BARRIER();
    red[part * MM_PT * 16 + o] = v;
    MM_BARRIER();
    if (int(tid) < MM_PT * 8) {
      const int pp = int(tid) / 8, i = int(tid) % 8;
      float g = 0.0f, u = 0.0f;
      MM_UNROLL for (int q = 0; q < NPART; ++q) {
        g += red[q * MM_PT * 16 + pp * 16 + i];
        u += red[q * MM_PT * 16 + pp * 16 + 8 + i];
      }
      const int p2 = j * MM_PT + pp;
      if (p2 < K * IW) {
        const int r2 = p2 / IW, w2 = p2 % IW;
        h[(uint32_t(t) * uint32_t(K) + uint32_t(r2)) * uint32_t(I) + uint32_t(w2 * 8 + i)] =
            mm_silu(g) * u;
      }
    }
  } else {
    const int HW = H / 8, HG = H / 32;
    const int row0 = (j - R) * MM_RPB + int(warp) * MM_RPW;
    float ga[MM_RPW], ua[MM_RPW];
    MM_UNROLL for (int q = 0; q < MM_RPW; ++q) ga[q] = ua[q] = 0.0f;
    MM_UNROLL4 for (int w = int(lane); w < HW; w += 32) {
      float xv[8];
      MM_UNROLL for (int i = 0; i < 8; ++i) xv[i] = xs[w * 8 + i];
      MM_UNROLL for (int q = 0; q < MM_RPW; ++q) {
        const int n = row0 + q;
        if (n < S) {
          const uint32_t qg = mm_word<OFFICIAL>(sg_w, uint32_t(n) * uint32_t(HW) + uint32_t(w));
          const uint32_t qu = mm_word<OFFICIAL>(su_w, uint32_t(n) * uint32_t(HW) + uint32_t(w));
          float dg = 0.0f, du = 0.0f;
          MM_UNROLL for (int i = 0; i < 8; ++i) {
            dg += xv[i] * mm_nib(qg, i);
            du += xv[i] * mm_nib(qu, i);
          }
          ga[q] += dg * mm_f32(sg_s[uint32_t(n) * uint32_t(HG) + uint32_t(w / 4)]);
          ua[q] += du * mm_f32(su_s[uint32_t(n) * uint32_t(HG) + uint32_t(w / 4)]);
        }
      }
    }
    MM_UNROLL for (int q = 0; q < MM_RPW; ++q) {
      const int n = row0 + q;
      if (n < S) {  // uniform over the SIMD group
        const float g = mm_simd_sum(ga[q]);
        const float u = mm_simd_sum(ua[q]);
        if (lane == 0) hs[uint32_t(t) * uint32_t(S) + uint32_t(n)] = mm_silu(g) * u;
      }
    }
  }
}

MM_FN int mm_down_decode_groups(int H) { return (H / 8 + MM_CT - 1) / MM_CT; }

// Launch 2. Grid: T * mm_down_decode_groups(H) threadgroups. Threadgroup c of token t owns
// output columns [32c, 32c + 32): the K routed experts' down rows are one reduction over
// K*I rows whose inputs are selw[r] * h[t, r, :] (the weighted combine folds into the
// input), split in MM_DRS row splits; the shared expert's down rows for these columns are
// dot products over S, one SIMD group per 4 rows.
template <typename T, typename ST, bool OFFICIAL>
MM_FN void mm_moe_down_decode(
    const MM_GLOBAL float* h, const MM_GLOBAL float* hs, const MM_GLOBAL int* sel,
    const MM_GLOBAL float* selw, const MM_GLOBAL uint32_t* dn_w, const MM_GLOBAL ST* dn_s,
    const MM_GLOBAL uint32_t* sd_w, const MM_GLOBAL ST* sd_s, const MM_GLOBAL int* dims,
    MM_GLOBAL T* y, MM_SHARED float* red, MM_SHARED float* sh_out, MM_SHARED int* ch_e,
    MM_SHARED float* ch_w, uint32_t tid, uint32_t gid, uint32_t lane, uint32_t warp) {
  const int T_ = dims[MM_D_T], H = dims[MM_D_H], I = dims[MM_D_I], S = dims[MM_D_S];
  const int K = dims[MM_D_K];
  const int HW = H / 8, HG = H / 32;
  const int per_tok = mm_down_decode_groups(H);
  const int t = int(gid) / per_tok, c = int(gid) % per_tok;
  if (t >= T_) return;

  if (int(tid) < K) {
    ch_e[tid] = sel[t * K + int(tid)];
    ch_w[tid] = selw[t * K + int(tid)];
  }
  MM_BARRIER();
  const int cw = int(tid) % MM_CT, rs = int(tid) / MM_CT;
  const int wcol = c * MM_CT + cw;
  float acc[8];
  MM_UNROLL for (int i = 0; i < 8; ++i) acc[i] = 0.0f;
  if (wcol < HW) {
    const MM_GLOBAL float* ht = h + uint32_t(t) * uint32_t(K) * uint32_t(I);
    MM_UNROLL8 for (int q = rs; q < K * I; q += MM_DRS) {  // row q = (slot r, row i of e_r)
      const int r = q / I, i0 = q - r * I;
      const uint32_t row = uint32_t(ch_e[r]) * uint32_t(I) + uint32_t(i0);
      const uint32_t w = mm_word<OFFICIAL>(dn_w, row * uint32_t(HW) + uint32_t(wcol));
      const float cz = ch_w[r] * ht[q] * mm_f32(dn_s[row * uint32_t(HG) + uint32_t(wcol / 4)]);
      MM_UNROLL for (int i = 0; i < 8; ++i) acc[i] += cz * mm_nib(w, i);
    }
  }
  MM_UNROLL for (int i = 0; i < 8; ++i) red[(rs * MM_CT + cw) * 8 + i] = acc[i];

  if (S > 0) {
    const int SW = S / 8, SG = S / 32;
    const MM_GLOBAL float* hst = hs + uint32_t(t) * uint32_t(S);
    float sa[4];
    MM_UNROLL for (int q = 0; q < 4; ++q) sa[q] = 0.0f;
    MM_UNROLL8 for (int w = int(lane); w < SW; w += 32) {
      float hv[8];
      MM_UNROLL for (int i = 0; i < 8; ++i) hv[i] = hst[w * 8 + i];
      MM_UNROLL for (int q = 0; q < 4; ++q) {
        const int n = c * MM_CT * 8 + int(warp) * 4 + q;  // output column = row of sd
        if (n < H) {
          const uint32_t qw = mm_word<OFFICIAL>(sd_w, uint32_t(n) * uint32_t(SW) + uint32_t(w));
          float d = 0.0f;
          MM_UNROLL for (int i = 0; i < 8; ++i) d += hv[i] * mm_nib(qw, i);
          sa[q] += d * mm_f32(sd_s[uint32_t(n) * uint32_t(SG) + uint32_t(w / 4)]);
        }
      }
    }
    MM_UNROLL for (int q = 0; q < 4; ++q) {
      const float v = mm_simd_sum(sa[q]);
      if (lane == 0) sh_out[int(warp) * 4 + q] = v;
    }
  }
  MM_BARRIER();
  if (int(tid) < MM_CT * 8) {
    const int cw2 = int(tid) / 8, i = int(tid) % 8;
    const int col = (c * MM_CT + cw2) * 8 + i;
    float v = S > 0 ? sh_out[tid] : 0.0f;
    for (int s = 0; s < MM_DRS; ++s) v += red[(s * MM_CT + cw2) * 8 + i];
    if (col < H) y[uint32_t(t) * uint32_t(H) + uint32_t(col)] = mm_to<T>(v);
  }
}

#endif
