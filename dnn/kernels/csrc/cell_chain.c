/* Ripple-of-cells adder layer on word arithmetic: per-pair sums of |add(w, -x)| over each patch for cells whose carry
 * is monotone in the carry in (torch reference `chain_add` in dnn/arith/cell_adder.py).
 *
 * Such a chain is c[i+1] = g_i | (p_i & c_i) with g = cout(a, b, 0) included in p = cout(a, b, 1), so all carries come
 * out of one addition: c = (P + G) ^ P ^ G. The sum bits are s = S0 ^ (c & D), S0 the sum at carry in 0 and
 * D = S0 ^ (sum at carry in 1); with S = S0 ^ (D & (P ^ G)) this is s = S ^ (D & (P + G)). Every one of G, P, S, D is a
 * bit function of (a_i, b_i), and a (the weight) is fixed per (filter, tap), so each is Y ^ (b & Z) with two words per
 * weight (Y = f(a, 0), Z = f(a, 1) ^ f(a, 0)): 8 words per (filter, tap), made once per call. Where g + p = (its value
 * at b = 0) + b in every bit (the exact carry: g = ab, p = a | b), P + G = A + b with A = Yg + Yp, one addition.
 * Patterns are shifted up by 32 - width, so the sign bit of the width-bit result is bit 31 (no sign extension) and each
 * |s| is |d| << shift. */
#include "vec.h"

typedef uint32_t vu16 __attribute__((vector_size(64)));
typedef int32_t vs16 __attribute__((vector_size(64)));
typedef uint64_t vq16 __attribute__((vector_size(128)));

#define CHAIN_FB 4     /* filters per pass (dnn/kernels/native.py CHAIN_FILTERS) */
#define CHAIN_NQ 2     /* vectors of 16 output pixels per pass */
#define CHAIN_GROUP 255 /* taps between flushes of the 32-bit accumulators */

static inline vu16 usplat(uint32_t a) { return (vu16){0} + a; }

static inline vu16 urow(const uint32_t *p, int step, int lanes) {
    vu16 v;
    if (step == 1) {
        memcpy(&v, p, sizeof v);  /* may read past the row: those lanes are dropped (the image has slack) */
        return v;
    }
    v = usplat(0);
    for (int t = 0; t < lanes; t++) v[t] = p[(long)t * step];
    return v;
}

#if defined(__AVX512F__)
/* y ^ (b & z) and |s| as single instructions (vpternlogd, vpabsd) */
static inline vu16 andxor(vu16 y, vu16 b, vu16 z) {
    return (vu16)_mm512_ternarylogic_epi32((__m512i)y, (__m512i)b, (__m512i)z, 0x78);
}
static inline vu16 uabs(vu16 s) { return (vu16)_mm512_abs_epi32((__m512i)s); }
#else
static inline vu16 andxor(vu16 y, vu16 b, vu16 z) { return y ^ (b & z); }
static inline vu16 uabs(vu16 s) {
    const vs16 m = (vs16)s >> 31;
    return (vu16)(((vs16)s ^ m) - m);
}
#endif
/* hi + (v >> 24): one vpdpbusd where AVX512-VNNI is there (the unsigned top byte of each lane times 1) */
#if defined(__AVX512VNNI__)
static inline vu16 add_top(vu16 hi, vu16 v) {
    return (vu16)_mm512_dpbusd_epi32((__m512i)hi, (__m512i)v, _mm512_set1_epi32(0x01000000));
}
#else
static inline vu16 add_top(vu16 hi, vu16 v) { return hi + (v >> 24); }
#endif

/* Sums of at most CHAIN_GROUP values v < 2^32: lo = sum v mod 2^32, hi = sum (v >> 24), so
 * sum v = (hi << 24) + ((lo - (hi << 24)) mod 2^32), the second term being sum (v & 0xFFFFFF) < 2^32. */
static inline void flush(vq16 *total, vu16 *lo, vu16 *hi) {
    const vq16 high = __builtin_convertvector(*hi, vq16) << 24;
    *total += high + __builtin_convertvector(*lo - (*hi << 24), vq16);
    *lo = *hi = usplat(0);
}

