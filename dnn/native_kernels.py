"""Compiled OpenMP CPU kernels for the AdderNet layers, built on first use with the system C compiler.

The C source below is compiled once per machine and source version into a shared library cached under
`$AXNET_CACHE` (default `~/.cache/axnet/kernels`) and called through ctypes, so the build takes about a second and
needs no torch headers. If no compiler is found, the build fails, or `AXNET_NATIVE=0` is set, `available()` is False
and `dnn.adder_ops` uses its torch versions instead (which the tests also use as references).
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import torch
import torch.nn.functional as F

SLACK = 256  # spare elements after each padded image, so 8-lane vectors may read past the end of a row

SOURCE = r"""
/* Compiled CPU kernels for the AdderNet layers (see dnn/adder_ops.py for the definitions and torch references).
 *
 * All images are zero- (or pad-index-) padded by the caller and carry SLACK spare elements at the end, so a kernel
 * may read whole 8-lane vectors past the last valid pixel of a row; those lanes are computed and dropped.
 * Vectors use GCC vector extensions, so the file builds for whatever SIMD width -march=native offers.
 * Loops whose tasks write disjoint outputs are scheduled dynamically (on a shared, noisy machine a descheduled thread
 * then delays nobody); the ones that sum into per-thread tables keep a fixed split, so results are reproducible.
 * Table kernels work on tiles of output pixels one input channel at a time, so the channel's tables (kh*kw*V*Op
 * floats) stay in L2 while a tile's accumulators stay in L1/L2.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <omp.h>
#if defined(__AVX__)
#include <immintrin.h>
#endif

typedef float v8 __attribute__((vector_size(32)));
typedef int32_t vi8 __attribute__((vector_size(32)));

static inline v8 vload(const float *p) { v8 v; memcpy(&v, p, sizeof v); return v; }
static inline void vstore(float *p, v8 v) { memcpy(p, &v, sizeof v); }
static inline v8 vsplat(float a) { return (v8){a, a, a, a, a, a, a, a}; }
static inline v8 vabs(v8 v) { return (v8)((vi8)v & 0x7fffffff); }
/* min(max(w, lo), hi): with lo = x - 1 and hi = x + 1 this is clamp(w - x, -1, 1) + x, one subtraction fewer. */
#if defined(__AVX__)
static inline v8 vclampw(v8 w, v8 lo, v8 hi) { return (v8)_mm256_min_ps(_mm256_max_ps((__m256)w, (__m256)lo), (__m256)hi); }
#else
static inline v8 vselect(vi8 mask, v8 a, v8 b) { return (v8)(((vi8)a & mask) | ((vi8)b & ~mask)); }
static inline v8 vclampw(v8 w, v8 lo, v8 hi) {
    w = vselect(w < lo, lo, w);
    return vselect(w > hi, hi, w);
}
#endif
static inline v8 vgather(const float *p, int step) {
    v8 v;
    for (int t = 0; t < 8; t++) v[t] = p[(long)t * step];
    return v;
}
static inline v8 vrow(const float *p, int step) { return step == 1 ? vload(p) : vgather(p, step); }
static inline float vsum(v8 v) {
    float s = 0.0f;
    for (int t = 0; t < 8; t++) s += v[t];
    return s;
}

/* Y[n,o,oh,ow] = -sum_{c,i,j} |xp[n,c,oh*sh+i*dh,ow*sw+j*dw] - w[o,c,i,j]|.
 * wt holds the filters in blocks of 8: wt[ob][k][b] = w[8*ob+b][k] (zero beyond O). out is (N, O, Ho, Wo). */
void l1_forward_f32(const float *xp, const float *wt, float *out, int N, int C, int Hp, int Wp, int O, int kh,
                    int kw, int sh, int sw, int dh, int dw, int Ho, int Wo, int threads) {
    const long K = (long)C * kh * kw;
    const int OB = (O + 7) / 8;
    const long tasks = (long)N * Ho * OB;
#pragma omp parallel for num_threads(threads) schedule(dynamic, 4)
    for (long t = 0; t < tasks; t++) {
        const int ob = (int)(t % OB), oh = (int)((t / OB) % Ho), n = (int)(t / ((long)OB * Ho));
        for (int ow0 = 0; ow0 < Wo; ow0 += 8) {
            v8 acc[8];
            for (int b = 0; b < 8; b++) acc[b] = vsplat(0.0f);
            const float *w = wt + (long)ob * K * 8;
            for (int c = 0; c < C; c++)
                for (int i = 0; i < kh; i++) {
                    const float *xrow = xp + (((long)n * C + c) * Hp + (long)oh * sh + (long)i * dh) * Wp
                                        + (long)ow0 * sw;
                    for (int j = 0; j < kw; j++, w += 8) {
                        const v8 x = vrow(xrow + (long)j * dw, sw);
                        for (int b = 0; b < 8; b++) acc[b] += vabs(x - vsplat(w[b]));
                    }
                }
            const int lanes = Wo - ow0 < 8 ? Wo - ow0 : 8;
            for (int b = 0; b < 8 && ob * 8 + b < O; b++) {
                float *dst = out + (((long)n * O + ob * 8 + b) * Ho + oh) * Wo + ow0;
                for (int l = 0; l < lanes; l++) dst[l] = -acc[b][l];
            }
        }
    }
}

