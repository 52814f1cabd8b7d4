/* Fused grad="diff" backward of the adder layer over a two-operand adder netlist (torch reference:
 * dnn.arith.netlist_adder.NetlistAdder.diff_backward). Included after netlist_layer.h, which supplies nl_circuit.
 *
 * For every pair (x, w) of every output pixel, with c = -x: d = C(w, c) and the shrink-rule windowed slopes
 * G_w = (C(w1, c) + C(w0, c) - C(w_0, c) - C(w_1, c)) / den_w and G_c likewise along c (the four neighbours and the
 * divisor come from the caller for w, and are computed here per lane for c); the numerators are summed bit-sliced,
 * then d and both numerators leave the bit domain in one transpose (three when 3n + 4 > 64). Then, in real units
 * dr = d * step: grad_w[o, k] += g * (-dr * G_w) and grad_cols[n, k, p] += g * (clamp(dr, -1, 1) * G_c), each
 * divisor taken out of its sum (den_w is one per weight, den_c one per pixel and tap), so results differ from the
 * per-pair torch reference by float32 rounding only.
 */
#define NL_NUM (NL_BITS + 2) /* planes of a numerator: four signed n-bit values summed */

/* acc (NL_NUM planes, two's complement) += or -= y (NL_BITS planes read as signed). */
static inline void nl_signed_add(nlv *acc, const nlv *y, int subtract) {
    const nlv flip = subtract ? NLV_ONES : NLV_ZERO;
    nlv carry = flip;
    for (int i = 0; i < NL_NUM; i++) {
        const nlv v = (i < NL_BITS ? y[i] : y[NL_BITS - 1]) ^ flip, a = acc[i];
        acc[i] = nl_xor3(a, v, carry);
        carry = nl_maj(a, v, carry);
    }
}

/* The four neighbours (as n-bit patterns) and the divisor of the shrink-rule slope at value v of [-qmax, qmax]. */
static inline float nl_window(int64_t v, int qmax, int hw, uint64_t mask, uint64_t nb[4]) {
    const int64_t size = 2 * (int64_t)qmax + 1;
    /* beyond the domain (float32 quantization of 26+ bit operands can round qmax up): slope of the edge */
    const int64_t j = v + qmax < 0 ? 0 : v + qmax > size - 1 ? size - 1 : v + qmax;
    int64_t up1, up0, dn0, dn1, den;
    if (j == 0) {
        up1 = up0 = 1, dn0 = dn1 = 0, den = 2;
    } else if (j == size - 1) {
        up1 = up0 = size - 1, dn0 = dn1 = size - 2, den = 2;
    } else {
        int64_t h = j - 1 < size - 2 - j ? j - 1 : size - 2 - j;
        if (h > hw) h = hw;
        up1 = j + h + 1, up0 = j + h, dn0 = j - h, dn1 = j - h - 1, den = 2 * (2 * h + 1);
    }
    nb[0] = (uint64_t)(up1 - qmax) & mask, nb[1] = (uint64_t)(up0 - qmax) & mask;
    nb[2] = (uint64_t)(dn0 - qmax) & mask, nb[3] = (uint64_t)(dn1 - qmax) & mask;
    return (float)den;
}

typedef float nlf __attribute__((vector_size(4 * NL_LANES)));
typedef int64_t nlvs __attribute__((vector_size(8 * NL_LANES)));
#define NLF_ZERO ((nlf){0})

typedef int32_t nlfi __attribute__((vector_size(4 * NL_LANES)));

static inline nlf nl_loadf(const float *p) { nlf v; memcpy(&v, p, sizeof v); return v; }
static inline nlf nl_select(nlfi m, nlf a, nlf b) { return (nlf)(((nlfi)a & m) | ((nlfi)b & ~m)); }

/* The signed field [off, off + bits) of every lane's packed word, as floats. */
static inline nlf nl_field_float(nlv word, int off, int bits) {
    const nlvs v = (nlvs)(word << (64 - off - bits)) >> (64 - bits);
    return __builtin_convertvector(v, nlf);
}

/* bp, geometry: as nl_adder_forward. wplanes (O, K, NL_BITS) and wnplanes (O, K, 4, NL_BITS): 0/~0 words of w and
 * of its neighbours w1, w0, w_0, w_1; denw (O, K). g (N, O, Ho, Wo); grad_cols (N, K, Ho*Wo) zeroed by the caller;
 * grad_w (threads, O, K) doubles zeroed by the caller, one slice per thread. */
