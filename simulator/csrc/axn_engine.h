/* Compiled netlist engine: the fixed harness around one generated circuit function.
 *
 * simulator/engine.py writes a translation unit that includes axn_types.h, defines AXN_N_IN, AXN_N_OUT and
 *     static inline void axn_circuit(const axv *restrict in, axv *restrict out)
 * (in: AXN_N_IN input planes, out: AXN_N_OUT output planes; every gate one vector operation in topological order),
 * and then includes this file, which adds the exported entry points:
 *   axn_planes        exhaustive output planes of a range of words (bit t of word w is pattern 64 w + t)
 *   axn_eval_planes   output planes from explicit input planes (random patterns, any number of inputs)
 *   axn_table         output word of every pattern in [start, start + n), in pattern order
 *   axn_eval_patterns output word per lane from the packed input pattern per lane (int64 arrays)
 *   axn_eval_operands the same from one integer array per operand (int32 or int64), packed inside the kernel
 * Patterns are sum(in_i << i) over the circuit's inputs; output words sum(out_k << k) (docs/ARCHITECTURE.md).
 * Per-lane entries move between words and bit planes with a 64 x 64 bit-matrix transpose done on AXN_LANES
 * matrices at once: lane j of row t is pattern base + t * AXN_LANES + j, so rows load and store contiguously.
 */
#include <stdlib.h>
#include <string.h>

#define AXN_GROUP (64 * AXN_LANES) /* patterns per circuit evaluation */
#define AXN_IN_ROWS (AXN_N_IN > 0 ? AXN_N_IN : 1)
#define AXN_OUT_ROWS (AXN_N_OUT > 0 ? AXN_N_OUT : 1)

#if AXN_LANES == 8
#define AXN_LANE_BITS 3
#else
#define AXN_LANE_BITS 2
#endif

/* Word of input i < 6 in exhaustive order: bit t is bit i of t. */
static const uint64_t axn_low_words[6] = {0xAAAAAAAAAAAAAAAAull, 0xCCCCCCCCCCCCCCCCull, 0xF0F0F0F0F0F0F0F0ull,
                                          0xFF00FF00FF00FF00ull, 0xFFFF0000FFFF0000ull, 0xFFFFFFFF00000000ull};

int axn_lanes(void) { return AXN_LANES; }
int axn_n_inputs(void) { return AXN_N_IN; }
int axn_n_outputs(void) { return AXN_N_OUT; }

static inline axv axn_load(const void *p) { axv v; memcpy(&v, p, sizeof v); return v; }
static inline void axn_store(void *p, axv v) { memcpy(p, &v, sizeof v); }
static inline axv axn_bit_mask(uint64_t value, int bit) { /* all ones when bit `bit` of value is set */
    return AXV_ZERO - (bit < 64 ? (value >> bit) & 1 : 0);
}

/* 64 x 64 bit transposes, in every lane: afterwards bit r of row c is what bit c of row r was. A transpose swaps
 * the row-index bit with the column-index bit for each of the six bit positions (off-diagonal blocks of size j
 * swapped, j = 32 .. 1); the six swaps commute, so they may run in either order, and the order is chosen so that
 * work on rows that are zero, or never read, is skipped:
 *   axn_transpose_in (patterns -> planes; only rows < keep are read afterwards): j descending, and stage j only
 *     for row pairs below keep rounded up to 2j (rows the remaining stages can move into rows < keep);
 *   axn_transpose_out (planes -> words; rows >= nonzero are zero): j ascending, and stage j only for row pairs
 *     below nonzero rounded up to 2j (the only rows the earlier stages can have made nonzero). */
static const uint64_t axn_swap_masks[6] = {0x5555555555555555ull, 0x3333333333333333ull, 0x0F0F0F0F0F0F0F0Full,
                                           0x00FF00FF00FF00FFull, 0x0000FFFF0000FFFFull, 0x00000000FFFFFFFFull};

static inline void axn_swap_stage(axv x[64], int j, const axv m, int rows) {
    for (int k = 0; k < rows; k = ((k | j) + 1) & ~j) {
        const axv t = ((x[k] >> j) ^ x[k + j]) & m;
        x[k + j] ^= t;
        x[k] ^= t << j;
    }
}

static inline int axn_round_up(int n, int to) { return (n + to - 1) / to * to; }

static __attribute__((noinline)) void axn_transpose_in(axv x[64], int keep) {
    for (int s = 5; s >= 0; s--) {
        const int j = 1 << s;
        axn_swap_stage(x, j, AXV_ZERO + axn_swap_masks[s], axn_round_up(keep, 2 * j));
    }
}