/* One stretch of 8*NQ pixels of one input row of the HardTanh input gradient: the sum over the `taps` output rows
 * that read this input row (through filter row i) of sum_o g[o] * clamp(w[o] - x, -1, 1), computed as
 * sum_o g[o] * min(max(w[o], x - 1), x + 1) - x * gsum, gsum = sum_o g[o] precomputed per output pixel: three vector
 * operations per (o, pixel) instead of four. The taps share x and the accumulators, so each stretch is written once. */
static inline __attribute__((always_inline)) void l1_grad_span(const float *x, int sw, const float *const *wrows,
                                                               const float *const *gps, const float *const *gss,
                                                               int taps, long gstride, int O, float *dst, int lanes,
                                                               const int NQ) {
    v8 lo[4], hi[4], s[4];  /* 12 of the 16 vector registers */
    for (int q = 0; q < NQ; q++) {
        const v8 xq = vrow(x + (long)8 * q * sw, sw);
        lo[q] = xq - vsplat(1.0f);
        hi[q] = xq + vsplat(1.0f);
        s[q] = vsplat(0.0f);
    }
    for (int t = 0; t < taps; t++) {
        const float *wrow = wrows[t], *gp = gps[t];
        for (int q = 0; q < NQ; q++) s[q] -= (lo[q] + vsplat(1.0f)) * vload(gss[t] + 8 * q);
        for (int o = 0; o < O; o++, gp += gstride) {
            const v8 w0 = vsplat(wrow[o]);
            for (int q = 0; q < NQ; q++) s[q] += vload(gp + 8 * q) * vclampw(w0, lo[q], hi[q]);
        }
    }
    int l = 0;
    if (sw == 1)  /* whole vectors straight into the padded gradient image */
        for (; l + 8 <= lanes; l += 8) vstore(dst + l, vload(dst + l) + s[l / 8]);
    for (; l < lanes; l++) dst[(long)l * sw] += s[l / 8][l % 8];
}

/* gx[n,c,h,w] = sum over the (o, oh, ow, i, j) reading input pixel (h, w) of g[n,o,oh,ow] * clamp(w[o,c,i,j] - x, -1, 1).
 * xp is the input padded by (ph, pw) to (N, C, Hp, Wp); gx is the unpadded (N, C, H, W) result.
 * wk is the weight transposed to (K, O); g is transposed to (N, Ho, O, Wo), so the O rows one output row needs lie
 * together (in (N, O, Ho, Wo) they are a plane apart, 4 KiB for 32x32 maps, and evict each other from L1); gsum is
 * sum_o g, (N, Ho, Wo); both end with slack. scratch holds threads * (Hp * Wp + 8) floats.
 * Each task sums one padded plane in a per-thread scratch plane (in cache), one input row at a time: each stretch of a
 * row gathers every filter row that reads it and is stored once; the plane's interior is then copied out. */
