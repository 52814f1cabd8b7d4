/* Exact error metrics of one block of an exhaustive run, reduced in C right after a circuit's compiled table kernel
 * (simulator/csrc/axn_engine.h, axn_table) has produced the output words, so no plane or table leaves the cache.
 *
 * The sums are the ones lutgen/bitslice_metrics.py computes with numpy, which is the reference (the tests compare
 * both): with e = approx - exact per pattern of the block [start, start + n),
 *   count, n_err = #(e != 0), sum |e|, sum e, sum e^2 (exact, 128-bit), WCE = max |e|, n_rel = #(exact != 0),
 *   sum_rel and max_rel of |e| * (1 / |x|), x = the exact result (add, sub) or the first operand (mul, whose chunk
 *   total and maximum are then multiplied by 1 / |second operand|), in float64.
 * The float sums follow the reference operation for operation, so they are bit-identical to it: the block is cut
 * into chunks of `chunk` patterns (within a run of the first operand, so the second operand is fixed); a chunk
 * without errors is skipped; otherwise its products are summed with numpy's pairwise summation (np.sum of a
 * contiguous float64 array), that sum times the chunk's scale is added to the block's sum in pattern order, and
 * its maximum times the scale updates max_rel. Built with -ffp-contract=off, so no multiply-add is fused.
 * Patterns whose exact result does not fit `fit_bits`-bit two's complement (overflow exclusion) count as absent.
 * Operands: a = bits 0 .. wa-1 of the pattern, b = the next wb bits, an optional carry-in the bit after.
 * The caller guarantees |e| < 2^32 (so e^2 fits 64 bits) and that every index into `recip` is in range.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef void (*axm_table_fn)(uint64_t start, int64_t n, int64_t *out, int threads);

enum { AXM_ADD = 0, AXM_SUB = 1, AXM_MUL = 2 };
enum { P_REF, P_WA, P_WB, P_CARRY, P_SIGNED, P_NOUT, P_OUT_SIGNED, P_FIT_BITS, P_CHUNK, P_RECIP_LO, P_COUNT };
enum { R_COUNT, R_ERR, R_ABS_LO, R_ABS_HI, R_E_LO, R_E_HI, R_SQ_LO, R_SQ_HI, R_WCE, R_REL, R_SIZE };

typedef double axm_v8d __attribute__((vector_size(64)));
typedef int64_t axm_v8i __attribute__((vector_size(64)));

/* numpy's pairwise sum of float64 (loops_utils.h: 8 accumulators up to 128 elements, halves above); the eight
 * accumulators are the lanes of one vector, each lane adding the same elements in the same order. */
static double axm_pairwise(const double *a, int64_t n) {
    if (n < 8) {
        double res = 0.;
        for (int64_t i = 0; i < n; i++) res += a[i];
        return res;
    }
    if (n <= 128) {
        axm_v8d r, x;
        int64_t i;
        memcpy(&r, a, sizeof r);
        for (i = 8; i < n - (n % 8); i += 8) {
            memcpy(&x, a + i, sizeof x);
            r += x;
        }
        double res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for (; i < n; i++) res += a[i];
        return res;
    }
    int64_t n2 = n / 2;
    n2 -= n2 % 8;
    return axm_pairwise(a, n2) + axm_pairwise(a + n2, n - n2);
}

typedef struct {
    uint64_t count, n_err, sum_abs, wce, n_rel, sq_lo, sq_hi;
    int64_t sum_e;
} axm_sums;

static inline int64_t axm_field(uint64_t pattern, int shift, uint64_t mask, uint64_t sign) {
    const uint64_t raw = (pattern >> shift) & mask;
    return (int64_t)((raw ^ sign) - sign); /* sign = 0 reads unsigned, sign = top bit reads two's complement */
}

/* The pattern layout and reading of a block, from the parameter words p. */
typedef struct {
    int wa, wb;                  /* operand widths */
    uint64_t ma, mb, sa, sb, mc; /* their masks and sign bits (0: unsigned), the carry-in's mask */
    uint64_t so;                 /* the output's sign bit (0: unsigned) */
    int64_t half, lo;            /* exact results in [-half, half) fit the output; the reciprocal table's first index */
} axm_layout;

