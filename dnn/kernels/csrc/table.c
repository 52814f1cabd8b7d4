/* Table (LUT) AdderNet layer: sum of table rows and both table gradients (torch references in
 * dnn/kernels/adder_ops.py). Kernels work on tiles of output pixels one input channel at a time, so the channel's
 * tables (kh*kw*V*Op floats) stay in L2 while a tile's accumulators stay in L1/L2. */
#include "vec.h"

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