void l1_input_grad_f32(const float *xp, const float *wk, const float *g, const float *gsum, float *gx, float *scratch,
                       int N, int C, int Hp, int Wp, int O, int kh, int kw, int sh, int sw, int dh, int dw, int Ho, int Wo,
                       int ph, int pw, int H, int W, int threads) {
    const long tasks = (long)N * C, area = (long)Hp * Wp;
#pragma omp parallel num_threads(threads)
    {
        float *plane = scratch + (area + 8) * omp_get_thread_num();
        const float *wrows[kh], *gps[kh], *gss[kh], *wr[kh];  /* at most kh filter rows read one input row */
        int rows[kh];
#pragma omp for schedule(dynamic, 4)
        for (long t = 0; t < tasks; t++) {
            const int n = (int)(t / C), c = (int)(t % C);
            memset(plane, 0, sizeof(float) * area);
            for (int r = ph; r < ph + H; r++)  /* padding rows are dropped: not computed */
                for (int j = 0; j < kw; j++) {
                    int taps = 0;
                    for (int i = 0; i < kh; i++) {  /* filter rows i with r = oh*sh + i*dh, 0 <= oh < Ho */
                        const int d = r - i * dh;
                        if (d < 0 || d % sh || d / sh >= Ho) continue;
                        rows[taps] = d / sh;
                        wr[taps++] = wk + (((long)c * kh + i) * kw + j) * O;
                    }
                    if (!taps) continue;
                    const float *xrow = xp + (t * Hp + r) * Wp + (long)j * dw;
                    float *drow = plane + (long)r * Wp + (long)j * dw;
                    for (int ow0 = 0; ow0 < Wo; ow0 += 32) {
                        const int lanes = Wo - ow0 < 32 ? Wo - ow0 : 32;
                        for (int u = 0; u < taps; u++) {
                            wrows[u] = wr[u];
                            gps[u] = g + ((long)n * Ho + rows[u]) * O * Wo + ow0;
                            gss[u] = gsum + ((long)n * Ho + rows[u]) * Wo + ow0;
                        }
                        const float *x = xrow + (long)ow0 * sw;
                        float *dst = drow + (long)ow0 * sw;
                        if (lanes > 16) l1_grad_span(x, sw, wrows, gps, gss, taps, Wo, O, dst, lanes, 4);
                        else if (lanes > 8) l1_grad_span(x, sw, wrows, gps, gss, taps, Wo, O, dst, lanes, 2);
                        else l1_grad_span(x, sw, wrows, gps, gss, taps, Wo, O, dst, lanes, 1);
                    }
                }
            for (int h = 0; h < H; h++)
                memcpy(gx + (t * H + h) * W, plane + (long)(h + ph) * Wp + pw, sizeof(float) * W);
        }
    }
}

/* dst (planes, H + 2ph, W + 2pw) = src (planes, H, W) padded with `fill`, for any 4-byte element (float or int32):
 * one parallel pass that writes every element once (torch's strided border fills cost more than the copy). */
void pad_planes_32(const uint32_t *src, uint32_t *dst, long planes, int H, int W, int ph, int pw, uint32_t fill,
                   int threads) {
    const int Hp = H + 2 * ph, Wp = W + 2 * pw;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (long t = 0; t < planes; t++) {
        uint32_t *out = dst + t * Hp * Wp;
        const uint32_t *in = src + t * H * W;
        for (long e = 0; e < (long)ph * Wp; e++) out[e] = fill;
        for (int h = 0; h < H; h++) {
            uint32_t *row = out + (long)(h + ph) * Wp;
            for (int e = 0; e < pw; e++) row[e] = row[pw + W + e] = fill;
            memcpy(row + pw, in + (long)h * W, sizeof(uint32_t) * W);
        }
        for (long e = (long)(H + ph) * Wp; e < (long)Hp * Wp; e++) out[e] = fill;
    }
}

/* The output gradient as the input-gradient kernel reads it: gt (N, Ho, O, Wo) = g (N, O, Ho, Wo) transposed, and
 * gsum (N, Ho, Wo) = sum_o g. */
void l1_grad_rows(const float *g, float *gt, float *gsum, int N, int O, int Ho, int Wo, int threads) {
#pragma omp parallel for num_threads(threads) schedule(static)
    for (long t = 0; t < (long)N * Ho; t++) {
        const long n = t / Ho, oh = t % Ho;
        float *sum = gsum + t * Wo;
        memset(sum, 0, sizeof(float) * Wo);
        for (int o = 0; o < O; o++) {
            const float *row = g + ((n * O + o) * Ho + oh) * Wo;
            memcpy(gt + (t * O + o) * Wo, row, sizeof(float) * Wo);
            for (int w = 0; w < Wo; w++) sum[w] += row[w];
        }
    }
}

/* Rows of output per tile so that a tile holds about 512 pixels. */
static inline int tile_rows(int Wo) { int r = 512 / (Wo > 0 ? Wo : 1); return r < 1 ? 1 : r; }

/* out[n,oh,ow,o] = sum_{c,i,j} tab[k, ip[n,c,oh*sh+i*dh,ow*sw+j*dw], o] with k = (c*kh+i)*kw+j.
 * tab is (K, V, Op) with Op a multiple of 8; out is (N, Ho, Wo, Op) and serves as the accumulator. */