static inline axm_layout axm_layout_of(const int64_t *p) {
    axm_layout f;
    f.wa = (int)p[P_WA], f.wb = (int)p[P_WB];
    f.ma = (1ull << f.wa) - 1, f.mb = (1ull << f.wb) - 1;
    f.sa = p[P_SIGNED] ? 1ull << (f.wa - 1) : 0, f.sb = p[P_SIGNED] ? 1ull << (f.wb - 1) : 0;
    f.mc = p[P_CARRY] ? 1 : 0;
    f.so = p[P_OUT_SIGNED] ? 1ull << (p[P_NOUT] - 1) : 0;
    f.half = p[P_FIT_BITS] > 0 ? (int64_t)1 << (p[P_FIT_BITS] - 1) : INT64_MAX / 4;
    f.lo = p[P_RECIP_LO];
    return f;
}

/* Integer sums over `len` patterns from `first`, and the float products rel[q] = |e| * recip[x - recip_lo]. */
static inline __attribute__((always_inline)) void axm_values(const int ref, const int64_t *p, const double *recip,
                                                             uint64_t first, int64_t len, const int64_t *y,
                                                             double *rel, axm_sums *s) {
    const axm_layout f = axm_layout_of(p);
    uint64_t count = 0, n_err = 0, sum_abs = 0, wce = s->wce, n_rel = 0, sq_lo = 0, sq_hi = 0;
    int64_t sum_e = 0;
    for (int64_t q = 0; q < len; q++) {
        const uint64_t pat = first + (uint64_t)q;
        const int64_t a = axm_field(pat, 0, f.ma, f.sa), b = axm_field(pat, f.wa, f.mb, f.sb);
        const int64_t c = (int64_t)((pat >> (f.wa + f.wb)) & f.mc);
        const int64_t exact = ref == AXM_ADD ? a + b + c : ref == AXM_SUB ? a - b : a * b;
        const int64_t approx = (int64_t)(((uint64_t)y[q] ^ f.so) - f.so);
        const int fit = exact >= -f.half && exact < f.half;
        const int64_t e = fit ? approx - exact : 0;
        const uint64_t ae = (uint64_t)(e < 0 ? -e : e);
        const uint64_t sq = ae * ae;
        count += fit;
        n_err += e != 0;
        sum_abs += ae;
        sum_e += e;
        sq_lo += sq;
        sq_hi += sq_lo < sq;
        wce = ae > wce ? ae : wce;
        n_rel += fit && exact != 0;
        rel[q] = (double)ae * recip[(ref == AXM_MUL ? a : exact) - f.lo];
    }
    s->count += count;
    s->n_err += n_err;
    s->sum_abs += sum_abs;
    s->sum_e += sum_e;
    s->wce = wce;
    s->n_rel += n_rel;
    const uint64_t old = s->sq_lo;
    s->sq_lo += sq_lo;
    s->sq_hi += sq_hi + (s->sq_lo < old);
}

#if defined(__AVX512F__)
#define AXM_LANES 8
#else
#define AXM_LANES 4
#endif
typedef int64_t axm_vi __attribute__((vector_size(8 * AXM_LANES)));
typedef uint64_t axm_vu __attribute__((vector_size(8 * AXM_LANES)));
typedef double axm_vd __attribute__((vector_size(8 * AXM_LANES)));

/* axm_values on AXM_LANES patterns at a time (len a multiple of AXM_LANES, every vector inside one run of the
 * first operand, so its reciprocals are AXM_LANES consecutive table entries); same results, branch-free. */
