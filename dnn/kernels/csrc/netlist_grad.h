/* Fused grad="diff" backward of the adder layer over a two-operand adder netlist (torch reference:
 * dnn.arith.netlist_adder.NetlistAdder.diff_backward). Included after netlist_layer.h (nl_circuit_wx comes before both).
 *
 * For every pair (x, w) of every output pixel, with c = -x: d = C(w, c) and the shrink-rule windowed slopes
 * G_w = (C(w1, c) + C(w0, c) - C(w_0, c) - C(w_1, c)) / den_w and G_c likewise along c. The w neighbours and den_w
 * come from the caller (one set per weight); those of c are found per lane. When every lane of a tile's tap has the
 * full window (all but the values within hw + 1 of either end of the range), c's neighbours are c + hw + 1, c + hw,
 * c - hw, c - hw - 1 as patterns, added bit-sliced to c's planes; otherwise each neighbour is bit-transposed. The
 * numerators are summed in carry-save form, then d and both numerators leave the bit domain in one transpose
 * (three when 3n + 4 > 64). Then, in real units dr = d * step: grad_w[o, k] += g * (-dr * G_w) and
 * grad_cols[n, k, p] += g * (clamp(dr, -1, 1) * G_c), each divisor taken out of its sum (den_w is one per weight,
 * den_c one per pixel and tap), so results differ from the per-pair torch reference by float32 rounding only.
 * Finally the column gradients are folded back onto the input image.
 */
#define NL_NUM (NL_BITS + 2) /* planes of a numerator: four signed n-bit values summed */
#define NL_PACKED (3 * NL_BITS + 4 <= 64)

typedef float nlf __attribute__((vector_size(4 * NL_LANES)));
typedef int64_t nlvs __attribute__((vector_size(8 * NL_LANES)));
typedef int32_t nlfi __attribute__((vector_size(4 * NL_LANES)));
#define NLF_ZERO ((nlf){0})

static inline nlf nl_loadf(const float *p) { nlf v; memcpy(&v, p, sizeof v); return v; }
static inline void nl_storef(float *p, nlf v) { memcpy(p, &v, sizeof v); }
/* clamp(v, -1, 1) per lane */
#if defined(__AVX__)
#include <immintrin.h>
#endif
#if defined(__AVX512F__) && NL_LANES == 8
static inline nlf nl_clamp1(nlf v) {
    return (nlf)_mm256_min_ps(_mm256_max_ps((__m256)v, _mm256_set1_ps(-1.0f)), _mm256_set1_ps(1.0f));
}
#elif defined(__AVX__) && NL_LANES == 4
static inline nlf nl_clamp1(nlf v) {
    return (nlf)_mm_min_ps(_mm_max_ps((__m128)v, _mm_set1_ps(-1.0f)), _mm_set1_ps(1.0f));
}
#else
static inline nlf nl_select(nlfi m, nlf a, nlf b) { return (nlf)(((nlfi)a & m) | ((nlfi)b & ~m)); }
static inline nlf nl_clamp1(nlf v) {
    const nlf one = NLF_ZERO + 1.0f;
    return nl_select(v > one, one, nl_select(v < -one, -one, v));
}
#endif

/* The signed field [off, off + bits) of every lane's packed word, as floats. */
static inline nlf nl_field_float(nlv word, int off, int bits) {
    const nlvs v = (nlvs)(word << (64 - off - bits)) >> (64 - bits);
    return __builtin_convertvector(v, nlf);
}

/* num = y1 + y2 - y3 - y4 (NL_NUM planes, two's complement) of four signed NL_BITS-plane values: two carry-save
 * steps (-y = ~y + 1, the two 1s enter as the constant 2), then one ripple. Planes above NL_BITS - 1 of a
 * sign-extended value repeat its top plane, so their carry-save planes repeat too. */
