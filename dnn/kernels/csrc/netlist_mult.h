/* Fused product sums over a two-operand multiplier netlist (torch reference:
 * dnn.arith.netlist_multiplier.product_sums_torch): a convolution read straight from the padded image
 * (`nl_mult_conv`) and the (M, K) matrix product (`nl_mult_forward`, the same kernel on a 1x1 "image" per row).
 *
 * dnn/kernels/netlist_native.py writes a translation unit that includes netlist_vec.h, defines NL_WA and NL_WB (the
 * activation and weight operand widths), NL_OUT (product bits read) and NL_SIGNED (1: the product is read as a
 * two's-complement NL_OUT-bit number), then the circuit as
 *     static inline void nl_circuit_xw(const uint64_t *weight_words, const nlv *activation_planes, nlv *out)
 * (inputs: the NL_WA activation planes, then the NL_WB weight bits as 0/~0 words, LSB first), then includes this
 * file. Lanes are
 * output pixels (rows m): per tile of NL_GROUP pixels each tap is loaded (one vector load per 64-pixel row when the
 * pixels lie side by side in the image) and bit-sliced once, into planes shared by every filter; each weight bit is
 * a broadcast word, and the products are summed in a bit-sliced accumulator (two's complement when signed), left
 * once per tile and filter. Work runs in two phases per chunk of tiles: bit-slice every (tile, group), then
 * evaluate every (tile, group, block of NL_FILTERS filters), so the threads share the work evenly.
 */
#include <omp.h>

#define NL_FILTERS 4        /* filters per work item */
#define NL_CHUNK_BYTES (32L << 20) /* bit-sliced planes held at once */
/* acc += the product y (NL_OUT planes), sign-extended when signed; acc has acc_bits planes. */
static inline __attribute__((always_inline)) void nl_mult_add(nlv *acc, const nlv *y, int acc_bits) {
#if NL_SIGNED
    const nlv s = y[NL_OUT - 1]; /* above NL_OUT every plane of the value is the sign plane */
    nlv carry = NLV_ZERO;
    for (int i = 0; i < acc_bits; i++) {
        const nlv v = i < NL_OUT ? y[i] : s, a = acc[i];
        acc[i] = nl_xor3(a, v, carry);
        carry = nl_maj(a, v, carry);
    }
#else
    nl_accumulate(acc, y, NLV_ZERO, NL_OUT, acc_bits);
#endif
}

/* acc[f] = sum_k P(x_k, w[f, k]) for f < nf: xplanes (K, NL_WA) planes of one tile, wf (nf, K, NL_WB) weight bit
 * words; left transposed, so acc[f][q / NL_LANES][q % NL_LANES] is pixel q's sum (an int64). */
static void nl_mult_block(const nlv *xplanes, const uint64_t *wf, long K, int nf, int acc_bits,
                          nlv acc[NL_FILTERS][64]) {
    nlv y[NL_OUT];
    memset(acc, 0, sizeof(nlv) * 64 * nf);
    for (long k = 0; k < K; k++)
        for (int f = 0; f < nf; f++) { /* the circuit reads the weight's words and the tap's planes in place */
            nl_circuit_xw(wf + (f * K + k) * NL_WB, xplanes + k * NL_WA, y);
            nl_mult_add(acc[f], y, acc_bits);
        }
    for (int f = 0; f < nf; f++) {
#if NL_SIGNED
        for (int i = acc_bits; i < 64; i++) acc[f][i] = acc[f][acc_bits - 1]; /* sign-extend to 64 bits */
#endif
        nl_transpose(acc[f]);
    }
}

typedef struct {
    const uint32_t *xp; /* padded image of activation patterns (N, G * C, Hp, Wp) */
    long N, P, HW, K, image;
    int C, Hp, Wp, Wo, sh, sw;
    const long *taps; /* offset of each of the K taps from a pixel's base, within a group's channels */
} nl_mult_geom;

/* The tile's planes (K, NL_WA) of group `grp`, and (sums != NULL) each pixel's sum of patterns over its patch. */
static void nl_mult_gather(const nl_mult_geom *g, long first, int grp, nlv *xplanes, nlv *sums) {
    long base[NL_GROUP];
    int run[64];
    nlv rows[64];
    nl_tile_bases(first, g->P, g->HW, g->Wo, g->image, g->Wp, g->sh, g->sw, base, run);
    const uint32_t *xg = g->xp + (long)grp * g->C * g->Hp * g->Wp;
    if (sums) memset(sums, 0, sizeof(nlv) * 64);
    for (long k = 0; k < g->K; k++) {
        nl_gather_rows(xg + g->taps[k], base, run, rows);
        if (sums)
            for (int t = 0; t < 64; t++) sums[t] += rows[t];
        nl_transpose_narrow(rows, NL_WA);
        memcpy(xplanes + k * NL_WA, rows, sizeof(nlv) * NL_WA);
    }
}

