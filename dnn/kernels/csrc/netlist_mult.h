/* Fused product sums over a two-operand multiplier netlist: out[m, o] = sum_k P(x[m, k], w[o, k]) (torch
 * reference: dnn.arith.netlist_multiplier.product_sums_torch).
 *
 * dnn/kernels/netlist_native.py writes a translation unit that includes netlist_vec.h, defines NL_WA and NL_WB (the
 * activation and weight operand widths), NL_OUT (product bits read) and NL_SIGNED (1: the product is read as a
 * two's-complement NL_OUT-bit number), then
 *     static inline void nl_circuit(const nlv *restrict in, nlv *restrict out)
 * (inputs: the NL_WA activation bits, then the NL_WB weight bits, LSB first), then includes this file. Lanes are
 * rows m: per tile of NL_GROUP rows each column k is bit-sliced once, each weight bit is a broadcast word, and the
 * products are summed in a bit-sliced accumulator (two's complement when signed), left once per tile and filter.
 */
#include <omp.h>

/* x (M, K) activation patterns (uint32); wplanes (O, K, NL_WB) words 0 or ~0; out (M, O) int64; acc_bits: planes
 * of the accumulator (sum of K products, plus a sign plane when signed). */
void nl_mult_forward(const uint32_t *x, const uint64_t *wplanes, int64_t *out, long M, long K, int O, int acc_bits,
                     int threads) {
    const long tiles = (M + NL_GROUP - 1) / NL_GROUP;
#pragma omp parallel num_threads(threads)
    {
        nlv *xplanes = (nlv *)aligned_alloc(sizeof(nlv), sizeof(nlv) * K * NL_WA);
        nlv rows[64], acc[64], in[NL_WA + NL_WB], y[NL_OUT];
#pragma omp for schedule(dynamic, 1)
        for (long tile = 0; tile < tiles; tile++) {
            const long first = tile * NL_GROUP;
            for (long k = 0; k < K; k++) {
                for (int t = 0; t < 64; t++)
                    for (int l = 0; l < NL_LANES; l++) {
                        const long m = first + t * NL_LANES + l;
                        rows[t][l] = m < M ? x[m * K + k] : 0;
                    }
                nl_transpose(rows);
                memcpy(xplanes + k * NL_WA, rows, sizeof(nlv) * NL_WA);
            }
            for (int o = 0; o < O; o++) {
                memset(acc, 0, sizeof acc);
                const uint64_t *wo = wplanes + (long)o * K * NL_WB;
                for (long k = 0; k < K; k++) {
                    for (int i = 0; i < NL_WA; i++) in[i] = xplanes[k * NL_WA + i];
                    for (int i = 0; i < NL_WB; i++) in[NL_WA + i] = NLV_ZERO + wo[k * NL_WB + i];
                    nl_circuit(in, y);
#if NL_SIGNED
                    /* add the sign-extended product: above NL_OUT every plane of the value is the sign plane */
                    const nlv s = y[NL_OUT - 1];
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
#if NL_SIGNED
                for (int i = acc_bits; i < 64; i++) acc[i] = acc[acc_bits - 1]; /* sign-extend to 64 bits */
#endif
                nl_transpose(acc);
                for (int q = 0; q < NL_GROUP && first + q < M; q++)
                    out[(first + q) * O + o] = (int64_t)acc[q / NL_LANES][q % NL_LANES];
            }
        }
        free(xplanes);
    }
}
