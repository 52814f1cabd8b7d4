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

/* The lanes of one pass: output pixels p0 .. p0 + 16 * CHAIN_NQ - 1 of an image in (oh, ow) order, so short rows
 * waste no lanes. off: each lane's input offset from the tap's position in the plane (0 past the last pixel: read and
 * dropped); along an output row the lanes of a vector read consecutive inputs when sw = 1, one masked load per run. */
typedef struct {
    int off[16 * CHAIN_NQ], runs[CHAIN_NQ], run_off[CHAIN_NQ][17];
    uint16_t run_mask[CHAIN_NQ][17];
} chain_lanes;

static void chain_lanes_of(chain_lanes *L, long p0, long P, int Wo, int sh, int sw, int Wp) {
    int oh = (int)(p0 / Wo), ow = (int)(p0 % Wo);
    for (int u = 0; u < CHAIN_NQ; u++) {
        L->runs[u] = 0;
        L->run_mask[u][0] = 0;
        for (int t = 0; t < 16; t++, ow++) {
            if (ow == Wo) ow = 0, oh++;
            const long p = p0 + 16 * u + t;
            const int off = oh * sh * Wp + ow * sw;
            L->off[16 * u + t] = p < P ? off : 0;
            if (p >= P) continue;
            if (t == 0 || ow == 0) {  /* a new run: its load starts t lanes before its first input */
                L->run_off[u][L->runs[u]] = off - t;
                L->run_mask[u][L->runs[u]++] = 0;
            }
            L->run_mask[u][L->runs[u] - 1] |= (uint16_t)(1u << t);
        }
    }
}

static inline vu16 chain_load(const uint32_t *base, const chain_lanes *L, int u, int sw) {
#if defined(__AVX512F__)
    if (sw == 1) {  /* masked loads touch only their lanes' inputs */
        if (L->run_mask[u][0] == 0xFFFF) return (vu16)_mm512_loadu_si512(base + L->run_off[u][0]);
        __m512i v = _mm512_setzero_si512();
        for (int r = 0; r < L->runs[u]; r++)
            v = _mm512_mask_loadu_epi32(v, L->run_mask[u][r], base + L->run_off[u][r]);
        return (vu16)v;
    }
#endif
    vu16 v;
    for (int t = 0; t < 16; t++) v[t] = base[L->off[16 * u + t]];
    return v;
}

static inline void chain_clear(vu16 lo[CHAIN_FB][CHAIN_NQ], vu16 hi[CHAIN_FB][CHAIN_NQ],
                               vq16 total[CHAIN_FB][CHAIN_NQ]) {
    for (int f = 0; f < CHAIN_FB; f++)
        for (int u = 0; u < CHAIN_NQ; u++) {
            lo[f][u] = hi[f][u] = usplat(0);
            total[f][u] = (vq16){0};
        }
}

/* One tap for CHAIN_FB filters: each filter's 8 words w[8f ..] (y, z of g, p, s and d, each y ^ (b & z)) against the
 * lanes' -x patterns b; |d| goes into the split 32-bit sums, flushed into the 64-bit totals every CHAIN_GROUP taps. */
static inline __attribute__((always_inline)) void chain_tap(const uint32_t *w, const vu16 b[CHAIN_NQ],
                                                            vu16 lo[CHAIN_FB][CHAIN_NQ], vu16 hi[CHAIN_FB][CHAIN_NQ],
                                                            vq16 total[CHAIN_FB][CHAIN_NQ], int *left,
                                                            const int DCONST, const int SUM) {
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
    if (--*left == 0) {
        for (int f = 0; f < CHAIN_FB; f++)
            for (int u = 0; u < CHAIN_NQ; u++) flush(&total[f][u], &lo[f][u], &hi[f][u]);
        *left = CHAIN_GROUP;
    }
}

/* Flush the filter block's sums and write `count` pixels from `start` of each plane (n, filter) of out (N, O, P). */
static inline void chain_store(vq16 total[CHAIN_FB][CHAIN_NQ], vu16 lo[CHAIN_FB][CHAIN_NQ],
                               vu16 hi[CHAIN_FB][CHAIN_NQ], double *out, int n, int ob, int O, long P, long start,
                               long count, int shift) {
    if (count > 16 * CHAIN_NQ) count = 16 * CHAIN_NQ;
    for (int f = 0; f < CHAIN_FB && ob * CHAIN_FB + f < O; f++) {
        double *dst = out + ((long)n * O + ob * CHAIN_FB + f) * P + start;
        for (int u = 0; u < CHAIN_NQ; u++) flush(&total[f][u], &lo[f][u], &hi[f][u]);
        for (long l = 0; l < count; l++) dst[l] = (double)(total[f][l / 16][l % 16] >> shift);
    }
}