void nl_adder_diff_backward(const uint32_t *bp, const uint64_t *wplanes, const uint64_t *wnplanes, const float *denw,
                            const float *g, float *grad_cols, double *grad_w, int N, int C, int Hp, int Wp, int O,
                            int kh, int kw, int sh, int sw, int dh, int dw, int Ho, int Wo, int qmax, int hw,
                            float step, int threads) {
    const long K = (long)C * kh * kw, HW = (long)Ho * Wo, P = (long)N * HW;
    const long tiles = (P + NL_GROUP - 1) / NL_GROUP;
    const uint64_t mask = NL_BITS >= 64 ? ~0ull : (1ull << NL_BITS) - 1;
    const int packed = 3 * NL_BITS + 4 <= 64;
    long *taps = (long *)malloc(sizeof(long) * K);
    for (long k = 0; k < K; k++) {
        const long c = k / (kh * kw), i = (k / kw) % kh, j = k % kw;
        taps[k] = (c * Hp + i * dh) * Wp + j * dw;
    }
#pragma omp parallel num_threads(threads)
    {
        double *gw = grad_w + (long)omp_get_thread_num() * O * K;
        long base[NL_GROUP], gofs[NL_GROUP], cofs[NL_GROUP];
        float denc[NL_GROUP];
        nlf gacc[64];
        float *gt = (float *)malloc(sizeof(float) * (long)O * NL_GROUP);
        uint64_t nb[4][NL_GROUP];
        nlv rows[64], rows2[64], rows3[64], cpl[5][NL_BITS], in[2 * NL_BITS], y[NL_BITS], d[NL_BITS];
        nlv numw[NL_NUM], numc[NL_NUM];
#pragma omp for schedule(dynamic, 1)
        for (long tile = 0; tile < tiles; tile++) {
            const long first = tile * NL_GROUP;
            for (int q = 0; q < NL_GROUP; q++) {
                const long p = first + q;
                if (p >= P) { base[q] = -1; continue; }
                const long n = p / HW, r = p % HW, oh = r / Wo, ow = r % Wo;
                base[q] = n * C * Hp * Wp + oh * sh * Wp + ow * sw;
                gofs[q] = n * O * HW + r;
                cofs[q] = n * K * HW + r;
            }
            for (int o = 0; o < O; o++) /* the tile's output gradient, lane order; 0 on lanes past the end */
                for (int q = 0; q < NL_GROUP; q++)
                    gt[(long)o * NL_GROUP + q] = base[q] < 0 ? 0.0f : g[gofs[q] + (long)o * HW];
            for (long k = 0; k < K; k++) {
                for (int q = 0; q < NL_GROUP; q++) {
                    const uint64_t pat = base[q] < 0 ? 0 : bp[base[q] + taps[k]];
                    const int64_t v = (int64_t)(pat << (64 - NL_BITS)) >> (64 - NL_BITS);
                    uint64_t four[4];
                    denc[q] = nl_window(v, qmax, hw, mask, four);
                    for (int t = 0; t < 4; t++) nb[t][q] = four[t];
                    rows[q / NL_LANES][q % NL_LANES] = pat;
                }
                memset(gacc, 0, sizeof gacc);
                nl_transpose(rows);
                memcpy(cpl[0], rows, sizeof(nlv) * NL_BITS);
                for (int t = 0; t < 4; t++) {
                    for (int q = 0; q < NL_GROUP; q++) rows[q / NL_LANES][q % NL_LANES] = nb[t][q];
                    nl_transpose(rows);
                    memcpy(cpl[t + 1], rows, sizeof(nlv) * NL_BITS);
                }
                for (int o = 0; o < O; o++) {
                    const uint64_t *wo = wplanes + ((long)o * K + k) * NL_BITS;
                    const uint64_t *wn = wnplanes + ((long)o * K + k) * 4 * NL_BITS;
                    for (int i = 0; i < NL_BITS; i++) in[i] = NLV_ZERO + wo[i], in[NL_BITS + i] = cpl[0][i];
                    nl_circuit(in, d);
                    memset(numw, 0, sizeof numw);
                    memset(numc, 0, sizeof numc);
                    for (int t = 0; t < 4; t++) { /* C(w_t, c): w neighbours */
                        for (int i = 0; i < NL_BITS; i++) in[i] = NLV_ZERO + wn[t * NL_BITS + i];
                        nl_circuit(in, y);
                        nl_signed_add(numw, y, t >= 2);
                    }
                    for (int i = 0; i < NL_BITS; i++) in[i] = NLV_ZERO + wo[i];
                    for (int t = 0; t < 4; t++) { /* C(w, c_t): c neighbours */
                        for (int i = 0; i < NL_BITS; i++) in[NL_BITS + i] = cpl[t + 1][i];
                        nl_circuit(in, y);
                        nl_signed_add(numc, y, t >= 2);
                    }
                    int off_w = NL_BITS, off_c = 2 * NL_BITS + 2;
                    memset(rows, 0, sizeof rows);
                    memcpy(rows, d, sizeof d);
                    if (packed) {
                        memcpy(rows + NL_BITS, numw, sizeof numw);
                        memcpy(rows + 2 * NL_BITS + 2, numc, sizeof numc);
                    } else {
                        memset(rows2, 0, sizeof rows2);
                        memset(rows3, 0, sizeof rows3);
                        memcpy(rows2, numw, sizeof numw);
                        memcpy(rows3, numc, sizeof numc);
                        nl_transpose(rows2);
                        nl_transpose(rows3);
                        off_w = off_c = 0;
                    }
                    nl_transpose(rows);
                    const nlv *rw = packed ? rows : rows2, *rc = packed ? rows : rows3;
                    const float *go = gt + (long)o * NL_GROUP;
                    const nlf one = NLF_ZERO + 1.0f;
                    nlf wsum = NLF_ZERO;
                    /* the divisors are constant along o (den_c) or over the tile (den_w): divided out once, below */
                    for (int t = 0; t < 64; t++) { /* lanes t * NL_LANES .. + NL_LANES - 1, as vectors */
                        const nlf dr = nl_field_float(rows[t], 0, NL_BITS) * step;
                        const nlf gv = nl_loadf(go + t * NL_LANES);
                        const nlf clamped = nl_select(dr > one, one, nl_select(dr < -one, -one, dr));
                        wsum += gv * (-dr * nl_field_float(rw[t], off_w, NL_NUM));
                        gacc[t] += gv * (clamped * nl_field_float(rc[t], off_c, NL_NUM));
                    }
                    float wtotal = 0.0f;
                    for (int l = 0; l < NL_LANES; l++) wtotal += wsum[l];
                    gw[(long)o * K + k] += wtotal / denw[(long)o * K + k];
                }
                for (int q = 0; q < NL_GROUP; q++)
                    if (base[q] >= 0) grad_cols[cofs[q] + k * HW] = gacc[q / NL_LANES][q % NL_LANES] / denc[q];
            }
        }
        free(gt);
    }
    free(taps);
}
