/* Approximate accumulation through an adder circuit, bit-sliced: the fixed harness around one generated circuit.
 *
 * dnn/kernels/accum_native.py writes a translation unit that includes accum_types.h, defines ACC_BITS (the
 * accumulator width n_acc), ACC_TB (a power of two >= the bits a term needs) and
 *     static inline void acc_circuit(const accv *a, const accv *b, accv *out)
 * (a: the running value's ACC_BITS planes, b: the new term's ACC_BITS planes, out: the low ACC_BITS output
 * planes), then includes this file, which exports
 *   acc_indexed  out[m, o] = ACC over k of pair[widx[o, k] * vx + cols_t[k, m]]   (sequential or pairwise tree)
 *   acc_image    the same for a convolution, the indices read from the (n, c, h, w) index image through the
 *                geometry (F.unfold order, padding taps read `pad`): no unfolded copy is made
 * A term is a table entry, so term generation (|d| of the layer's subtraction, or a product) is one gather.
 * Outputs are kept bit-sliced across all K steps: 64 * ACC_LANES outputs per plane; the terms of one step are
 * gathered into 64 rows (row t, lane j: output t * ACC_LANES + j) and transposed into planes. Terms have at most
 * ACC_TB bits, so the transpose skips the stages that would only move zeros. Results leave the bit domain once per
 * output, read unsigned or (sign = 1) as ACC_BITS-bit two's complement.
 */
#include <stdlib.h>
#include <string.h>
#if defined(__AVX512VBMI__) && defined(__AVX512BW__) && ACC_TB <= 16
#include <immintrin.h>
#define ACC_VBMI 1 /* terms looked up 64 at a time from byte tables, bit planes taken with byte test masks */
#else
#define ACC_VBMI 0
#endif

#define ACC_GROUP (64 * ACC_LANES) /* outputs per plane */
#define ACC_OB 32                   /* filters per work item: one gathered index row serves all of them */
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

/* Output g of a group is bit (g % 64) of lane (g / 64) of every plane; as 64 rows of words (before or after a
 * transpose) it is word (g % 64) * ACC_LANES + g / 64. */
static inline int acc_slot(int g) { return (g & 63) * ACC_LANES + (g >> 6); }

/* rows[0 .. ACC_LIVE - 1] <- the bit planes of the terms prow[idx[g]] of the group's outputs. */
static inline void acc_term_planes(accv rows[64], const uint32_t *restrict prow, const int32_t *restrict idx) {
    uint64_t *restrict flat = (uint64_t *)rows;
    for (int g = 0; g < ACC_GROUP; g++) flat[acc_slot(g)] = prow[idx[g]];
    acc_transpose_terms(rows);
}

#if ACC_VBMI
/* The same from byte tables: tab holds ACC_TB / 8 tables of 256 bytes (byte b of each term pattern), idx8 the
 * group's activation indices as bytes. Per 64 outputs and table byte: two permutes, one blend, eight test masks. */
static inline void acc_term_planes_vbmi(accv rows[64], const uint8_t *restrict tab, const uint8_t *restrict idx8) {
    uint64_t *restrict words = (uint64_t *)rows;
    for (int b = 0; b < ACC_TB / 8; b++) {
        const __m512i t0 = _mm512_loadu_si512(tab + 256 * b), t1 = _mm512_loadu_si512(tab + 256 * b + 64);
        const __m512i t2 = _mm512_loadu_si512(tab + 256 * b + 128), t3 = _mm512_loadu_si512(tab + 256 * b + 192);
        for (int c = 0; c < ACC_LANES; c++) {
            const __m512i ix = _mm512_loadu_si512(idx8 + 64 * c);
            const __m512i lo = _mm512_permutex2var_epi8(t0, ix, t1), hi = _mm512_permutex2var_epi8(t2, ix, t3);
            const __m512i v = _mm512_mask_blend_epi8(_mm512_movepi8_mask(ix), lo, hi);
#pragma GCC unroll 8
            for (int j = 0; j < 8; j++)
                if (8 * b + j < ACC_LIVE)
                    words[(8 * b + j) * ACC_LANES + c] = _mm512_test_epi8_mask(v, _mm512_set1_epi8((char)(1 << j)));
        }
    }
}
#endif