/* One output row (n, oh) for filters ob * CHAIN_FB ..: passes of 16 * CHAIN_NQ consecutive pixels, plain loads. */
static inline __attribute__((always_inline)) void chain_rows(const uint32_t *bp, const uint32_t *wt, double *out,
                                                             int n, int oh, int ob, int C, int Hp, int Wp, int O,
                                                             int kh, int kw, int sh, int sw, int dh, int dw, int Ho,
                                                             int Wo, int shift, const int DCONST, const int SUM) {
    const long K = (long)C * kh * kw;
    for (int ow0 = 0; ow0 < Wo; ow0 += 16 * CHAIN_NQ) {
        vu16 lo[CHAIN_FB][CHAIN_NQ], hi[CHAIN_FB][CHAIN_NQ];
        vq16 total[CHAIN_FB][CHAIN_NQ];
        chain_clear(lo, hi, total);
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
                    chain_tap(w, b, lo, hi, total, &left, DCONST, SUM);
                }
            }
        chain_store(total, lo, hi, out, n, ob, O, (long)Ho * Wo, (long)oh * Wo + ow0, Wo - ow0, shift);
    }
}

/* Pixels p0 .. of image n (any rows) for filters ob * CHAIN_FB ..: for short rows, which would leave lanes idle. */
static inline __attribute__((always_inline)) void chain_flat(const uint32_t *bp, const uint32_t *wt, double *out,
                                                             int n, long p0, int ob, int C, int Hp, int Wp, int O,
                                                             int kh, int kw, int sh, int sw, int dh, int dw, int Ho,
                                                             int Wo, int shift, const int DCONST, const int SUM) {
    const long K = (long)C * kh * kw, P = (long)Ho * Wo;
    chain_lanes L;
    chain_lanes_of(&L, p0, P, Wo, sh, sw, Wp);
    vu16 lo[CHAIN_FB][CHAIN_NQ], hi[CHAIN_FB][CHAIN_NQ];
    vq16 total[CHAIN_FB][CHAIN_NQ];
    chain_clear(lo, hi, total);
    const uint32_t *w = wt + (long)ob * K * CHAIN_FB * 8;
    int left = CHAIN_GROUP;
    for (int c = 0; c < C; c++)
        for (int i = 0; i < kh; i++) {
            const uint32_t *xrow = bp + (((long)n * C + c) * Hp + (long)i * dh) * Wp;
            for (int j = 0; j < kw; j++, w += CHAIN_FB * 8) {
                vu16 b[CHAIN_NQ];
                for (int u = 0; u < CHAIN_NQ; u++) b[u] = chain_load(xrow + (long)j * dw, &L, u, sw);
                chain_tap(w, b, lo, hi, total, &left, DCONST, SUM);
            }
        }
    chain_store(total, lo, hi, out, n, ob, O, P, p0, P - p0, shift);
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
    const long K = (long)C * kh * kw, PC = ((long)Ho * Wo + 16 * CHAIN_NQ - 1) / (16 * CHAIN_NQ);
    const int passes = (Wo + 16 * CHAIN_NQ - 1) / (16 * CHAIN_NQ);
    const int flat = 4 * Wo < 3 * 16 * CHAIN_NQ * passes;  /* rows would leave over a quarter of the lanes idle */
    const long tasks = flat ? N * PC * OB : (long)N * Ho * OB;
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
#define CHAIN_MODES(LAYOUT, AT) \
        switch (mode) {  /* one specialised loop per mode */ \
        case 0: LAYOUT(bp, wt, out, n, AT, ob, C, Hp, Wp, O, kh, kw, sh, sw, dh, dw, Ho, Wo, shift, 0, 0); break; \
        case 1: LAYOUT(bp, wt, out, n, AT, ob, C, Hp, Wp, O, kh, kw, sh, sw, dh, dw, Ho, Wo, shift, 1, 0); break; \
        case 2: LAYOUT(bp, wt, out, n, AT, ob, C, Hp, Wp, O, kh, kw, sh, sw, dh, dw, Ho, Wo, shift, 0, 1); break; \
        default: LAYOUT(bp, wt, out, n, AT, ob, C, Hp, Wp, O, kh, kw, sh, sw, dh, dw, Ho, Wo, shift, 1, 1); \
        }
        if (flat) {
#pragma omp for schedule(dynamic, 4)
            for (long t = 0; t < tasks; t++) {
                const int ob = (int)(t % OB), n = (int)(t / OB / PC);
                CHAIN_MODES(chain_flat, t / OB % PC * 16 * CHAIN_NQ)
            }
        } else {
#pragma omp for schedule(dynamic, 4)
            for (long t = 0; t < tasks; t++) {
                const int ob = (int)(t % OB), n = (int)(t / OB / Ho), oh = (int)(t / OB % Ho);
                CHAIN_MODES(chain_rows, oh)
            }
        }
#undef CHAIN_MODES
    }
}