void table_forward_f32(const int32_t *ip, const float *tab, float *out, int N, int C, int Hp, int Wp, int V, int Op,
                       int kh, int kw, int sh, int sw, int dh, int dw, int Ho, int Wo, int threads) {
    const int RB = tile_rows(Wo), blocks = (Ho + RB - 1) / RB;
    const long tasks = (long)N * blocks;
#pragma omp parallel for num_threads(threads) schedule(dynamic, 4)
    for (long t = 0; t < tasks; t++) {
        const int n = (int)(t / blocks), oh0 = (int)(t % blocks) * RB;
        const int oh1 = oh0 + RB < Ho ? oh0 + RB : Ho;
        memset(out + ((long)n * Ho + oh0) * Wo * Op, 0, sizeof(float) * (long)(oh1 - oh0) * Wo * Op);
        for (int c = 0; c < C; c++)
            for (int oh = oh0; oh < oh1; oh++)
                for (int ow = 0; ow < Wo; ow++)
                    for (int o0 = 0; o0 < Op; o0 += 64) {
                        const int nv = (Op - o0 < 64 ? Op - o0 : 64) / 8;
                        float *dst = out + (((long)n * Ho + oh) * Wo + ow) * Op + o0;
                        v8 acc[8];
                        for (int q = 0; q < nv; q++) acc[q] = vload(dst + 8 * q);
                        long k = (long)c * kh * kw;
                        for (int i = 0; i < kh; i++) {
                            const int32_t *irow = ip + (((long)n * C + c) * Hp + (long)oh * sh + (long)i * dh) * Wp
                                                  + (long)ow * sw;
                            for (int j = 0; j < kw; j++, k++) {
                                const float *row = tab + (k * V + irow[(long)j * dw]) * Op + o0;
                                for (int q = 0; q < nv; q++) acc[q] += vload(row + 8 * q);
                            }
                        }
                        for (int q = 0; q < nv; q++) vstore(dst + 8 * q, acc[q]);
                    }
    }
}

/* Sum over each patch of |d| for a width-bit (<= 32) ripple-carry adder whose low `approx_bits` cells are given by
 * chained tables: d = add(a, b) read as signed, a = w pattern (wk, (O, K)), b = -x pattern (bp, padded image).
 * Chunk c covers bits [off[c], off[c]+bits[c]) with table tabs[start[c] + ((carry << 2m) | (a_m << m) | b_m)] =
 * s_m | (cout << m). out is (N, O, Ho, Wo) float64 (exact: the sums are below 2^53). */
void cell_forward_i64(const int64_t *bp, const int64_t *wk, double *out, int N, int C, int Hp, int Wp, int O, int kh,
                      int kw, int sh, int sw, int dh, int dw, int Ho, int Wo, const int16_t *tabs, const int *off,
                      const int *bits, const long *start, int nchunks, int approx_bits, int width, int threads) {
    const long K = (long)C * kh * kw;
    const int64_t mask = (width >= 63) ? -1 : (((int64_t)1 << width) - 1), half = (int64_t)1 << (width - 1);
    const long tasks = (long)N * Ho;
#pragma omp parallel num_threads(threads)
    {
        int64_t *col = (int64_t *)malloc(sizeof(int64_t) * K);
#pragma omp for schedule(dynamic, 4)
        for (long t = 0; t < tasks; t++) {
            const int n = (int)(t / Ho), oh = (int)(t % Ho);
            for (int ow = 0; ow < Wo; ow++) {
                long k = 0;
                for (int c = 0; c < C; c++)
                    for (int i = 0; i < kh; i++)
                        for (int j = 0; j < kw; j++, k++)
                            col[k] = bp[(((long)n * C + c) * Hp + (long)oh * sh + (long)i * dh) * Wp
                                        + (long)ow * sw + (long)j * dw];
                for (int o = 0; o < O; o++) {
                    const int64_t *a = wk + (long)o * K;
                    int64_t total = 0;
                    for (long q = 0; q < K; q++) {
                        const int64_t av = a[q], bv = col[q];
                        int64_t carry = 0, low = 0;
                        for (int ch = 0; ch < nchunks; ch++) {
                            const int m = bits[ch];
                            const int64_t mm = ((int64_t)1 << m) - 1;
                            const int64_t e = tabs[start[ch] + ((carry << (2 * m)) | (((av >> off[ch]) & mm) << m)
                                                                | ((bv >> off[ch]) & mm))];
                            low |= (e & mm) << off[ch];
                            carry = e >> m;
                        }
                        int64_t word = ((((av >> approx_bits) + (bv >> approx_bits) + carry) << approx_bits) | low)
                                       & mask;
                        if (word >= half) word -= (int64_t)1 << width;
                        total += word < 0 ? -word : word;
                    }
                    out[(((long)n * O + o) * Ho + oh) * Wo + ow] = (double)total;
                }
            }
        }
        free(col);
    }
}

