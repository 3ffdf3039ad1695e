// moe_prefill.h — the prefill path of the fused MoE FFN: four launches for many tokens.
//
//   mm_moe_route:           routing of 8 tokens per threadgroup -> sel, selw [T, K]
//   mm_moe_gate_up_prefill: grouped INT4 GEMM with SwiGLU fused. A routed threadgroup owns
//                           (expert e, 64 columns of I): it collects the (token, slot) pairs
//                           routed to e by a counting pass over sel (stable, in token order,
//                           no atomics), 32 rows at a time, and multiplies them against e's
//                           gate and up columns. A shared threadgroup owns (32 tokens, 64
//                           columns of S). -> h [T*K, I], hs [T, S]
//   mm_moe_down_prefill:    the same grouping for down; routed rows are scaled by their
//                           routing weight -> ys [T*K, H]; shared down -> ysh [T, H]
//   mm_moe_combine:         y[t] = sum_r ys[t*K + r] + ysh[t]   (fixed order: deterministic)
//
// The GEMM tile is MM_BM rows x 128 columns (two halves of 64: gate|up, or 128 outputs),
// stepping MM_BK = 32 along the reduction (= one scale group). Weights are dequantized into
// threadgroup memory tile by tile; the products run on the SIMD-group matrix units
// (mm_mma16: 16x16x8, float32 accuracy), each SIMD group owning a 16 x 32 block.
#ifndef MM_MOE_PREFILL_H
#define MM_MOE_PREFILL_H

#define MM_BM 32
#define MM_BK 32
#define MM_BH 64                     // columns per half tile
#define MM_AS_LD (MM_BK + 4)         // padded rows: no bank conflicts, 16-byte multiples
#define MM_BS_LD (2 * MM_BH + 4)
#define MM_AS_SIZE (MM_BM * MM_AS_LD)
#define MM_BS_SIZE (MM_BK * MM_BS_LD)  // also holds the MM_BM x 128 result (MM_BM == MM_BK)
#define MM_LIST_SIZE (MM_BM + MM_NT)

// ---------------------------------------------------------------------------------------
// Routing. Grid: ceil(T / 8) threadgroups.
template <typename T>
MM_FN void mm_moe_route(const MM_GLOBAL T* x, const MM_GLOBAL float* rw,
                        const MM_GLOBAL float* eb, const MM_GLOBAL int* dims,
                        const MM_GLOBAL float* fp, MM_GLOBAL int* sel, MM_GLOBAL float* selw,
                        MM_SHARED float* scores, uint32_t gid, uint32_t lane, uint32_t warp) {
  const int T_ = dims[MM_D_T], H = dims[MM_D_H], E = dims[MM_D_E], K = dims[MM_D_K];
  const int t0 = int(gid) * MM_NW;
  if (t0 >= T_) return;
  const int ntok = T_ - t0 < MM_NW ? T_ - t0 : MM_NW;
  mm_route_scores(x + uint32_t(t0) * uint32_t(H), ntok, rw, H, E, scores, lane, warp);
  if (int(warp) < ntok) {
    const mm_choice c = mm_topk(scores + int(warp) * E, eb, E, K, dims[MM_D_NORM] != 0,
                                fp[MM_F_RSF], lane);
    if (int(lane) < K) {
      sel[(t0 + int(warp)) * K + int(lane)] = c.e;
      selw[(t0 + int(warp)) * K + int(lane)] = c.w;
    }
  }
}