static inline void nl_num4(nlv *num, const nlv *y1, const nlv *y2, const nlv *y3, const nlv *y4) {
    nlv s2[NL_NUM], c2[NL_NUM], c1prev = NLV_ZERO;
    for (int i = 0; i < NL_NUM; i++) {
        const int b = i < NL_BITS ? i : NL_BITS - 1;
        const nlv n3 = ~y3[b], n4 = ~y4[b];
        const nlv s1 = nl_xor3(y1[b], y2[b], n3), c1 = nl_maj(y1[b], y2[b], n3);
        s2[i] = nl_xor3(s1, c1prev, n4);
        c2[i] = nl_maj(s1, c1prev, n4);
        c1prev = c1;
    }
    /* num = s2 + (c2 << 1) + 2 */
    num[0] = s2[0];
    num[1] = ~(s2[1] ^ c2[0]);
    nlv carry = s2[1] | c2[0];
    for (int i = 2; i < NL_NUM; i++) {
        num[i] = nl_xor3(s2[i], c2[i - 1], carry);
        carry = nl_maj(s2[i], c2[i - 1], carry);
    }
}

/* out = a + k modulo 2^NL_BITS, bit-sliced, for a constant k. */
static inline void nl_add_const(nlv *out, const nlv *a, uint64_t k) {
    nlv carry = NLV_ZERO;
    for (int i = 0; i < NL_BITS; i++) {
        if ((k >> i) & 1) {
            out[i] = ~(a[i] ^ carry);
            carry = a[i] | carry;
        } else {
            out[i] = a[i] ^ carry;
            carry = a[i] & carry;
        }
    }
}

/* w's bits as 0/~0 words, the first operand of nl_circuit_wx. */
static inline void nl_bit_words(uint64_t *words, uint64_t w) {
    for (int i = 0; i < NL_BITS; i++) words[i] = 0 - ((w >> i) & 1);
}

/* bp, geometry: as nl_adder_forward. wv (O, K): patterns of w; wn (O, K, 4): patterns of its neighbours w1, w0,
 * w_0, w_1; denw (O, K). g (N, O, Ho, Wo). cols (N, K, Ho*Wo) scratch for the column gradients (every element is
 * written); gx (N, C, H, W) the input gradient (written); grad_w (threads, O, K) doubles zeroed by the caller, one
 * slice per thread. (ph, pw): the padding inside bp. need_x / need_w: 0 skips the circuits, sums and outputs of that
 * gradient (cols and gx, or grad_w, are then left as they were). */