/* The same sums for at most 8 approximate cells and width <= 32, through the error table of the low part:
 * add(a, b) = a + b + delta[(a_lo << k) | b_lo] modulo 2^width, and a + b = w - x, so d = signext(w - x + delta).
 * wv (O, K) and xv (padded image) hold the signed values; wlo, xlo their low k bits (wlo already shifted by k). */
void cell_small_forward(const int32_t *xv, const int32_t *xlo, const int32_t *wv, const int32_t *wlo,
                        const int32_t *delta, double *out, int N, int C, int Hp, int Wp, int O, int kh, int kw,
                        int sh, int sw, int dh, int dw, int Ho, int Wo, int width, int threads) {
    const long K = (long)C * kh * kw;
    const int shift = 32 - width;
    const long tasks = (long)N * Ho;
#pragma omp parallel num_threads(threads)
    {
        int32_t *cv = (int32_t *)malloc(sizeof(int32_t) * 2 * K), *cl = cv + K;
#pragma omp for schedule(dynamic, 4)
        for (long t = 0; t < tasks; t++) {
            const int n = (int)(t / Ho), oh = (int)(t % Ho);
            for (int ow = 0; ow < Wo; ow++) {
                long k = 0;
                for (int c = 0; c < C; c++)
                    for (int i = 0; i < kh; i++)
                        for (int j = 0; j < kw; j++, k++) {
                            const long pos = (((long)n * C + c) * Hp + (long)oh * sh + (long)i * dh) * Wp
                                             + (long)ow * sw + (long)j * dw;
                            cv[k] = xv[pos];
                            cl[k] = xlo[pos];
                        }
                for (int o = 0; o < O; o++) {
                    const int32_t *a = wv + (long)o * K, *al = wlo + (long)o * K;
                    int64_t total = 0;
                    for (long q = 0; q < K; q++) {
                        const uint32_t u = (uint32_t)a[q] - (uint32_t)cv[q] + (uint32_t)delta[al[q] | cl[q]];
                        const int32_t v = (int32_t)(u << shift) >> shift;
                        total += v < 0 ? -(int64_t)v : (int64_t)v;
                    }
                    out[(((long)n * O + o) * Ho + oh) * Wo + ow] = (double)total;
                }
            }
        }
        free(cv);
    }
}

/* Both table gradients in one pass (what the LUT-gradient backward needs), walking the padded input pixels:
 * gx[n, c, h, w] = sum over the taps k = (c, i, j) and output pixels (oh, ow) reading that pixel of
 * dot(gt[n,oh,ow,:], btab[k, v, :]), and hbuf[thread][k, v, :] += gt[n,oh,ow,:], v = ip[pixel]. Each input pixel
 * gathers all its taps into one vector and is written once (one lane sum per pixel, not per tap); padding pixels
 * only feed hbuf (their value row is the pad index). gx is the unpadded (N, C, H, W) result. Threads own whole
 * images (fixed split: reproducible float sums); the caller sums the per-thread tables. */
void table_backward_f32(const int32_t *ip, const float *btab, const float *gt, float *gx, float *hbuf, int N, int C,
                        int Hp, int Wp, int V, int Op, int kh, int kw, int sh, int sw, int dh, int dw, int Ho, int Wo,
                        int ph, int pw, int H, int W, int threads) {
    const long table = (long)C * kh * kw * V * Op;
#pragma omp parallel num_threads(threads)
    {
        float *h = hbuf + omp_get_thread_num() * table;
        int ohs[kh], ows[kw];
#pragma omp for schedule(static, 1) /* a fixed split keeps the float sums, and so training runs, reproducible */
        for (int n = 0; n < N; n++)
            for (int c = 0; c < C; c++)
                for (int r = 0; r < Hp; r++) {
                    for (int i = 0; i < kh; i++) {  /* output row reading padded row r through filter row i, or -1 */
                        const int d = r - i * dh;
                        ohs[i] = d >= 0 && d % sh == 0 && d / sh < Ho ? d / sh : -1;
                    }
                    const int inside_row = r >= ph && r < ph + H;
                    for (int col = 0; col < Wp; col++) {
                        for (int j = 0; j < kw; j++) {
                            const int e = col - j * dw;
                            ows[j] = e >= 0 && e % sw == 0 && e / sw < Wo ? e / sw : -1;
                        }
                        const int v = ip[(((long)n * C + c) * Hp + r) * Wp + col];
                        v8 s = vsplat(0.0f);
                        for (int i = 0; i < kh; i++) {
                            if (ohs[i] < 0) continue;
                            for (int j = 0; j < kw; j++) {
                                if (ows[j] < 0) continue;
                                const long row = ((((long)c * kh + i) * kw + j) * V + v) * Op;
                                const float *gv = gt + (((long)n * Ho + ohs[i]) * Wo + ows[j]) * Op;
                                for (int q = 0; q < Op; q += 8) {
                                    const v8 g = vload(gv + q);
                                    s += g * vload(btab + row + q);
                                    vstore(h + row + q, vload(h + row + q) + g);
                                }
                            }
                        }
                        if (inside_row && col >= pw && col < pw + W)
                            gx[(((long)n * C + c) * H + r - ph) * W + col - pw] = vsum(s);
                    }
                }
    }
}
"""

_FLAGS = ["-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-std=gnu11"]
_STATE = {"lib": None, "error": None, "tried": False}


def _cpu_signature():
    """A short description of this CPU, so a cache shared between machines never loads a foreign -march build."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    import platform
    return platform.processor() + platform.machine()