static inline __attribute__((always_inline)) void axm_values_vec(const int ref, const int excl, const int64_t *p,
                                                                 const double *recip, uint64_t first, int64_t len,
                                                                 const int64_t *y, double *rel, axm_sums *s) {
    const axm_layout f = axm_layout_of(p);
    axm_vu iota;
    for (int j = 0; j < AXM_LANES; j++) iota[j] = (uint64_t)j;
    axm_vi count = {0}, n_err = {0}, sum_abs = {0}, sum_e = {0}, n_rel = {0}, wce = {0};
    axm_vu sq_lo = {0}, sq_hi = {0};
    for (int64_t q = 0; q < len; q += AXM_LANES) {
        const axm_vu pat = (first + (uint64_t)q) + iota;
        const axm_vi a = (axm_vi)(((pat & f.ma) ^ f.sa) - f.sa);
        const axm_vi b = (axm_vi)((((pat >> f.wa) & f.mb) ^ f.sb) - f.sb);
        const axm_vi c = (axm_vi)((pat >> (f.wa + f.wb)) & f.mc);
        const axm_vi exact = ref == AXM_ADD ? a + b + c : ref == AXM_SUB ? a - b : a * b;
        axm_vu raw;
        memcpy(&raw, y + q, sizeof raw);
        const axm_vi approx = (axm_vi)((raw ^ f.so) - f.so);
        const axm_vi fit = excl ? (exact >= -f.half) & (exact < f.half) : (axm_vi){0} - 1; /* -1 where counted */
        const axm_vi e = excl ? (approx - exact) & fit : approx - exact;
        const axm_vi neg = e >> 63;
        const axm_vi ae = (e ^ neg) - neg;
        const axm_vu sq = (axm_vu)ae * (axm_vu)ae;
        if (excl) count -= fit;
        n_err -= e != 0;
        sum_abs += ae;
        sum_e += e;
        sq_lo += sq;
        sq_hi -= (axm_vu)(sq_lo < sq);
        const axm_vi more = ae > wce;
        wce = (wce & ~more) | (ae & more);
        n_rel -= excl ? fit & (exact != 0) : exact != 0;
        axm_vd r;
        memcpy(&r, recip + ((ref == AXM_MUL ? a[0] : exact[0]) - f.lo), sizeof r);
        const axm_vd v = __builtin_convertvector(ae, axm_vd) * r;
        memcpy(rel + q, &v, sizeof v);
    }
    uint64_t lo_sum = 0, hi_sum = 0;
    if (!excl) s->count += (uint64_t)len;
    for (int j = 0; j < AXM_LANES; j++) {
        s->count += (uint64_t)count[j];
        s->n_err += (uint64_t)n_err[j];
        s->sum_abs += (uint64_t)sum_abs[j];
        s->sum_e += sum_e[j];
        s->n_rel += (uint64_t)n_rel[j];
        s->wce = (uint64_t)wce[j] > s->wce ? (uint64_t)wce[j] : s->wce;
        const uint64_t old = lo_sum;
        lo_sum += sq_lo[j];
        hi_sum += sq_hi[j] + (lo_sum < old);
    }
    const uint64_t old = s->sq_lo;
    s->sq_lo += lo_sum;
    s->sq_hi += hi_sum + (s->sq_lo < old);
}

static void axm_values_any(const int64_t *p, const double *recip, uint64_t first, int64_t len, const int64_t *y,
                           double *rel, axm_sums *s) {
    if (len % AXM_LANES == 0) {
        const int excl = p[P_FIT_BITS] > 0;
        switch ((int)p[P_REF] * 2 + excl) {
            case 2 * AXM_ADD: axm_values_vec(AXM_ADD, 0, p, recip, first, len, y, rel, s); return;
            case 2 * AXM_ADD + 1: axm_values_vec(AXM_ADD, 1, p, recip, first, len, y, rel, s); return;
            case 2 * AXM_SUB: axm_values_vec(AXM_SUB, 0, p, recip, first, len, y, rel, s); return;
            case 2 * AXM_SUB + 1: axm_values_vec(AXM_SUB, 1, p, recip, first, len, y, rel, s); return;
            default: axm_values_vec(AXM_MUL, 0, p, recip, first, len, y, rel, s); return;
        }
    }
    switch ((int)p[P_REF]) {
        case AXM_ADD: axm_values(AXM_ADD, p, recip, first, len, y, rel, s); break;
        case AXM_SUB: axm_values(AXM_SUB, p, recip, first, len, y, rel, s); break;
        default: axm_values(AXM_MUL, p, recip, first, len, y, rel, s); break;
    }
}