// ---------------------------------------------------------------------------------------
// One tile: acc[i][half][j] (i < 4 rows, j < 2 columns) = A[rows] . B[:, cols].
// A row m is A + (list[m] / adiv) * lda, Kd values of type AT. B half hf comes from
// (w[hf], s[hf]) with column offset off[hf] and ncol[hf] valid columns:
//   kn = true : B stored [Kd][N] as words along N (routed experts); off in words.
//   kn = false: B stored [N][Kd] as words along Kd (nn.Linear); off in rows.
// ldw / lds: words / scales per stored row. The result is handed out per thread: thread
// (ty = tid / 32, tx = tid % 32) gets rows 4ty..4ty+3 and columns half*64 + 32j + tx.
template <typename AT, typename ST, bool OFFICIAL>
MM_FN void mm_tile_fetch(const MM_GLOBAL AT* A, int lda, int adiv, const MM_SHARED int* list,
                         int nrows, int kk, bool kn, const MM_GLOBAL uint32_t* w0,
                         const MM_GLOBAL ST* s0, int off0, int ncol0,
                         const MM_GLOBAL uint32_t* w1, const MM_GLOBAL ST* s1, int off1,
                         int ncol1, int ldw, int lds, MM_THREAD float* ar,
                         MM_THREAD uint32_t* bq, MM_THREAD float* bs, uint32_t tid) {
  MM_UNROLL for (int z = 0; z < (MM_BM * MM_BK) / MM_NT; ++z) {
    const int idx = int(tid) + MM_NT * z;
    const int m = idx / MM_BK, k = idx % MM_BK;
    ar[z] = m < nrows ? mm_f32(A[uint32_t(list[m] / adiv) * uint32_t(lda) + uint32_t(kk + k)])
                      : 0.0f;
  }
  MM_UNROLL for (int z = 0; z < 2; ++z) {  // 512 words: 2 per thread
    const int idx = int(tid) + MM_NT * z;
    bq[z] = 0u;
    bs[z] = 0.0f;  // columns past the matrix dequantize to 0
    if (kn) {
      const int k = idx / 16, hw = idx % 16, hf = hw / 8, wi = hw % 8;
      const int off = hf == 0 ? off0 : off1, nc = hf == 0 ? ncol0 : ncol1;
      if (wi * 8 < nc) {
        const uint32_t rowi = uint32_t(kk + k);
        bq[z] = mm_word<OFFICIAL>(hf == 0 ? w0 : w1, rowi * uint32_t(ldw) + uint32_t(off + wi));
        bs[z] = mm_f32((hf == 0 ? s0 : s1)[rowi * uint32_t(lds) + uint32_t((off + wi) / 4)]);
      }
    } else {
      const int c2 = idx / 4, wi = idx % 4, hf = c2 / MM_BH, c = c2 % MM_BH;
      const int off = hf == 0 ? off0 : off1, nc = hf == 0 ? ncol0 : ncol1;
      if (c < nc) {
        const uint32_t n = uint32_t(off + c);
        bq[z] = mm_word<OFFICIAL>(hf == 0 ? w0 : w1, n * uint32_t(ldw) + uint32_t(kk / 8 + wi));
        bs[z] = mm_f32((hf == 0 ? s0 : s1)[n * uint32_t(lds) + uint32_t(kk / 32)]);
      }
    }
  }
}

MM_FN void mm_tile_stage(bool kn, MM_THREAD float* ar, MM_THREAD uint32_t* bq,
                         MM_THREAD float* bs, MM_SHARED float* As, MM_SHARED float* Bs,
                         uint32_t tid) {
  MM_UNROLL for (int z = 0; z < (MM_BM * MM_BK) / MM_NT; ++z) {
    const int idx = int(tid) + MM_NT * z;
    As[(idx / MM_BK) * MM_AS_LD + idx % MM_BK] = ar[z];
  }
  MM_UNROLL for (int z = 0; z < 2; ++z) {
    const int idx = int(tid) + MM_NT * z;
    if (kn) {
      const int k = idx / 16, hw = idx % 16;
      MM_SHARED float* dst = Bs + k * MM_BS_LD + (hw / 8) * MM_BH + (hw % 8) * 8;
      MM_UNROLL for (int i = 0; i < 8; ++i) dst[i] = bs[z] * mm_nib(bq[z], i);
    } else {
      const int c2 = idx / 4, wi = idx % 4;
      MM_UNROLL for (int i = 0; i < 8; ++i) Bs[(wi * 8 + i) * MM_BS_LD + c2] = bs[z] * mm_nib(bq[z], i);
    }
  }
}