def _cache_dir():
    return Path(os.environ.get("AXNET_CACHE", Path.home() / ".cache" / "axnet")) / "kernels"


def _build(target):
    """Compile SOURCE into `target` atomically (a temporary file renamed into place)."""
    compiler = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        raise RuntimeError("no C compiler (gcc or cc) on PATH")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        src = Path(tmp) / "adder_kernels.c"
        src.write_text(SOURCE)
        out = Path(tmp) / target.name
        result = subprocess.run([compiler, *_FLAGS, str(src), "-o", str(out)], capture_output=True, text=True,
                                timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"{compiler} failed: {result.stderr.strip()[:500]}")
        os.replace(out, target)


def load():
    """The ctypes library, building it on first use; None when it cannot be had (the reason is in `error()`)."""
    if _STATE["tried"]:
        return _STATE["lib"]
    _STATE["tried"] = True
    if os.environ.get("AXNET_NATIVE", "1") == "0":
        _STATE["error"] = "disabled by AXNET_NATIVE=0"
        return None
    key = hashlib.sha256((SOURCE + " ".join(_FLAGS) + _cpu_signature()).encode()).hexdigest()[:16]
    target = _cache_dir() / f"adder_kernels_{key}.so"
    try:
        if not target.exists():
            _build(target)
        lib = ctypes.CDLL(str(target))
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        _STATE["error"] = str(exc)
        return None
    for name in ("l1_forward_f32", "l1_input_grad_f32", "table_forward_f32", "table_backward_f32", "cell_forward_i64",
                 "cell_small_forward", "pad_planes_32", "l1_grad_rows"):
        getattr(lib, name).restype = None
    _STATE["lib"] = lib
    return lib


def available():
    """True when the compiled kernels are loaded (or could be built now)."""
    return load() is not None


def error():
    """Why the compiled kernels are not available, or None."""
    load()
    return _STATE["error"]


def _ptr(t):
    return ctypes.c_void_p(t.data_ptr())


def _ints(*values):
    return [ctypes.c_int(int(v)) for v in values]


_WORK = threading.local()


def _work_buffer(name, numel):
    """A float32 work buffer of at least `numel` elements kept between calls (per thread): fresh multi-MB buffers
    cost a page fault per 4 KiB on every call, which on a VM is several milliseconds per layer."""
    buffers = _WORK.__dict__.setdefault("buffers", {})
    buf = buffers.get(name)
    if buf is None or buf.numel() < numel:
        buf = buffers[name] = torch.empty(numel, dtype=torch.float32)
    return buf[:numel]


def _padded(x, geom, fill, dtype):
    """Copy x (N, C, H, W) into a fresh buffer padded by geom.padding with `fill`, plus SLACK spare elements."""
    n, c, h, w = x.shape
    ph, pw = geom.padding
    hp, wp = h + 2 * ph, w + 2 * pw
    flat = torch.empty(n * c * hp * wp + SLACK, dtype=dtype)
    flat[n * c * hp * wp:] = fill
    image = flat[: n * c * hp * wp].view(n, c, hp, wp)
    if dtype in (torch.float32, torch.int32):  # one compiled pass
        src = x.to(dtype).contiguous()
        bits = torch.tensor([fill], dtype=dtype).view(torch.int32).item() & 0xFFFFFFFF
        load().pad_planes_32(_ptr(src), _ptr(flat), ctypes.c_long(n * c), *_ints(h, w, ph, pw),
                             ctypes.c_uint32(bits), ctypes.c_int(torch.get_num_threads()))
        return flat, image
    if ph:  # only the border is filled: the interior is written once, by the copy
        image[:, :, :ph] = fill
        image[:, :, ph + h:] = fill
    if pw:
        image[:, :, ph:ph + h, :pw] = fill
        image[:, :, ph:ph + h, pw + w:] = fill
    image[:, :, ph:ph + h, pw:pw + w] = x
    return flat, image