/* acc <- C(acc, term) where term's planes are rows[0 .. ACC_LIVE - 1] (higher planes zero). */
static inline void acc_step(accv *acc, const accv *restrict rows) {
    accv b[ACC_BITS];
#pragma GCC unroll 64
    for (int i = 0; i < ACC_BITS; i++) b[i] = i < ACC_LIVE ? rows[i] : ACCV_ZERO;
    acc_circuit(acc, b, acc); /* in place: the generated circuit reads every input before it writes an output */
}

/* Write the ACC_BITS planes of one filter's accumulators as (exact) doubles: out[(m0 + g) * o + col] for g < count,
 * or out[(n * o + col) * l + p] for output m0 + g = n * l + p when l > 0 (the layer's (N, O, Ho, Wo) layout). */
static void acc_store(const accv *acc, double *out, int64_t m0, int64_t count, int64_t o, int64_t col, int sign,
                      int64_t l) {
    accv rows[64];
    for (int i = 0; i < 64; i++) rows[i] = i < ACC_BITS ? acc[i] : ACCV_ZERO;
    acc_transpose_full(rows);
    const uint64_t *flat = (const uint64_t *)rows;
    const int shift = 64 - ACC_BITS;
    for (int64_t g = 0; g < count; g++) {
        uint64_t v = flat[acc_slot((int)g)];
        const int64_t value = (sign && shift > 0) ? ((int64_t)(v << shift)) >> shift : (int64_t)v;
        const int64_t mm = m0 + g;
        out[l > 0 ? ((mm / l) * o + col) * l + mm % l : mm * o + col] = (double)value;
    }
}

/* Where the activation indices come from: an explicit (k x m) matrix `cols_t`, or (cols_t NULL) a zero-padded
 * (n, c, h, w) index image read through the convolution geometry, so no unfolded copy is ever made. */
typedef struct {
    const uint8_t *bytes; /* NULL, or the term table as (rows, ACC_TB / 8, 256) bytes for the VBMI path */
    const int32_t *cols_t;
    const int32_t *image;
    const uint8_t *image8; /* NULL, or the index image zero-padded (value `pad`) as bytes: (n, c, hp, wp) */
    int64_t c, h, w, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo, hp, wp;
    int32_t pad;
} acc_input;

/* Per output g of the group: its image offset and the top-left corner of its patch (image mode). */
typedef struct {
    int64_t base[ACC_GROUP], base8[ACC_GROUP];
    int32_t y0[ACC_GROUP], x0[ACC_GROUP];
} acc_corners;

static void acc_group_corners(const acc_input *in, int64_t m0, int64_t count, acc_corners *cr) {
    for (int64_t g = 0; g < ACC_GROUP; g++) {
        const int64_t mm = m0 + (g < count ? g : 0), l = in->ho * in->wo;
        const int64_t n = mm / l, p = mm % l;
        cr->base[g] = n * in->c * in->h * in->w;
        cr->y0[g] = (int32_t)((p / in->wo) * in->sh - in->ph);
        cr->x0[g] = (int32_t)((p % in->wo) * in->sw - in->pw);
        cr->base8[g] = (n * in->c * in->hp + (p / in->wo) * in->sh) * in->wp + (p % in->wo) * in->sw;
    }
}

/* The index row of tap kk (F.unfold order: channel, kernel row, kernel column) for outputs m0 .. m0 + count - 1;
 * the rest of the group reads index 0 (matrix mode) or repeats output m0 (image mode). */
static inline void acc_load_index(int32_t *restrict idx, const acc_input *in, const acc_corners *cr, int64_t m,
                                  int64_t m0, int64_t count, int64_t kk) {
    if (in->cols_t) {
        memcpy(idx, in->cols_t + kk * m + m0, (size_t)count * sizeof(int32_t));
        memset(idx + count, 0, (size_t)(ACC_GROUP - count) * sizeof(int32_t));
        return;
    }
    const int64_t ch = kk / (in->kh * in->kw), r = kk % (in->kh * in->kw);
    const int32_t dy = (int32_t)((r / in->kw) * in->dh), dx = (int32_t)((r % in->kw) * in->dw);
    if (in->image8) { /* padded bytes: no bounds to check, and the byte-table path reads these directly */
        uint8_t *restrict idx8 = (uint8_t *)(idx + ACC_GROUP);
        const uint8_t *tap = in->image8 + (ch * in->hp + dy) * in->wp + dx;
        for (int g = 0; g < ACC_GROUP; g++) idx8[g] = tap[cr->base8[g]];
        return;
    }
    const int32_t *plane = in->image + ch * in->h * in->w;
    for (int g = 0; g < ACC_GROUP; g++) {
        const int32_t y = cr->y0[g] + dy, x = cr->x0[g] + dx;
        const int inside = (uint32_t)y < (uint32_t)in->h && (uint32_t)x < (uint32_t)in->w;
        idx[g] = inside ? plane[cr->base[g] + (int64_t)y * in->w + x] : in->pad;
    }
}