// One tile: acc[i][half][j] (i < 4 rows, j < 2 columns) = A[rows] . B[:, cols].
// A row m is A + (list[m] / adiv) * lda, Kd values of type AT. B half hf comes from
// (w[hf], s[hf]) with column offset off[hf] and ncol[hf] valid columns:
//   kn = true : B stored [Kd][N] as words along N (routed experts); off in words.
//   kn = false: B stored [N][Kd] as words along Kd (nn.Linear); off in rows.
// ldw / lds: words / scales per stored row. The next k-tile is fetched into registers while
// the matrix units work on the current one. The result is handed out per thread: thread
// (ty = tid / 32, tx = tid % 32) gets rows 4ty..4ty+3 and columns half*64 + 32j + tx.
template <typename AT, typename ST, bool OFFICIAL>
MM_FN void mm_tile(const MM_GLOBAL AT* A, int lda, int adiv, const MM_SHARED int* list,
                   int nrows, int Kd, bool kn, const MM_GLOBAL uint32_t* w0,
                   const MM_GLOBAL ST* s0, int off0, int ncol0, const MM_GLOBAL uint32_t* w1,
                   const MM_GLOBAL ST* s1, int off1, int ncol1, int ldw, int lds,
                   MM_SHARED float* As, MM_SHARED float* Bs, MM_THREAD float* acc,
                   uint32_t tid) {
  const int tx = int(tid) % 32, ty = int(tid) / 32;
  const int rb = ty / 4, cb = ty % 4;  // this SIMD group's 16 x 32 block of the tile
  mm_acc c0, c1;
  mm_acc_zero(c0);
  mm_acc_zero(c1);
  float ar[(MM_BM * MM_BK) / MM_NT], bs[2];
  uint32_t bq[2];
  mm_tile_fetch<AT, ST, OFFICIAL>(A, lda, adiv, list, nrows, 0, kn, w0, s0, off0, ncol0, w1, s1,
                                  off1, ncol1, ldw, lds, ar, bq, bs, tid);
  for (int kk = 0; kk < Kd; kk += MM_BK) {
    mm_tile_stage(kn, ar, bq, bs, As, Bs, tid);
    MM_BARRIER();
    if (kk + MM_BK < Kd)
      mm_tile_fetch<AT, ST, OFFICIAL>(A, lda, adiv, list, nrows, kk + MM_BK, kn, w0, s0, off0,
                                      ncol0, w1, s1, off1, ncol1, ldw, lds, ar, bq, bs, tid);
    MM_UNROLL for (int k8 = 0; k8 < MM_BK; k8 += 8) {
      const MM_SHARED float* a = As + rb * 16 * MM_AS_LD + k8;
      const MM_SHARED float* b = Bs + k8 * MM_BS_LD + cb * 32;
      mm_mma16(c0, a, MM_AS_LD, b, MM_BS_LD);
      mm_mma16(c1, a, MM_AS_LD, b + 16, MM_BS_LD);
    }
    MM_BARRIER();
  }
  // C tile through the B tile's memory
  mm_acc_store(c0, Bs + rb * 16 * MM_BS_LD + cb * 32, MM_BS_LD);
  mm_acc_store(c1, Bs + rb * 16 * MM_BS_LD + cb * 32 + 16, MM_BS_LD);
  MM_BARRIER();
  MM_UNROLL for (int i = 0; i < 4; ++i) {
    MM_UNROLL for (int c = 0; c < 4; ++c)
      acc[i * 4 + c] = Bs[(ty * 4 + i) * MM_BS_LD + (c / 2) * MM_BH + (c % 2) * 32 + tx];
  }
  MM_BARRIER();
}

// Append to list[n..] the indices q in [0, TK) with sel[q] == e, in order, MM_NT at a time
// from `base`; returns how many were appended. Barriers inside.
MM_FN int mm_collect(const MM_GLOBAL int* sel, int TK, int e, int base, MM_SHARED int* list,
                     int n, MM_SHARED int* tmp, uint32_t tid, uint32_t lane, uint32_t warp) {
  const int q = base + int(tid);
  const int flag = (q < TK && sel[q] == e) ? 1 : 0;
  const mm_scan sc = mm_block_scan(flag, tmp, lane, warp);
  if (flag) list[n + sc.excl] = q;
  MM_BARRIER();
  return sc.total;
}