static inline __attribute__((always_inline)) void chain_block(const uint32_t *bp, const uint32_t *wt, double *out,
                                                              int n, int oh, int ob, int C, int Hp, int Wp, int O,
                                                              int kh, int kw, int sh, int sw, int dh, int dw, int Ho,
                                                              int Wo, int shift, const int DCONST, const int SUM) {
    const long K = (long)C * kh * kw;
    for (int ow0 = 0; ow0 < Wo; ow0 += 16 * CHAIN_NQ) {
        vu16 lo[CHAIN_FB][CHAIN_NQ], hi[CHAIN_FB][CHAIN_NQ];
        vq16 total[CHAIN_FB][CHAIN_NQ];
        for (int f = 0; f < CHAIN_FB; f++)
            for (int u = 0; u < CHAIN_NQ; u++) {
                lo[f][u] = hi[f][u] = usplat(0);
                total[f][u] = (vq16){0};
            }
        const uint32_t *w = wt + (long)ob * K * CHAIN_FB * 8;
        int left = CHAIN_GROUP;
        for (int c = 0; c < C; c++)
            for (int i = 0; i < kh; i++) {
                const uint32_t *xrow = bp + (((long)n * C + c) * Hp + (long)oh * sh + (long)i * dh) * Wp
                                       + (long)ow0 * sw;
                for (int j = 0; j < kw; j++, w += CHAIN_FB * 8) {
                    vu16 b[CHAIN_NQ];
                    for (int u = 0; u < CHAIN_NQ; u++) {
                        const int lanes = Wo - ow0 - 16 * u;
                        b[u] = urow(xrow + (long)j * dw + (long)16 * u * sw, sw, lanes < 16 ? lanes : 16);
                    }
                    for (int f = 0; f < CHAIN_FB; f++) {
                        const uint32_t *q = w + f * 8;
                        const vu16 yg = usplat(q[0]), zg = usplat(q[1]), yp = usplat(q[2]), zp = usplat(q[3]);
                        const vu16 ys = usplat(q[4]), zs = usplat(q[5]), yd = usplat(q[6]), zd = usplat(q[7]);
                        for (int u = 0; u < CHAIN_NQ; u++) {
                            const vu16 t = SUM ? yg + b[u] : andxor(yg, b[u], zg) + andxor(yp, b[u], zp);
                            const vu16 d = DCONST ? yd : andxor(yd, b[u], zd);
                            const vu16 v = uabs(andxor(andxor(ys, b[u], zs), d, t));
                            lo[f][u] += v;
                            hi[f][u] = add_top(hi[f][u], v);
                        }
                    }
                    if (--left == 0) {
                        for (int f = 0; f < CHAIN_FB; f++)
                            for (int u = 0; u < CHAIN_NQ; u++) flush(&total[f][u], &lo[f][u], &hi[f][u]);
                        left = CHAIN_GROUP;
                    }
                }
            }
        for (int f = 0; f < CHAIN_FB && ob * CHAIN_FB + f < O; f++) {
            double *dst = out + (((long)n * O + ob * CHAIN_FB + f) * Ho + oh) * Wo + ow0;
            for (int u = 0; u < CHAIN_NQ; u++) flush(&total[f][u], &lo[f][u], &hi[f][u]);
            for (int l = 0; l < 16 * CHAIN_NQ && ow0 + l < Wo; l++)
                dst[l] = (double)(total[f][l / 16][l % 16] >> shift);
        }
    }
}

/* out[n,o,oh,ow] = sum over the patch of |d|, d = the width-bit chain sum of a = w and b = -x read as signed.
 * xp: the padded input values (zero padding, with slack), overwritten by the b patterns (-x) << shift.
 * wq: (O, K) weight values; masks: for g, p, s, d in turn the words M00 M01 M10 M11 (bit i of M_ab: the function at
 * (a, b) in cell i); wt: room for ceil(O / CHAIN_FB) * K * CHAIN_FB * 8 words. mode: 1 = D does not depend on b,
 * 2 = g + p rises by exactly 1 with b in every bit (P + G = A + b). out is (N, O, Ho, Wo) float64. */
void cell_chain_forward(int32_t *xp, long image_len, const int32_t *wq, const uint32_t *masks, uint32_t *wt,
                        double *out, int N, int C, int Hp, int Wp, int O, int kh, int kw, int sh, int sw, int dh,
                        int dw, int Ho, int Wo, int shift, int mode, int threads) {
    const int OB = (O + CHAIN_FB - 1) / CHAIN_FB;
    const long K = (long)C * kh * kw, tasks = (long)N * Ho * OB;
    uint32_t *bp = (uint32_t *)xp;
#pragma omp parallel num_threads(threads)
    {
#pragma omp for schedule(static) nowait
        for (long e = 0; e < image_len; e++) bp[e] = (0u - (uint32_t)xp[e]) << shift;
#pragma omp for schedule(static)
        for (long e = 0; e < (long)OB * CHAIN_FB * K; e++) {  /* e = (o, k): filter o = ob * CHAIN_FB + f */
            const long o = e / K, k = e % K;
            uint32_t *q = wt + (((o / CHAIN_FB) * K + k) * CHAIN_FB + o % CHAIN_FB) * 8;
            const uint32_t a = o < O ? (uint32_t)wq[o * K + k] : 0;
            for (int fn = 0; fn < 4; fn++) {
                const uint32_t *m = masks + 4 * fn;
                q[2 * fn] = ((a & m[2]) | (~a & m[0])) << shift;
                q[2 * fn + 1] = ((a & (m[3] ^ m[2])) | (~a & (m[1] ^ m[0]))) << shift;
            }
            if (mode & 2) q[0] += q[2];  /* A = Yg + Yp */
        }
#pragma omp for schedule(dynamic, 4)
        for (long t = 0; t < tasks; t++) {
            const int ob = (int)(t % OB), oh = (int)((t / OB) % Ho), n = (int)(t / ((long)OB * Ho));
#define CHAIN_BLOCK(DCONST, SUM) \
    chain_block(bp, wt, out, n, oh, ob, C, Hp, Wp, O, kh, kw, sh, sw, dh, dw, Ho, Wo, shift, DCONST, SUM)
            switch (mode) {  /* one specialised loop per mode */
            case 0: CHAIN_BLOCK(0, 0); break;
            case 1: CHAIN_BLOCK(1, 0); break;
            case 2: CHAIN_BLOCK(0, 1); break;
            default: CHAIN_BLOCK(1, 1);
            }
#undef CHAIN_BLOCK
        }
    }
}