void nl_adder_diff_backward(const uint32_t *bp, const uint32_t *wv, const uint32_t *wn, const float *denw,
                            const float *g, float *cols, float *gx, double *grad_w, int N, int C, int Hp, int Wp,
                            int O, int kh, int kw, int sh, int sw, int dh, int dw, int Ho, int Wo, int ph, int pw,
                            int qmax, int hw, float step, int need_x, int need_w, int threads) {
    const long K = (long)C * kh * kw, HW = (long)Ho * Wo, P = (long)N * HW;
    const long tiles = (P + NL_GROUP - 1) / NL_GROUP;
    const uint64_t mask = NL_BITS >= 64 ? ~0ull : (1ull << NL_BITS) - 1;
    const int64_t size = 2 * (int64_t)qmax + 1;
    long *taps = (long *)malloc(sizeof(long) * K);
    for (long k = 0; k < K; k++) {
        const long c = k / (kh * kw), i = (k / kw) % kh, j = k % kw;
        taps[k] = (c * Hp + i * dh) * Wp + j * dw;
    }
#pragma omp parallel num_threads(threads)
    {
        double *gw = grad_w + (long)omp_get_thread_num() * O * K;
        long base[NL_GROUP], gofs[NL_GROUP], cofs[NL_GROUP];
        int run[64];
        int32_t val[NL_GROUP], hq[NL_GROUP];
        int64_t jq[NL_GROUP]; /* a lane's clamped position on the axis, for its window */
        float denc[NL_GROUP];
        nlf gacc[64];
        float *gt = (float *)malloc(sizeof(float) * (long)O * NL_GROUP);
        nlv rows[64], rows2[64], rows3[64], cpl[5][NL_BITS], d[NL_BITS], y[4][NL_BITS];
        uint64_t words[5][NL_BITS];
        nlv numw[NL_NUM], numc[NL_NUM];
#pragma omp for schedule(dynamic, 1)
        for (long tile = 0; tile < tiles; tile++) {
            const long first = tile * NL_GROUP;
            nl_tile_bases(first, P, HW, Wo, (long)C * Hp * Wp, Wp, sh, sw, base, run);
            for (int q = 0; q < NL_GROUP && first + q < P; q++) {
                const long n = (first + q) / HW, r = (first + q) % HW;
                gofs[q] = n * O * HW + r;
                cofs[q] = n * K * HW + r;
            }
            for (int o = 0; o < O; o++) /* the tile's output gradient, lane order; 0 on lanes past the end */
                for (int q = 0; q < NL_GROUP; q++)
                    gt[(long)o * NL_GROUP + q] = base[q] < 0 ? 0.0f : g[gofs[q] + (long)o * HW];
            for (long k = 0; k < K; k++) {
                nl_gather_rows(bp + taps[k], base, run, rows);
                int64_t vmax = 0; /* the largest |value| of the tap over the tile */
                for (int q = 0; q < NL_GROUP; q++) {
                    const uint64_t pat = rows[q / NL_LANES][q % NL_LANES];
                    val[q] = (int32_t)((int64_t)(pat << (64 - NL_BITS)) >> (64 - NL_BITS));
                    const int64_t a = val[q] < 0 ? -(int64_t)val[q] : val[q];
                    vmax = a > vmax ? a : vmax;
                }
                /* interior: every lane has the full window (|v| <= qmax - hw - 1), so h = hw and den_c is one number */
                const int interior = vmax <= (int64_t)qmax - hw - 1;
                if (!interior) /* the window of each lane: j = position on the axis, h its half width, -1 at the ends
                                * (float32 quantization of 26+ bit operands can round qmax up: the edge's slope) */
                    for (int q = 0; q < NL_GROUP; q++) {
                        int64_t j = (int64_t)val[q] + qmax;
                        j = j < 0 ? 0 : j > size - 1 ? size - 1 : j;
                        jq[q] = j;
                        int64_t h = j - 1 < size - 2 - j ? j - 1 : size - 2 - j;
                        h = h > hw ? hw : h;
                        h = (j == 0 || j == size - 1) ? -1 : h;
                        hq[q] = (int32_t)h;
                        denc[q] = h < 0 ? 2.0f : (float)(2 * (2 * h + 1));
                    }
                memset(gacc, 0, sizeof gacc);
                nl_transpose_narrow(rows, NL_BITS);
                memcpy(cpl[0], rows, sizeof(nlv) * NL_BITS);
                if (!need_x) { /* no input gradient (say the first layer): c's neighbours are not needed */
                } else if (interior) { /* every lane has the full window: the neighbours are c plus constants */
                    nl_add_const(cpl[1], cpl[0], (uint64_t)(hw + 1) & mask);
                    nl_add_const(cpl[2], cpl[0], (uint64_t)hw & mask);
                    nl_add_const(cpl[3], cpl[0], (uint64_t)(-(int64_t)hw) & mask);
                    nl_add_const(cpl[4], cpl[0], (uint64_t)(-(int64_t)hw - 1) & mask);
                } else {
                    for (int t = 0; t < 4; t++) {
                        for (int q = 0; q < NL_GROUP; q++) {
                            const int64_t j = jq[q], h = hq[q];
                            int64_t pos;
                            if (h >= 0) pos = t == 0 ? j + h + 1 : t == 1 ? j + h : t == 2 ? j - h : j - h - 1;
                            else if (j == 0) pos = t < 2 ? 1 : 0;
                            else pos = t < 2 ? size - 1 : size - 2;
                            rows[q / NL_LANES][q % NL_LANES] = (uint64_t)(pos - qmax) & mask;
                        }
                        nl_transpose_narrow(rows, NL_BITS);
                        memcpy(cpl[t + 1], rows, sizeof(nlv) * NL_BITS);
                    }
                }
                for (int o = 0; o < O; o++) {
                    const uint32_t *wno = wn + ((long)o * K + k) * 4;
                    nl_bit_words(words[4], wv[(long)o * K + k]);
                    if (need_w) {
                        for (int t = 0; t < 4; t++) { /* C(w_t, c): w neighbours */
                            nl_bit_words(words[t], wno[t]);
                            nl_circuit_wx(words[t], cpl[0], y[t]);
                        }
                        nl_num4(numw, y[0], y[1], y[2], y[3]);
                    } else memset(numw, 0, sizeof numw);
                    nl_circuit_wx(words[4], cpl[0], d);
                    if (need_x) {
                        for (int t = 0; t < 4; t++) /* C(w, c_t): c neighbours */
                            nl_circuit_wx(words[4], cpl[t + 1], y[t]);
                        nl_num4(numc, y[0], y[1], y[2], y[3]);
                    } else memset(numc, 0, sizeof numc);
                    /* packed: numw at bits [0, n+2), numc at [n+2, 2n+4), d at the top n bits */
                    int off_w = 0, off_c = NL_NUM, off_d = 64 - NL_BITS;
                    const nlv *rw = rows, *rc = rows;
                    if (NL_PACKED) {
                        memcpy(rows, numw, sizeof numw);
                        memcpy(rows + NL_NUM, numc, sizeof numc);
                        for (int i = 2 * NL_NUM; i < 64 - NL_BITS; i++) rows[i] = NLV_ZERO;
                        memcpy(rows + 64 - NL_BITS, d, sizeof d);
                    } else {
                        memset(rows, 0, sizeof(nlv) * (64 - NL_BITS));
                        memcpy(rows + 64 - NL_BITS, d, sizeof d);
                        memcpy(rows2, numw, sizeof numw);
                        memset(rows2 + NL_NUM, 0, sizeof(nlv) * (64 - NL_NUM));
                        memcpy(rows3, numc, sizeof numc);
                        memset(rows3 + NL_NUM, 0, sizeof(nlv) * (64 - NL_NUM));
                        nl_transpose(rows2);
                        nl_transpose(rows3);
                        rw = rows2, rc = rows3, off_c = 0;
                    }
                    nl_transpose(rows);
                    const float *go = gt + (long)o * NL_GROUP;
                    nlf wsum = NLF_ZERO;
                    /* the divisors are constant along o (den_c) or over the tile (den_w): divided out once, below;
                     * so is the sign of -dr in the weight gradient */
                    for (int t = 0; t < 64; t++) { /* lanes t * NL_LANES .. + NL_LANES - 1, as vectors */
                        const nlf dr = __builtin_convertvector((nlvs)rows[t] >> off_d, nlf) * step;
                        const nlf gv = nl_loadf(go + t * NL_LANES);
                        if (need_w) wsum += gv * (dr * nl_field_float(rw[t], off_w, NL_NUM));
                        if (need_x) gacc[t] += gv * (nl_clamp1(dr) * nl_field_float(rc[t], off_c, NL_NUM));
                    }
                    float wtotal = 0.0f;
                    for (int l = 0; l < NL_LANES; l++) wtotal -= wsum[l];
                    gw[(long)o * K + k] += wtotal / denw[(long)o * K + k];
                }
                const float den_all = (float)(2 * (2 * hw + 1));
                for (int q = 0; q < NL_GROUP && need_x; q++)
                    if (base[q] >= 0)
                        cols[cofs[q] + k * HW] = gacc[q / NL_LANES][q % NL_LANES] / (interior ? den_all : denc[q]);
            }
        }
        free(gt);
        /* fold: gx[n, c, h, w] = sum of the column gradients of the taps that read input pixel (h, w) */
        const int H = Hp - 2 * ph, W = Wp - 2 * pw;
#pragma omp for schedule(static)
        for (long t = 0; t < (need_x ? (long)N * C : 0); t++) {
            const long n = t / C, c = t % C;
            float *plane = gx + t * H * W;
            memset(plane, 0, sizeof(float) * H * W);
            for (int i = 0; i < kh; i++)
                for (int j = 0; j < kw; j++) {
                    const float *src = cols + (n * K + (c * kh + i) * kw + j) * HW;
                    for (int oh = 0; oh < Ho; oh++) {
                        const int hh = oh * sh + i * dh - ph;
                        if (hh < 0 || hh >= H) continue;
                        for (int ow = 0; ow < Wo; ow++) {
                            const int ww = ow * sw + j * dw - pw;
                            if (ww >= 0 && ww < W) plane[(long)hh * W + ww] += src[(long)oh * Wo + ow];
                        }
                    }
                }
        }
    }
    free(taps);
}