// Drop the first MM_BM entries of list[0..n). Barriers inside.
MM_FN void mm_list_shift(MM_SHARED int* list, int n, uint32_t tid) {
  const int rest = n - MM_BM;  // < MM_NT
  const int v = int(tid) < rest ? list[MM_BM + int(tid)] : 0;
  MM_BARRIER();
  if (int(tid) < rest) list[tid] = v;
  MM_BARRIER();
}

// Threadgroups of the gate_up launch: E * ceil(I / 64) routed, then ceil(T / 32) * ceil(S / 64).
MM_FN int mm_gate_up_prefill_routed(int E, int I) { return E * ((I + MM_BH - 1) / MM_BH); }
MM_FN int mm_gate_up_prefill_groups(int T_, int E, int I, int S) {
  const int sh = S > 0 ? ((T_ + MM_BM - 1) / MM_BM) * ((S + MM_BH - 1) / MM_BH) : 0;
  return mm_gate_up_prefill_routed(E, I) + sh;
}

template <typename T, typename ST, bool OFFICIAL>
MM_FN void mm_moe_gate_up_prefill(
    const MM_GLOBAL T* x, const MM_GLOBAL int* sel, const MM_GLOBAL uint32_t* gu_w,
    const MM_GLOBAL ST* gu_s, const MM_GLOBAL uint32_t* sg_w, const MM_GLOBAL ST* sg_s,
    const MM_GLOBAL uint32_t* su_w, const MM_GLOBAL ST* su_s, const MM_GLOBAL int* dims,
    MM_GLOBAL float* h, MM_GLOBAL float* hs, MM_SHARED float* As, MM_SHARED float* Bs,
    MM_SHARED int* list, MM_SHARED int* tmp, uint32_t tid, uint32_t gid, uint32_t lane,
    uint32_t warp) {
  const int T_ = dims[MM_D_T], H = dims[MM_D_H], I = dims[MM_D_I], S = dims[MM_D_S];
  const int E = dims[MM_D_E], K = dims[MM_D_K];
  const int NR = mm_gate_up_prefill_routed(E, I);
  const int tx = int(tid) % 32, ty = int(tid) / 32;
  float acc[16];
  if (int(gid) < NR) {
    const int ntile = (I + MM_BH - 1) / MM_BH;
    const int e = int(gid) / ntile, nt = int(gid) % ntile;
    const int ncol = I - nt * MM_BH < MM_BH ? I - nt * MM_BH : MM_BH;
    const int ldw = I / 4, lds = I / 16;
    const MM_GLOBAL uint32_t* wp = gu_w + uint32_t(e) * uint32_t(H) * uint32_t(ldw);
    const MM_GLOBAL ST* sp = gu_s + uint32_t(e) * uint32_t(H) * uint32_t(lds);
    const int TK = T_ * K;
    int n = 0;
    for (int base = 0; base < TK || n > 0; base += MM_NT) {
      if (base < TK) n += mm_collect(sel, TK, e, base, list, n, tmp, tid, lane, warp);
      const bool last = base + MM_NT >= TK;
      while (n >= MM_BM || (last && n > 0)) {
        const int m = n < MM_BM ? n : MM_BM;
        mm_tile<T, ST, OFFICIAL>(x, H, K, list, m, H, true, wp, sp, nt * 8, ncol, wp, sp,
                                 I / 8 + nt * 8, ncol, ldw, lds, As, Bs, acc, tid);
        MM_UNROLL for (int i = 0; i < 4; ++i) {
          const int r = ty * 4 + i;
          if (r < m) {
            const uint32_t slot = uint32_t(list[r]);
            MM_UNROLL for (int j = 0; j < 2; ++j) {
              const int col = nt * MM_BH + j * 32 + tx;
              if (j * 32 + tx < ncol)
                h[slot * uint32_t(I) + uint32_t(col)] = mm_silu(acc[i * 4 + j]) * acc[i * 4 + 2 + j];
            }
          }
        }
        MM_BARRIER();
        if (n > MM_BM) mm_list_shift(list, n, tid);
        n -= m;
      }
    }
  } else {
    const int g = int(gid) - NR;
    const int ntile = (S + MM_BH - 1) / MM_BH;
    const int mt = g / ntile, nt = g % ntile;
    const int t0 = mt * MM_BM;
    const int m = T_ - t0 < MM_BM ? T_ - t0 : MM_BM;
    const int ncol = S - nt * MM_BH < MM_BH ? S - nt * MM_BH : MM_BH;
    if (int(tid) < MM_BM) list[tid] = t0 + int(tid);
    MM_BARRIER();
    mm_tile<T, ST, OFFICIAL>(x, H, 1, list, m, H, false, sg_w, sg_s, nt * MM_BH, ncol, su_w,
                             su_s, nt * MM_BH, ncol, H / 8, H / 32, As, Bs, acc, tid);
    MM_UNROLL for (int i = 0; i < 4; ++i) {
      const int r = ty * 4 + i;
      if (r < m) {
        MM_UNROLL for (int j = 0; j < 2; ++j) {
          const int col = nt * MM_BH + j * 32 + tx;
          if (j * 32 + tx < ncol)
            hs[uint32_t(t0 + r) * uint32_t(S) + uint32_t(col)] = mm_silu(acc[i * 4 + j]) * acc[i * 4 + 2 + j];
        }
      }
    }
  }
}