/* The term planes of one filter row `wrow` for the group's indices (byte tables when the input has them). */
static inline void acc_planes_for(accv rows[64], const acc_input *in, const uint32_t *pair, int64_t vx, int64_t wrow,
                                  const int32_t *idx) {
#if ACC_VBMI
    if (in->bytes) {
        acc_term_planes_vbmi(rows, in->bytes + wrow * (ACC_TB / 8) * 256, (const uint8_t *)(idx + ACC_GROUP));
        return;
    }
#endif
    acc_term_planes(rows, pair + wrow * vx, idx);
}

/* idx[0 .. ACC_GROUP - 1] as int32, followed (byte-table path) by the same indices as ACC_GROUP bytes. */
static inline void acc_index_bytes(int32_t *idx, const acc_input *in) {
    if (!in->bytes || in->image8) return;
    uint8_t *idx8 = (uint8_t *)(idx + ACC_GROUP);
    for (int g = 0; g < ACC_GROUP; g++) idx8[g] = (uint8_t)idx[g];
}

static void acc_sequential_item(const acc_input *in, const acc_corners *cr, int64_t m, int64_t k, const int32_t *widx,
                                int64_t o, const uint32_t *pair, int64_t vx, int64_t m0, int64_t count,
                                int64_t o0, int64_t ocount, int32_t *idx, accv *acc, double *out, int sign) {
    accv rows[64];
    memset(acc, 0, sizeof(accv) * ACC_BITS * ACC_OB);
    for (int64_t kk = 0; kk < k; kk++) {
        acc_load_index(idx, in, cr, m, m0, count, kk);
        acc_index_bytes(idx, in);
        for (int64_t oo = 0; oo < ocount; oo++) {
            acc_planes_for(rows, in, pair, vx, widx[(o0 + oo) * k + kk], idx);
            acc_step(acc + oo * ACC_BITS, rows);
        }
    }
    const int64_t l = in->image ? in->ho * in->wo : 0;
    for (int64_t oo = 0; oo < ocount; oo++) acc_store(acc + oo * ACC_BITS, out, m0, count, o, o0 + oo, sign, l);
}

static void acc_tree_item(const acc_input *in, const acc_corners *cr, int64_t m, int64_t k, const int32_t *widx,
                          int64_t o, const uint32_t *pair, int64_t vx, int64_t m0, int64_t count, int64_t o0,
                          int64_t ocount, int32_t *idx, accv *store, double *out, int sign) {
    accv rows[64];
    const int64_t row = ACC_GROUP + ACC_GROUP / 4; /* int32 words per cached tap: the indices, then as bytes */
    for (int64_t kk = 0; kk < k; kk++) { /* every tap's indices once, shared by the item's filters */
        acc_load_index(idx + kk * row, in, cr, m, m0, count, kk);
        acc_index_bytes(idx + kk * row, in);
    }
    /* The pairwise tree streamed: each term is pushed as a level-0 value and equal levels on top are combined
     * (left, right) at once, so at most log2(K) + 1 values are live; the leftovers, one per set bit of K, are then
     * combined from the right. This is exactly the level-by-level tree with odd last terms moving up (checked
     * against it for every K below 600, and by the tests against the plain loop). */
    int level[64];
    for (int64_t oo = 0; oo < ocount; oo++) {
        int top = 0;
        for (int64_t kk = 0; kk < k; kk++) {
            acc_planes_for(rows, in, pair, vx, widx[(o0 + oo) * k + kk], idx + kk * row);
            if (top >= 1 && level[top - 1] == 0) { /* a level-0 value waits: combine the term with it at once */
                acc_step(store + (top - 1) * ACC_BITS, rows);
                level[top - 1] = 1;
            } else {
                for (int i = 0; i < ACC_BITS; i++) store[top * ACC_BITS + i] = i < ACC_LIVE ? rows[i] : ACCV_ZERO;
                level[top++] = 0;
            }
            while (top >= 2 && level[top - 1] == level[top - 2]) { /* in place (see acc_step) */
                acc_circuit(store + (top - 2) * ACC_BITS, store + (top - 1) * ACC_BITS, store + (top - 2) * ACC_BITS);
                level[top - 2]++;
                top--;
            }
        }
        for (; top >= 2; top--)
            acc_circuit(store + (top - 2) * ACC_BITS, store + (top - 1) * ACC_BITS, store + (top - 2) * ACC_BITS);
        acc_store(store, out, m0, count, o, o0 + oo, sign, in->image ? in->ho * in->wo : 0);
    }
}