/* Largest of n > 0 non-negative doubles (exact whatever the order, so eight lanes at a time). */
static double axm_max(const double *a, int64_t n) {
    double peak = a[0];
    int64_t i = 0;
    if (n >= 8) {
        axm_v8d m, x;
        memcpy(&m, a, sizeof m);
        for (i = 8; i + 8 <= n; i += 8) {
            memcpy(&x, a + i, sizeof x);
            const axm_v8i more = x > m;
            m = (axm_v8d)(((axm_v8i)x & more) | ((axm_v8i)m & ~more));
        }
        for (int k = 0; k < 8; k++) peak = m[k] > peak ? m[k] : peak;
    }
    for (; i < n; i++) peak = a[i] > peak ? a[i] : peak;
    return peak;
}

/* Metrics sums of patterns [start, start + n) (n a multiple of p[P_CHUNK]); `table` writes their output words.
 * ires gets R_SIZE words (128-bit sums as lo, hi), fres the block's sum_rel and max_rel. Returns 0, or -1 when
 * out of memory. */
int axm_block(axm_table_fn table, const int64_t *p, const double *recip, uint64_t start, int64_t n, uint64_t *ires,
              double *fres) {
    const int64_t chunk = p[P_CHUNK];
    int64_t span = chunk > 4096 ? chunk : 4096; /* patterns per table call: whole chunks, a few cache-sized arrays */
    span = span < n ? span : n;
    int64_t *y = malloc(sizeof(int64_t) * span);
    double *rel = malloc(sizeof(double) * span);
    if (!y || !rel) {
        free(y);
        free(rel);
        return -1;
    }
    axm_sums total = {0};
    unsigned __int128 abs_total = 0, sq_total = 0;
    __int128 e_total = 0;
    double sum_rel = 0.0, max_rel = 0.0;
    const int wa = (int)p[P_WA];
    const uint64_t sb = p[P_SIGNED] ? 1ull << (p[P_WB] - 1) : 0;
    for (int64_t off = 0; off < n; off += span) {
        table(start + off, span, y, 1);
        for (int64_t c0 = 0; c0 < span; c0 += chunk) {
            axm_sums s = {0};
            s.wce = total.wce;
            axm_values_any(p, recip, start + off + c0, chunk, y + c0, rel + c0, &s);
            total.count += s.count;
            total.n_err += s.n_err;
            total.n_rel += s.n_rel;
            total.wce = s.wce;
            abs_total += s.sum_abs;
            e_total += s.sum_e;
            sq_total += ((unsigned __int128)s.sq_hi << 64) | s.sq_lo;
            if (s.n_err == 0) continue;
            double scale = 1.0;
            if (p[P_REF] == AXM_MUL) {
                const int64_t b = axm_field(start + off + c0, wa, (1ull << p[P_WB]) - 1, sb);
                scale = b ? 1.0 / (double)(b < 0 ? -b : b) : 0.0;
                if (scale == 0.0) continue;
            }
            const double peak = axm_max(rel + c0, chunk);
            sum_rel += axm_pairwise(rel + c0, chunk) * scale;
            const double m = peak * scale;
            max_rel = m > max_rel ? m : max_rel;
        }
    }
    free(y);
    free(rel);
    ires[R_COUNT] = total.count;
    ires[R_ERR] = total.n_err;
    ires[R_ABS_LO] = (uint64_t)abs_total;
    ires[R_ABS_HI] = (uint64_t)(abs_total >> 64);
    ires[R_E_LO] = (uint64_t)(unsigned __int128)e_total;
    ires[R_E_HI] = (uint64_t)((unsigned __int128)e_total >> 64);
    ires[R_SQ_LO] = (uint64_t)sq_total;
    ires[R_SQ_HI] = (uint64_t)(sq_total >> 64);
    ires[R_WCE] = total.wce;
    ires[R_REL] = total.n_rel;
    fres[0] = sum_rel;
    fres[1] = max_rel;
    return 0;
}