/* xp: padded image of activation patterns (N, G * C, Hp, Wp), uint32 below 2^NL_WA; wplanes (O, K,
 * NL_WB) words 0 or ~0, K = C * kh * kw, filter o in group o / (O / G). out (N, O, Ho, Wo): int64 sums S, or
 * (out_double) doubles (S + corr[o] - zw[o] * X) * scale[o], X the pixel's sum of patterns over its patch (zw
 * NULL: no X term; corr or scale NULL: 0 or 1). acc_bits: planes of the accumulator (sum of K products, plus a
 * sign plane when signed). */
void nl_mult_conv(const uint32_t *xp, const uint64_t *wplanes, void *out, int out_double, const int64_t *corr,
                  const int64_t *zw, const double *scale, long N, int C, int Hp, int Wp, int O, int G, int kh, int kw,
                  int sh, int sw, int dh, int dw, int Ho, int Wo, int acc_bits, int threads) {
    const long K = (long)C * kh * kw, HW = (long)Ho * Wo, P = N * HW;
    const long tiles = (P + NL_GROUP - 1) / NL_GROUP;
    const int Og = O / G, blocks = (Og + NL_FILTERS - 1) / NL_FILTERS;
    long *taps = (long *)malloc(sizeof(long) * K);
    for (long k = 0; k < K; k++) {
        const long c = k / (kh * kw), i = (k / kw) % kh, j = k % kw;
        taps[k] = (c * Hp + i * dh) * Wp + j * dw;
    }
    const nl_mult_geom geom = {xp, N, P, HW, K, (long)G * C * Hp * Wp, C, Hp, Wp, Wo, sh, sw, taps};
    const long per_tile = K * NL_WA * (long)sizeof(nlv) + (zw ? 64 * (long)sizeof(nlv) : 0);
    long chunk = NL_CHUNK_BYTES / (per_tile * G);
    chunk = chunk < 1 ? 1 : chunk > tiles ? tiles : chunk;
    nlv *planes = (nlv *)aligned_alloc(sizeof(nlv), (size_t)(chunk * G * per_tile));
    for (long t0 = 0; t0 < tiles; t0 += chunk) {
        const long nt = tiles - t0 < chunk ? tiles - t0 : chunk;
#pragma omp parallel num_threads(threads)
        {
            nlv acc[NL_FILTERS][64];
#pragma omp for schedule(dynamic, 1)
            for (long item = 0; item < nt * G; item++) { /* phase 1: bit-slice each (tile, group) once */
                nlv *xpl = planes + item * (per_tile / (long)sizeof(nlv));
                nl_mult_gather(&geom, (t0 + item / G) * NL_GROUP, (int)(item % G), xpl, zw ? xpl + K * NL_WA : 0);
            }
#pragma omp for schedule(dynamic, 1)
            for (long item = 0; item < nt * G * blocks; item++) { /* phase 2: NL_FILTERS filters of one of them */
                const long tg = item / blocks, first = (t0 + tg / G) * NL_GROUP;
                const int grp = (int)(tg % G), o = grp * Og + (int)(item % blocks) * NL_FILTERS;
                const int nf = grp * Og + Og - o < NL_FILTERS ? grp * Og + Og - o : NL_FILTERS;
                const nlv *xpl = planes + tg * (per_tile / (long)sizeof(nlv));
                const nlv *sums = xpl + K * NL_WA;
                nl_mult_block(xpl, wplanes + (long)o * K * NL_WB, K, nf, acc_bits, acc);
                for (int q = 0; q < NL_GROUP && first + q < P; q++) {
                    const long p = first + q, n = p / HW, r = p % HW;
                    const long x_sum = zw ? (long)sums[q / NL_LANES][q % NL_LANES] : 0;
                    for (int f = 0; f < nf; f++) {
                        const long at = (n * O + o + f) * HW + r;
                        const int64_t s = (int64_t)acc[f][q / NL_LANES][q % NL_LANES];
                        if (!out_double) { ((int64_t *)out)[at] = s; continue; }
                        const int64_t inner = s + (corr ? corr[o + f] : 0) - (zw ? zw[o + f] * x_sum : 0);
                        ((double *)out)[at] = scale ? (double)inner * scale[o + f] : (double)inner;
                    }
                }
            }
        }
    }
    free(planes);
    free(taps);
}

/* x (M, K) activation patterns (uint32 below 2^NL_WA); wplanes (O, K, NL_WB) words 0 or ~0; out (M, O) int64 sums. */
void nl_mult_forward(const uint32_t *x, const uint64_t *wplanes, int64_t *out, long M, long K, int O, int acc_bits,
                     int threads) {
    /* row m is pixel m of a 1x1 image of K channels: its taps are x[m * K + k], its sums out[m * O + o] */
    nl_mult_conv(x, wplanes, out, 0, 0, 0, 0, M, (int)K, 1, 1, O, 1, 1, 1, 1, 1, 1, 1, 1, 1, acc_bits, threads);
}
