/* Fused AdderNet layer over a two-operand adder netlist: sum over each patch of |C(w, -x)| (torch reference:
 * dnn.arith.netlist_adder.adder_sums_torch).
 *
 * dnn/kernels/netlist_native.py writes a translation unit that includes netlist_vec.h, defines NL_BITS (operand
 * width n) and the circuit as
 *     static inline void nl_circuit_wx(const uint64_t *wbits, const nlv *xpl, nlv *out)
 * (inputs: the n bits of the first operand w as 0/~0 words to broadcast, then the n planes of the second, -x, LSB
 * first; outputs: the n low sum bits), then includes this file. Lanes are output pixels: per tile of NL_GROUP pixels the -x patterns of every tap are
 * gathered and bit-sliced once, each weight bit is a broadcast all-0/all-1 word, and |d| = (d ^ s) + s (s the sign
 * plane) is added into a bit-sliced accumulator with the sign as carry-in, so the tile leaves the bit domain once
 * per filter, not once per pair.
 */
#include <omp.h>

#define NL_FILTERS 4 /* filters accumulated together per pass over a tile's taps */

/* One tap of one filter: acc += |C(w, -x)| with w's bits `wbits` (0/~0 words) and the tap's planes of -x. */
static inline __attribute__((always_inline)) void nl_tap(nlv *acc, const uint64_t *wbits, const nlv *xpl,
                                                         int acc_bits) {
    nlv y[NL_BITS];
    nl_circuit_wx(wbits, xpl, y); /* no input array: the circuit reads w's words and -x's planes where they are */
    const nlv s = y[NL_BITS - 1];
    for (int i = 0; i < NL_BITS - 1; i++) y[i] ^= s;
    nl_accumulate(acc, y, s, NL_BITS - 1, acc_bits);
}

/* The kernels' operands from the quantized (integer-valued float) tensors in one pass each: bp (N, C, H + 2 ph,
 * W + 2 pw) the n-bit patterns of -x, zero on the padding; wplanes (O, K, NL_BITS) 0/~0 words of w's bits. */
void nl_adder_prepare(const float *xq, const float *wq, uint32_t *bp, uint64_t *wplanes, int N, int C, int H, int W,
                      int ph, int pw, int O, long K, int threads) {
    const int Hp = H + 2 * ph, Wp = W + 2 * pw;
    const uint64_t mask = NL_BITS >= 64 ? ~0ull : (1ull << NL_BITS) - 1;
#pragma omp parallel num_threads(threads)
    {
#pragma omp for schedule(static)
        for (long t = 0; t < (long)N * C; t++) {
            uint32_t *dst = bp + t * Hp * Wp;
            const float *src = xq + t * H * W;
            memset(dst, 0, sizeof(uint32_t) * ph * Wp);
            memset(dst + (long)(ph + H) * Wp, 0, sizeof(uint32_t) * ph * Wp);
            for (int h = 0; h < H; h++) {
                uint32_t *row = dst + (long)(h + ph) * Wp;
                for (int j = 0; j < pw; j++) row[j] = row[pw + W + j] = 0;
                for (int w = 0; w < W; w++) row[pw + w] = (uint32_t)((uint64_t)(-(int64_t)src[(long)h * W + w]) & mask);
            }
        }
#pragma omp for schedule(static)
        for (long e = 0; e < (long)O * K; e++) {
            const uint64_t v = (uint64_t)(int64_t)wq[e] & mask;
            for (int i = 0; i < NL_BITS; i++) wplanes[e * NL_BITS + i] = 0 - ((v >> i) & 1);
        }
    }
}

/* bp: padded image of -x patterns (N, C, Hp, Wp), uint32; wplanes (O, K, NL_BITS) words 0 or ~0 (bit i of w[o, k]);
 * out (N, O, Ho, Wo) int64; acc_bits: planes of the accumulator (enough for K * 2^(n-1)). */
void nl_adder_forward(const uint32_t *bp, const uint64_t *wplanes, int64_t *out, int N, int C, int Hp, int Wp,
                      int O, int kh, int kw, int sh, int sw, int dh, int dw, int Ho, int Wo, int acc_bits,
                      int threads) {
    const long K = (long)C * kh * kw, HW = (long)Ho * Wo, P = (long)N * HW;
    const long tiles = (P + NL_GROUP - 1) / NL_GROUP;
    long *taps = (long *)malloc(sizeof(long) * K);
    for (long k = 0; k < K; k++) {
        const long c = k / (kh * kw), i = (k / kw) % kh, j = k % kw;
        taps[k] = (c * Hp + i * dh) * Wp + j * dw;
    }
#pragma omp parallel num_threads(threads)
    {
        nlv *xplanes = (nlv *)aligned_alloc(sizeof(nlv), sizeof(nlv) * K * NL_BITS);
        long base[NL_GROUP], obase[NL_GROUP];
        int run[64];
        nlv rows[64], acc[NL_FILTERS][64];
#pragma omp for schedule(dynamic, 1)
        for (long tile = 0; tile < tiles; tile++) {
            const long first = tile * NL_GROUP;
            nl_tile_bases(first, P, HW, Wo, (long)C * Hp * Wp, Wp, sh, sw, base, run);
            for (int q = 0; q < NL_GROUP && first + q < P; q++) /* the pixel's place in filter 0's output plane */
                obase[q] = (first + q) / HW * O * HW + (first + q) % HW;
            for (long k = 0; k < K; k++) {
                nl_gather_rows(bp + taps[k], base, run, rows);
                nl_transpose_narrow(rows, NL_BITS); /* n-bit patterns: the high planes are zero */
                memcpy(xplanes + k * NL_BITS, rows, sizeof(nlv) * NL_BITS);
            }
            for (int o = 0; o < O; o += NL_FILTERS) { /* several filters per pass: each tap's planes loaded once */
                const int nf = O - o < NL_FILTERS ? O - o : NL_FILTERS;
                memset(acc, 0, sizeof(nlv) * 64 * nf);
                const uint64_t *wo = wplanes + (long)o * K * NL_BITS;
                for (long k = 0; k < K; k++)
                    for (int f = 0; f < nf; f++)
                        nl_tap(acc[f], wo + (f * K + k) * NL_BITS, xplanes + k * NL_BITS, acc_bits);
                for (int f = 0; f < nf; f++) {
                    nl_transpose(acc[f]);
                    int64_t *dst = out + (long)(o + f) * HW;
                    for (int q = 0; q < NL_GROUP && first + q < P; q++)
                        dst[obase[q]] = (int64_t)acc[f][q / NL_LANES][q % NL_LANES];
                }
            }
        }
        free(xplanes);
    }
    free(taps);
}