def _geometry_args(geom, ho, wo):
    return _ints(*geom.kernel, *geom.stride, *geom.dilation, ho, wo)


def pad_input(x, geom):
    """(flat, image): x zero-padded for the l1 kernels, with slack; pass it to both kernels to pad only once."""
    return _padded(x, geom, 0.0, torch.float32)


def l1_forward(x, weight, geom, padded=None):
    """Compiled exact forward: -sum |x - w| over each padded patch, (N, O, Ho, Wo) float32."""
    lib = load()
    n, c, h, w = x.shape
    o = weight.shape[0]
    ho, wo = geom.output_size(h, w)
    flat, image = padded or pad_input(x, geom)
    blocks = (o + 7) // 8
    wt = torch.zeros(blocks * 8, weight[0].numel(), dtype=torch.float32)
    wt[:o] = weight.reshape(o, -1)
    wt = wt.view(blocks, 8, -1).transpose(1, 2).contiguous()
    out = torch.empty(n, o, ho, wo, dtype=torch.float32)
    lib.l1_forward_f32(_ptr(flat), _ptr(wt), _ptr(out), *_ints(n, c, image.shape[2], image.shape[3], o),
                       *_geometry_args(geom, ho, wo), ctypes.c_int(torch.get_num_threads()))
    return out


def l1_input_grad(x_shape, weight, grad_out, geom, padded):
    """Compiled HardTanh input gradient of an input of `x_shape`, from its `pad_input` buffers."""
    lib = load()
    n, c, h, w = x_shape
    o = weight.shape[0]
    ho, wo = geom.output_size(h, w)
    flat, image = padded
    wk = weight.reshape(o, -1).t().contiguous()
    g = _work_buffer("grad_rows", n * ho * o * wo + SLACK)
    g[n * ho * o * wo:] = 0
    gsum = _work_buffer("grad_sums", n * ho * wo + SLACK)
    gsum[n * ho * wo:] = 0
    lib.l1_grad_rows(_ptr(grad_out.float().contiguous()), _ptr(g), _ptr(gsum), *_ints(n, o, ho, wo),
                     ctypes.c_int(torch.get_num_threads()))
    grad = torch.empty(n, c, h, w, dtype=torch.float32)
    threads = torch.get_num_threads()
    scratch = _work_buffer("planes", threads * (image.shape[2] * image.shape[3] + 8))
    lib.l1_input_grad_f32(_ptr(flat), _ptr(wk), _ptr(g), _ptr(gsum), _ptr(grad), _ptr(scratch),
                          *_ints(n, c, image.shape[2], image.shape[3], o), *_geometry_args(geom, ho, wo),
                          *_ints(*geom.padding, h, w), ctypes.c_int(threads))
    return grad


def _padded_table(table):
    """(K, V, O) -> (K, V, Op) float32 with Op the next multiple of 8 (zero columns)."""
    k, v, o = table.shape
    width = (o + 7) // 8 * 8
    if width == o and table.dtype == torch.float32 and table.is_contiguous():
        return table
    return F.pad(table.float(), (0, width - o)).contiguous()


def _grad_rows(grad_out, width):
    """(N, O, Ho, Wo) -> (N, Ho, Wo, Op) float32 with zero columns up to Op."""
    return F.pad(grad_out.float().permute(0, 2, 3, 1), (0, width - grad_out.shape[1])).contiguous()


def table_forward(index, table, geom, pad_index):
    """Compiled table forward: sum of table rows, (N, O, Ho, Wo) float32."""
    lib = load()
    n, c, h, w = index.shape
    k, v, o = table.shape
    ho, wo = geom.output_size(h, w)
    flat, image = _padded(index, geom, pad_index, torch.int32)
    tab = _padded_table(table)
    width = tab.shape[2]
    out = torch.empty(n, ho, wo, width, dtype=torch.float32)
    lib.table_forward_f32(_ptr(flat), _ptr(tab), _ptr(out), *_ints(n, c, image.shape[2], image.shape[3], v, width),
                          *_geometry_args(geom, ho, wo), ctypes.c_int(torch.get_num_threads()))
    return out[..., :o].permute(0, 3, 1, 2)


