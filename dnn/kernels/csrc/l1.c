/* Exact AdderNet layer: forward -sum|x - w| and the HardTanh input gradient (torch references in
 * dnn/kernels/adder_ops.py). */
#include "vec.h"

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