static __attribute__((noinline)) void axn_transpose_out(axv x[64], int nonzero) {
    for (int s = 0; s < 6; s++) {
        const int j = 1 << s;
        axn_swap_stage(x, j, AXV_ZERO + axn_swap_masks[s], axn_round_up(nonzero, 2 * j));
    }
}

/* Evaluate the circuit on 64 rows of packed patterns (row t, lane j: one pattern) and overwrite the rows with the
 * output words of those patterns. */
static inline void axn_rows(axv rows[64]) {
    axv y[AXN_OUT_ROWS];
    axn_transpose_in(rows, AXN_N_IN);
    axn_circuit(rows, y);
    for (int k = 0; k < AXN_N_OUT; k++) rows[k] = y[k];
    for (int k = AXN_N_OUT; k < 64; k++) rows[k] = AXV_ZERO;
    axn_transpose_out(rows, AXN_N_OUT);
}

/* Planes of the patterns base + t * AXN_LANES + j when base is a multiple of AXN_GROUP: no transpose needed. */
static inline void axn_group_inputs(uint64_t base, axv in[AXN_IN_ROWS]) {
    for (int i = 0; i < AXN_N_IN; i++) {
        if (i < AXN_LANE_BITS) {
            for (int j = 0; j < AXN_LANES; j++) in[i][j] = -(uint64_t)((j >> i) & 1);
        } else if (i < AXN_LANE_BITS + 6) {
            in[i] = AXV_ZERO + axn_low_words[i - AXN_LANE_BITS];
        } else {
            in[i] = axn_bit_mask(base, i);
        }
    }
}

static inline int axn_threads(int threads, int64_t groups) {
    if (threads < 1) threads = 1;
    return groups < threads ? (groups < 1 ? 1 : (int)groups) : threads;
}

void axn_planes(uint64_t start_word, int64_t words, uint64_t *out, int64_t stride) {
    axv in[AXN_IN_ROWS], y[AXN_OUT_ROWS];
    for (int i = 0; i < AXN_N_IN && i < 6; i++) in[i] = AXV_ZERO + axn_low_words[i];
    for (int64_t w0 = 0; w0 < words; w0 += AXN_LANES) {
        for (int i = 6; i < AXN_N_IN; i++)
            for (int j = 0; j < AXN_LANES; j++) in[i][j] = axn_bit_mask(start_word + w0 + j, i - 6)[0];
        axn_circuit(in, y);
        if (words - w0 >= AXN_LANES) {
            for (int k = 0; k < AXN_N_OUT; k++) axn_store(out + k * stride + w0, y[k]);
        } else {
            for (int k = 0; k < AXN_N_OUT; k++)
                for (int64_t j = 0; j < words - w0; j++) out[k * stride + w0 + j] = y[k][j];
        }
    }
}

void axn_eval_planes(const uint64_t *in_planes, int64_t in_stride, int64_t words, uint64_t *out, int64_t stride) {
    axv in[AXN_IN_ROWS], y[AXN_OUT_ROWS];
    for (int64_t w0 = 0; w0 < words; w0 += AXN_LANES) {
        const int64_t lanes = words - w0 < AXN_LANES ? words - w0 : AXN_LANES;
        for (int i = 0; i < AXN_N_IN; i++) {
            if (lanes == AXN_LANES) {
                in[i] = axn_load(in_planes + i * in_stride + w0);
            } else {
                in[i] = AXV_ZERO;
                for (int64_t j = 0; j < lanes; j++) in[i][j] = in_planes[i * in_stride + w0 + j];
            }
        }
        axn_circuit(in, y);
        for (int k = 0; k < AXN_N_OUT; k++)
            for (int64_t j = 0; j < lanes; j++) out[k * stride + w0 + j] = y[k][j];
    }
}

/* Store the first `count` patterns of evaluated rows (row t, lane j = pattern t * AXN_LANES + j). */
static inline void axn_store_rows(int64_t *dst, const axv rows[64], int64_t count) {
    if (count == AXN_GROUP) {
        for (int t = 0; t < 64; t++) axn_store(dst + t * AXN_LANES, rows[t]);
    } else {
        for (int64_t q = 0; q < count; q++) dst[q] = (int64_t)rows[q / AXN_LANES][q % AXN_LANES];
    }
}