def cell_forward(xq, wq, geom, chunks, approx_bits, width):
    """Compiled per-pair sums of |add(w, -x)| for a ripple of cells (width <= 32), (N, O, Ho, Wo) float64."""
    if len(chunks) <= 1 and width <= 32:
        return _cell_small_forward(xq, wq, geom, chunks[0][2] if chunks else None, approx_bits, width)
    lib = load()
    n, c, h, w = xq.shape
    o = wq.shape[0]
    ho, wo = geom.output_size(h, w)
    mask = (1 << width) - 1
    flat, image = _padded((-xq).to(torch.int64) & mask, geom, 0, torch.int64)
    wk = (wq.reshape(o, -1).to(torch.int64) & mask).contiguous()
    # entries hold m + 1 <= 9 bits: int16 tables, each shared table once (ripple_tables gives every m = 8 chunk the
    # same one), so a 32-cell ripple reads one 256 KiB table that stays in L2, not four of 1 MiB
    tables, starts, seen = [], [], {}
    for _, _, table in chunks:
        if id(table) not in seen:
            seen[id(table)] = sum(t.numel() for t in tables)
            tables.append(table.to(torch.int16))
        starts.append(seen[id(table)])
    tabs = torch.cat(tables) if tables else torch.zeros(1, dtype=torch.int16)
    count = max(1, len(chunks))
    offsets = (ctypes.c_int * count)(*[off for off, _, _ in chunks])
    bits = (ctypes.c_int * count)(*[m for _, m, _ in chunks])
    begins = (ctypes.c_long * count)(*starts[:len(chunks)])
    out = torch.empty(n, o, ho, wo, dtype=torch.float64)
    lib.cell_forward_i64(_ptr(flat), _ptr(wk), _ptr(out), *_ints(n, c, image.shape[2], image.shape[3], o),
                         *_geometry_args(geom, ho, wo), _ptr(tabs), offsets, bits, begins, ctypes.c_int(len(chunks)),
                         ctypes.c_int(approx_bits), ctypes.c_int(width), ctypes.c_int(torch.get_num_threads()))
    return out


def _cell_small_forward(xq, wq, geom, table, approx_bits, width):
    """cell_forward for at most 8 approximate cells (one chunk, or none), through the low part's error table."""
    lib = load()
    n, c, h, w = xq.shape
    o = wq.shape[0]
    ho, wo = geom.output_size(h, w)
    k = approx_bits
    low = (1 << k) - 1
    entries = torch.arange(1 << (2 * k), dtype=torch.int64)
    a_lo, b_lo = entries >> k, entries & low
    if table is None:  # no approximate cells: exact addition, zero error
        table = torch.zeros(1, dtype=torch.int64)
    delta = (table.to(torch.int64)[: 1 << (2 * k)] - a_lo - b_lo).to(torch.int32)  # carry in 0: first half
    x_int = xq.to(torch.int64)
    values, _ = _padded(x_int.to(torch.int32), geom, 0, torch.int32)
    lows, _ = _padded(((-x_int) & low).to(torch.int32), geom, 0, torch.int32)
    w_int = wq.reshape(o, -1).to(torch.int64)
    wv = w_int.to(torch.int32).contiguous()
    wlo = ((w_int & low) << k).to(torch.int32).contiguous()
    image_h, image_w = h + 2 * geom.padding[0], w + 2 * geom.padding[1]
    out = torch.empty(n, o, ho, wo, dtype=torch.float64)
    lib.cell_small_forward(_ptr(values), _ptr(lows), _ptr(wv), _ptr(wlo), _ptr(delta), _ptr(out),
                           *_ints(n, c, image_h, image_w, o), *_geometry_args(geom, ho, wo), ctypes.c_int(width),
                           ctypes.c_int(torch.get_num_threads()))
    return out


def table_backward(index, table, grad_out, geom, pad_index):
    """Compiled table backward: (input gradient shaped like index, (K, V, O) tables), see adder_ops."""
    lib = load()
    n, c, h, w = index.shape
    k, v, o = table.shape
    ho, wo = geom.output_size(h, w)
    flat, image = _padded(index, geom, pad_index, torch.int32)
    tab = _padded_table(table)
    width = tab.shape[2]
    g = _grad_rows(grad_out, width)
    grad_x = torch.empty(n, c, h, w, dtype=torch.float32)
    threads = max(1, min(torch.get_num_threads(), n))
    hbuf = torch.zeros(threads, k, v, width, dtype=torch.float32)
    lib.table_backward_f32(_ptr(flat), _ptr(tab), _ptr(g), _ptr(grad_x), _ptr(hbuf),
                           *_ints(n, c, image.shape[2], image.shape[3], v, width),
                           *_geometry_args(geom, ho, wo), *_ints(*geom.padding, h, w), ctypes.c_int(threads))
    return grad_x, hbuf.sum(0)[..., :o]
