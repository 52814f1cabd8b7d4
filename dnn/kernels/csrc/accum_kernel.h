/* Approximate accumulation through an adder circuit, bit-sliced: the fixed harness around one generated circuit.
 *
 * dnn/kernels/accum_native.py writes a translation unit that includes accum_types.h, defines ACC_BITS (the
 * accumulator width n_acc), ACC_TB (a power of two >= the bits a term needs) and
 *     static inline void acc_circuit(const accv *a, const accv *b, accv *out)
 * (a: the running value's ACC_BITS planes, b: the new term's ACC_BITS planes, out: the low ACC_BITS output
 * planes), then includes this file, which exports
 *   acc_indexed  out[m, o] = ACC over k of pair[widx[o, k] * vx + cols_t[k, m]]   (sequential or pairwise tree)
 * A term is a table entry, so term generation (|d| of the layer's subtraction, or a product) is one gather.
 * Outputs are kept bit-sliced across all K steps: 64 * ACC_LANES outputs per plane; the terms of one step are
 * gathered into 64 rows (row t, lane j: output t * ACC_LANES + j) and transposed into planes. Terms have at most
 * ACC_TB bits, so the transpose skips the stages that would only move zeros. Results leave the bit domain once per
 * output, read unsigned or (sign = 1) as ACC_BITS-bit two's complement.
 */
#include <stdlib.h>
#include <string.h>

#define ACC_GROUP (64 * ACC_LANES) /* outputs per plane */
#define ACC_OB 8                   /* filters per work item: one gathered index row serves all of them */
#define ACC_LIVE (ACC_TB < ACC_BITS ? ACC_TB : ACC_BITS)

static const uint64_t acc_masks[6] = {0x5555555555555555ull, 0x3333333333333333ull, 0x0F0F0F0F0F0F0F0Full,
                                      0x00FF00FF00FF00FFull, 0x0000FFFF0000FFFFull, 0x00000000FFFFFFFFull};

static inline int acc_log2(int j) { return __builtin_ctz(j); }

/* In place, every lane: afterwards bit r of row c is what bit c of row r was, for rows holding values below
 * 2^ACC_TB (rows >= ACC_TB come out zero and are not touched). Stages j >= ACC_TB only fold zero halves together:
 * x[k] |= x[k + j] << j. */
static inline void acc_transpose_terms(accv x[64]) {
#pragma GCC unroll 64
    for (int j = 32; j >= ACC_TB; j >>= 1) {
#pragma GCC unroll 32
        for (int k = 0; k < j; k++) x[k] |= x[k + j] << j;
    }
#pragma GCC unroll 6
    for (int j = (ACC_TB > 64 ? 64 : ACC_TB) / 2; j >= 1; j >>= 1) {
        const accv m = ACCV_ZERO + acc_masks[acc_log2(j)];
#pragma GCC unroll 32
        for (int k = 0; k < ACC_TB && k < 64; k = ((k | j) + 1) & ~j) {
            const accv t = ((x[k] >> j) ^ x[k + j]) & m;
            x[k + j] ^= t;
            x[k] ^= t << j;
        }
    }
}

/* The full 64 x 64 transpose (planes back to one word per output). */
static inline void acc_transpose_full(accv x[64]) {
    for (int j = 32; j >= 1; j >>= 1) {
        const accv m = ACCV_ZERO + acc_masks[acc_log2(j)];
        for (int k = 0; k < 64; k = ((k | j) + 1) & ~j) {
            const accv t = ((x[k] >> j) ^ x[k + j]) & m;
            x[k + j] ^= t;
            x[k] ^= t << j;
        }
    }
}

/* rows (as 64 * ACC_LANES words) <- the terms prow[idx[g]] of the group's outputs, then bit planes. */
static inline void acc_term_planes(accv rows[64], const uint32_t *restrict prow, const int32_t *restrict idx) {
    uint64_t *restrict flat = (uint64_t *)rows;
    for (int g = 0; g < ACC_GROUP; g++) flat[g] = prow[idx[g]];
    acc_transpose_terms(rows);
}

/* acc <- C(acc, term) where term's planes are rows[0 .. ACC_LIVE - 1] (higher planes zero). */
static inline void acc_step(accv *restrict acc, const accv *restrict rows) {
    accv b[ACC_BITS], y[ACC_BITS];
#pragma GCC unroll 64
    for (int i = 0; i < ACC_BITS; i++) b[i] = i < ACC_LIVE ? rows[i] : ACCV_ZERO;
    acc_circuit(acc, b, y);
    memcpy(acc, y, sizeof y);
}

/* Write the ACC_BITS planes of one filter's accumulators as integers: out[(m0 + g) * o + col] for g < count. */
static void acc_store(const accv *acc, int64_t *out, int64_t m0, int64_t count, int64_t o, int64_t col, int sign) {
    accv rows[64];
    for (int i = 0; i < 64; i++) rows[i] = i < ACC_BITS ? acc[i] : ACCV_ZERO;
    acc_transpose_full(rows);
    const uint64_t *flat = (const uint64_t *)rows;
    const int shift = 64 - ACC_BITS;
    for (int64_t g = 0; g < count; g++) {
        uint64_t v = flat[g];
        out[(m0 + g) * o + col] = (sign && shift > 0) ? ((int64_t)(v << shift)) >> shift : (int64_t)v;
    }
}