void axn_table(uint64_t start, int64_t n, int64_t *out, int threads) {
    const int64_t groups = (n + AXN_GROUP - 1) / AXN_GROUP;
    const int aligned = start % AXN_GROUP == 0;
#pragma omp parallel for num_threads(axn_threads(threads, groups)) schedule(static)
    for (int64_t g = 0; g < groups; g++) {
        const uint64_t base = start + (uint64_t)g * AXN_GROUP;
        const int64_t count = n - g * AXN_GROUP < AXN_GROUP ? n - g * AXN_GROUP : AXN_GROUP;
        axv rows[64];
        if (aligned) {
            axv y[AXN_OUT_ROWS];
            axn_group_inputs(base, rows);
            axn_circuit(rows, y);
            for (int k = 0; k < AXN_N_OUT; k++) rows[k] = y[k];
            for (int k = AXN_N_OUT; k < 64; k++) rows[k] = AXV_ZERO;
            axn_transpose_out(rows, AXN_N_OUT);
        } else {
            for (int t = 0; t < 64; t++)
                for (int j = 0; j < AXN_LANES; j++) rows[t][j] = base + (uint64_t)(t * AXN_LANES + j);
            axn_rows(rows);
        }
        axn_store_rows(out + g * AXN_GROUP, rows, count);
    }
}

void axn_eval_patterns(const int64_t *patterns, int64_t n, int64_t *out, int threads) {
    const int64_t groups = (n + AXN_GROUP - 1) / AXN_GROUP;
    const uint64_t keep = AXN_N_IN >= 64 ? ~0ull : (1ull << AXN_N_IN) - 1;
#pragma omp parallel for num_threads(axn_threads(threads, groups)) schedule(static)
    for (int64_t g = 0; g < groups; g++) {
        const int64_t count = n - g * AXN_GROUP < AXN_GROUP ? n - g * AXN_GROUP : AXN_GROUP;
        const int64_t *src = patterns + g * AXN_GROUP;
        axv rows[64];
        if (count == AXN_GROUP) {
            for (int t = 0; t < 64; t++) rows[t] = axn_load(src + t * AXN_LANES) & keep;
        } else {
            for (int64_t q = 0; q < AXN_GROUP; q++)
                rows[q / AXN_LANES][q % AXN_LANES] = q < count ? (uint64_t)src[q] & keep : 0;
        }
        axn_rows(rows);
        axn_store_rows(out + g * AXN_GROUP, rows, count);
    }
}

typedef int32_t axn_i32x __attribute__((vector_size(4 * AXN_LANES)));

/* Lanes q .. q + AXN_LANES - 1 of an int32 (size 4) or int64 (size 8) array, as 64-bit words. */
static inline axv axn_load_operand(const void *p, int size, int64_t q) {
    if (size == 4) {
        axn_i32x v;
        memcpy(&v, (const int32_t *)p + q, sizeof v);
        return (axv)__builtin_convertvector(v, axvs);
    }
    return axn_load((const int64_t *)p + q);
}

static inline uint64_t axn_operand_at(const void *p, int size, int64_t q) {
    return size == 4 ? (uint64_t)(int64_t)((const int32_t *)p)[q] : (uint64_t)((const int64_t *)p)[q];
}

/* ops[k] points to n integers of `sizes[k]` bytes (4 or 8); operand k fills inputs offset_k .. offset_k + widths[k]
 * - 1 (offsets are the running sum of the widths), taking the low widths[k] bits of each value (two's complement
 * for negative values). */
void axn_eval_operands(int n_ops, const void *const *ops, const int *sizes, const int *widths, int64_t n,
                       int64_t *out, int threads) {
    const int64_t groups = (n + AXN_GROUP - 1) / AXN_GROUP;
    uint64_t mask[64];
    int shift[64];
    for (int k = 0, off = 0; k < n_ops && k < 64; off += widths[k], k++) {
        mask[k] = widths[k] >= 64 ? ~0ull : (1ull << widths[k]) - 1;
        shift[k] = off;
    }
#pragma omp parallel for num_threads(axn_threads(threads, groups)) schedule(static)
    for (int64_t g = 0; g < groups; g++) {
        const int64_t first = g * AXN_GROUP;
        const int64_t count = n - first < AXN_GROUP ? n - first : AXN_GROUP;
        axv rows[64];
        if (count == AXN_GROUP) {
            for (int t = 0; t < 64; t++) {
                axv v = AXV_ZERO;
                for (int k = 0; k < n_ops; k++)
                    v |= (axn_load_operand(ops[k], sizes[k], first + t * AXN_LANES) & mask[k]) << shift[k];
                rows[t] = v;
            }
        } else {
            for (int64_t q = 0; q < AXN_GROUP; q++) {
                uint64_t v = 0;
                for (int k = 0; q < count && k < n_ops; k++)
                    v |= (axn_operand_at(ops[k], sizes[k], first + q) & mask[k]) << shift[k];
                rows[q / AXN_LANES][q % AXN_LANES] = v;
            }
        }
        axn_rows(rows);
        axn_store_rows(out + first, rows, count);
    }
}
