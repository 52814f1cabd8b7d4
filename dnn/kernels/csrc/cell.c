/* Ripple-of-cells adder layer: per-pair sums of |add(w, -x)| over each patch (torch reference in
 * dnn/arith/cell_adder.py). */
#include "vec.h"

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