static void acc_run(const acc_input *in, int64_t m, int64_t k, const int32_t *widx, int64_t o, const uint32_t *pair,
                    int64_t vx, int tree, int sign, double *out, int threads) {
    const int64_t tiles = (m + ACC_GROUP - 1) / ACC_GROUP, oblocks = (o + ACC_OB - 1) / ACC_OB;
#pragma omp parallel num_threads(threads)
    {
        /* the group's activation indices (int32, then bytes): one tap, or every tap in tree order */
        int32_t *idx = aligned_alloc(64, (tree ? (size_t)k : 1) * ACC_GROUP * (sizeof(int32_t) + 1));
        acc_corners *cr = aligned_alloc(64, (sizeof(acc_corners) + 63) / 64 * 64);
        const size_t planes = (size_t)(tree ? 64 : ACC_OB) * ACC_BITS; /* tree: a stack of at most 64 levels */
        accv *buf = aligned_alloc(64, planes * sizeof(accv));
#pragma omp for schedule(dynamic)
        for (int64_t item = 0; item < tiles * oblocks; item++) {
            const int64_t m0 = (item / oblocks) * ACC_GROUP, o0 = (item % oblocks) * ACC_OB;
            const int64_t count = m - m0 < ACC_GROUP ? m - m0 : ACC_GROUP;
            const int64_t ocount = o - o0 < ACC_OB ? o - o0 : ACC_OB;
            if (!in->cols_t) acc_group_corners(in, m0, count, cr);
            if (tree)
                acc_tree_item(in, cr, m, k, widx, o, pair, vx, m0, count, o0, ocount, idx, buf, out, sign);
            else
                acc_sequential_item(in, cr, m, k, widx, o, pair, vx, m0, count, o0, ocount, idx, buf, out, sign);
        }
        free(idx);
        free(cr);
        free(buf);
    }
}

/* out (m x o, float64 holding integers) = the accumulated terms; cols_t (k x m) activation indices, widx (o x k)
 * weight indices,
 * pair (rows of vx uint32 term patterns, already reduced to ACC_BITS bits), bytes (NULL, or the same table as
 * (rows, ACC_TB / 8, 256) bytes when vx <= 256 and ACC_TB <= 16). tree: 0 sequential, 1 pairwise. */
void acc_indexed(const int32_t *cols_t, int64_t m, int64_t k, const int32_t *widx, int64_t o, const uint32_t *pair,
                 const uint8_t *bytes, int64_t vx, int tree, int sign, double *out, int threads) {
    acc_input in = {0};
    in.bytes = ACC_VBMI ? bytes : NULL;
    in.cols_t = cols_t;
    acc_run(&in, m, k, widx, o, pair, vx, tree, sign, out, threads);
}

/* The same over a convolution: image (n, c, h, w) activation indices, taps outside it read `pad`; geometry g =
 * {kh, kw, sh, sw, ph, pw, dh, dw, ho, wo}; out is (n, o, ho, wo). image8 (or NULL): the same indices zero-padded,
 * as bytes (n, c, h + 2 ph, w + 2 pw), read instead of `image` on the byte-table path. */
void acc_image(const int32_t *image, const uint8_t *image8, int64_t n, int64_t c, int64_t h, int64_t w,
               const int64_t *g, int32_t pad, const int32_t *widx, int64_t o, const uint32_t *pair,
               const uint8_t *bytes, int64_t vx, int tree, int sign, double *out, int threads) {
    acc_input in = {0};
    in.bytes = ACC_VBMI ? bytes : NULL;
    in.image8 = in.bytes ? image8 : NULL;
    in.hp = h + 2 * g[4], in.wp = w + 2 * g[5];
    in.image = image;
    in.c = c, in.h = h, in.w = w, in.kh = g[0], in.kw = g[1], in.sh = g[2], in.sw = g[3], in.ph = g[4], in.pw = g[5];
    in.dh = g[6], in.dw = g[7], in.ho = g[8], in.wo = g[9], in.pad = pad;
    acc_run(&in, n * g[8] * g[9], c * g[0] * g[1], widx, o, pair, vx, tree, sign, out, threads);
}