/* Load the index row of tap kk for outputs m0 .. m0 + count - 1; the rest of the group reads index 0. */
static inline void acc_load_index(int32_t *idx, const int32_t *cols_t, int64_t m, int64_t m0, int64_t count,
                                  int64_t kk) {
    memcpy(idx, cols_t + kk * m + m0, (size_t)count * sizeof(int32_t));
}

static void acc_sequential_item(const int32_t *cols_t, int64_t m, int64_t k, const int32_t *widx, int64_t o,
                                const uint32_t *pair, int64_t vx, int64_t m0, int64_t count, int64_t o0,
                                int64_t ocount, int32_t *idx, accv *acc, int64_t *out, int sign) {
    accv rows[64];
    memset(acc, 0, sizeof(accv) * ACC_BITS * ACC_OB);
    for (int64_t kk = 0; kk < k; kk++) {
        acc_load_index(idx, cols_t, m, m0, count, kk);
        for (int64_t oo = 0; oo < ocount; oo++) {
            acc_term_planes(rows, pair + (int64_t)widx[(o0 + oo) * k + kk] * vx, idx);
            acc_step(acc + oo * ACC_BITS, rows);
        }
    }
    for (int64_t oo = 0; oo < ocount; oo++) acc_store(acc + oo * ACC_BITS, out, m0, count, o, o0 + oo, sign);
}

static void acc_tree_item(const int32_t *cols_t, int64_t m, int64_t k, const int32_t *widx, int64_t o,
                          const uint32_t *pair, int64_t vx, int64_t m0, int64_t count, int64_t o0, int64_t ocount,
                          int32_t *idx, accv *store, int64_t *out, int sign) {
    accv rows[64], y[ACC_BITS];
    for (int64_t oo = 0; oo < ocount; oo++) {
        for (int64_t kk = 0; kk < k; kk++) {
            acc_load_index(idx, cols_t, m, m0, count, kk);
            acc_term_planes(rows, pair + (int64_t)widx[(o0 + oo) * k + kk] * vx, idx);
            for (int i = 0; i < ACC_BITS; i++) store[kk * ACC_BITS + i] = i < ACC_LIVE ? rows[i] : ACCV_ZERO;
        }
        for (int64_t n = k; n > 1; n = (n + 1) / 2) { /* one level: adjacent pairs, an odd last term moves up */
            for (int64_t i = 0; i < n / 2; i++) {
                acc_circuit(store + 2 * i * ACC_BITS, store + (2 * i + 1) * ACC_BITS, y);
                memcpy(store + i * ACC_BITS, y, sizeof y);
            }
            if (n & 1) memmove(store + (n / 2) * ACC_BITS, store + (n - 1) * ACC_BITS, sizeof y);
        }
        acc_store(store, out, m0, count, o, o0 + oo, sign);
    }
}

/* out (m x o, int64) = the accumulated terms; cols_t (k x m) activation indices, widx (o x k) weight indices,
 * pair (rows of vx uint32 term patterns, already reduced to ACC_BITS bits). tree: 0 sequential, 1 pairwise. */
void acc_indexed(const int32_t *cols_t, int64_t m, int64_t k, const int32_t *widx, int64_t o, const uint32_t *pair,
                 int64_t vx, int tree, int sign, int64_t *out, int threads) {
    const int64_t tiles = (m + ACC_GROUP - 1) / ACC_GROUP, oblocks = (o + ACC_OB - 1) / ACC_OB;
#pragma omp parallel num_threads(threads)
    {
        int32_t *idx = aligned_alloc(64, ACC_GROUP * sizeof(int32_t));
        const size_t planes = tree ? (size_t)k * ACC_BITS : (size_t)ACC_OB * ACC_BITS;
        accv *buf = aligned_alloc(64, planes * sizeof(accv));
#pragma omp for schedule(dynamic)
        for (int64_t item = 0; item < tiles * oblocks; item++) {
            const int64_t m0 = (item / oblocks) * ACC_GROUP, o0 = (item % oblocks) * ACC_OB;
            const int64_t count = m - m0 < ACC_GROUP ? m - m0 : ACC_GROUP;
            const int64_t ocount = o - o0 < ACC_OB ? o - o0 : ACC_OB;
            memset(idx, 0, ACC_GROUP * sizeof(int32_t));
            if (tree)
                acc_tree_item(cols_t, m, k, widx, o, pair, vx, m0, count, o0, ocount, idx, buf, out, sign);
            else
                acc_sequential_item(cols_t, m, k, widx, o, pair, vx, m0, count, o0, ocount, idx, buf, out, sign);
        }
        free(idx);
        free(buf);
    }
}