// Threadgroups of the down launch: E * ceil(H / 128) routed, then ceil(T / 32) * ceil(H / 128).
MM_FN int mm_down_prefill_routed(int E, int H) { return E * ((H + 2 * MM_BH - 1) / (2 * MM_BH)); }
MM_FN int mm_down_prefill_groups(int T_, int E, int H, int S) {
  const int sh = S > 0 ? ((T_ + MM_BM - 1) / MM_BM) * ((H + 2 * MM_BH - 1) / (2 * MM_BH)) : 0;
  return mm_down_prefill_routed(E, H) + sh;
}

MM_FN int mm_clamp_cols(int v) { return v < 0 ? 0 : (v > MM_BH ? MM_BH : v); }

template <typename ST, bool OFFICIAL>
MM_FN void mm_moe_down_prefill(
    const MM_GLOBAL float* h, const MM_GLOBAL float* hs, const MM_GLOBAL int* sel,
    const MM_GLOBAL float* selw, const MM_GLOBAL uint32_t* dn_w, const MM_GLOBAL ST* dn_s,
    const MM_GLOBAL uint32_t* sd_w, const MM_GLOBAL ST* sd_s, const MM_GLOBAL int* dims,
    MM_GLOBAL float* ys, MM_GLOBAL float* ysh, MM_SHARED float* As, MM_SHARED float* Bs,
    MM_SHARED int* list, MM_SHARED int* tmp, uint32_t tid, uint32_t gid, uint32_t lane,
    uint32_t warp) {
  const int T_ = dims[MM_D_T], H = dims[MM_D_H], I = dims[MM_D_I], S = dims[MM_D_S];
  const int E = dims[MM_D_E], K = dims[MM_D_K];
  const int NR = mm_down_prefill_routed(E, H);
  const int ntile = (H + 2 * MM_BH - 1) / (2 * MM_BH);
  const int tx = int(tid) % 32, ty = int(tid) / 32;
  float acc[16];
  if (int(gid) < NR) {
    const int e = int(gid) / ntile, nt = int(gid) % ntile;
    const int c0 = nt * 2 * MM_BH;
    const int nc0 = mm_clamp_cols(H - c0), nc1 = mm_clamp_cols(H - c0 - MM_BH);
    const int ldw = H / 8, lds = H / 32;
    const MM_GLOBAL uint32_t* wp = dn_w + uint32_t(e) * uint32_t(I) * uint32_t(ldw);
    const MM_GLOBAL ST* sp = dn_s + uint32_t(e) * uint32_t(I) * uint32_t(lds);
    const int TK = T_ * K;
    int n = 0;
    for (int base = 0; base < TK || n > 0; base += MM_NT) {
      if (base < TK) n += mm_collect(sel, TK, e, base, list, n, tmp, tid, lane, warp);
      const bool last = base + MM_NT >= TK;
      while (n >= MM_BM || (last && n > 0)) {
        const int m = n < MM_BM ? n : MM_BM;
        mm_tile<float, ST, OFFICIAL>(h, I, 1, list, m, I, true, wp, sp, c0 / 8, nc0, wp, sp,
                                     c0 / 8 + MM_BH / 8, nc1, ldw, lds, As, Bs, acc, tid);
        MM_UNROLL for (int i = 0; i < 4; ++i) {
          const int r = ty * 4 + i;
          if (r < m) {
            const uint32_t slot = uint32_t(list[r]);
            const float wr = selw[slot];
            MM_UNROLL for (int c = 0; c < 4; ++c) {
              const int lc = (c / 2) * MM_BH + (c % 2) * 32 + tx;
              if ((c < 2 ? (c % 2) * 32 + tx < nc0 : (c % 2) * 32 + tx < nc1))
                ys[slot * uint32_t(H) + uint32_t(c0 + lc)] = wr * acc[i * 4 + c];
            }
          }
        }
        MM_BARRIER();
        if (n > MM_BM) mm_list_shift(list, n, tid);
        n -= m;
      }
    }
  } else {
    const int g = int(gid) - NR;
    const int mt = g / ntile, nt = g % ntile;
    const int t0 = mt * MM_BM;
    const int m = T_ - t0 < MM_BM ? T_ - t0 : MM_BM;
    const int c0 = nt * 2 * MM_BH;
    const int nc0 = mm_clamp_cols(H - c0), nc1 = mm_clamp_cols(H - c0 - MM_BH);
    if (int(tid) < MM_BM) list[tid] = t0 + int(tid);
    MM_BARRIER();
    mm_tile<float, ST, OFFICIAL>(hs, S, 1, list, m, S, false, sd_w, sd_s, c0, nc0, sd_w, sd_s,
                                 c0 + MM_BH, nc1, S / 8, S / 32, As, Bs, acc, tid);
    MM_UNROLL for (int i = 0; i < 4; ++i) {
      const int r = ty * 4 + i;
      if (r < m) {
        MM_UNROLL for (int c = 0; c < 4; ++c) {
          const int lc = (c / 2) * MM_BH + (c % 2) * 32 + tx;
          if ((c < 2 ? (c % 2) * 32 + tx < nc0 : (c % 2) * 32 + tx < nc1))
            ysh[uint32_t(t0 + r) * uint32_t(H) + uint32_t(c0 + lc)] = acc[i * 4 + c];
        }
      }
    }
  }
}

// y[t, c] = sum_r ys[t*K + r, c] + ysh[t, c]. Grid: ceil(T * H / 256) threadgroups.
template <typename T>
MM_FN void mm_moe_combine(const MM_GLOBAL float* ys, const MM_GLOBAL float* ysh,
                          const MM_GLOBAL int* dims, MM_GLOBAL T* y, uint32_t tid,
                          uint32_t gid) {
  const int T_ = dims[MM_D_T], H = dims[MM_D_H], S = dims[MM_D_S], K = dims[MM_D_K];
  const uint32_t idx = gid * uint32_t(MM_NT) + tid;
  if (idx >= uint32_t(T_) * uint32_t(H)) return;
  const uint32_t t = idx / uint32_t(H), c = idx % uint32_t(H);
  float v = 0.0f;
  for (int r = 0; r < K; ++r) v += ys[(t * uint32_t(K) + uint32_t(r)) * uint32_t(H) + c];
  if (S > 0) v += ysh[idx];
  y[idx] = mm_to<T>(v);
}

#endif
