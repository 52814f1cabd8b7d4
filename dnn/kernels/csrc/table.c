/* Table (LUT) layers, shared by the LUT adder and the LUT multiplier layers (torch references in
 * dnn/kernels/adder_ops.py and dnn/kernels/mult_ops.py).
 *
 * A layer's products (or differences) over its small operand domain are a value-major matrix mat[v][w]: v an
 * activation index (0..V-1), w a weight index (0..Vw-1). The weights wi[o][k] (O x Kg, per group) fold it into
 * per-tap tables T[k][v][o] = mat[v][wi[o][k]] (Og outputs padded to Ogp, a multiple of 16), so one output pixel
 * sums one table row per tap: a few vector loads and adds over the contiguous output channels.
 *
 * Forward: all tables are folded once per call (int16 rows when the entries fit, else int32), then each tile of
 * output pixels runs the input channels in turn, so one channel's tables (kh*kw*V*Ogp entries) stay in L2 beside the
 * tile's int32 accumulators while the next channel's are prefetched. An epilogue writes the float output NCHW.
 * Backward (gradient tables): threads own whole input channels; a channel's pixels are walked sorted by value, tap
 * by tap, so each value's slope row and its scatter sum H[k][v][:] (the output gradient summed over the pixels whose
 * tap k reads v) stay in registers and one output-gradient row read serves both gradients; the weight gradient of
 * the channel's taps is taken from H right away. No K*V*O tables per thread, no reduction afterwards, and every
 * float sum runs in a fixed order (reproducible). */
#include "vec.h"

typedef int32_t i32v __attribute__((vector_size(64)));  /* 16 int32 lanes */
typedef int16_t i16v __attribute__((vector_size(32)));  /* 16 int16 lanes */
typedef float f32v __attribute__((vector_size(64)));    /* 16 float lanes */

static inline i32v load_i16(const int16_t *p) { i16v v; memcpy(&v, p, sizeof v); return __builtin_convertvector(v, i32v); }
static inline i32v load_i32(const int32_t *p) { i32v v; memcpy(&v, p, sizeof v); return v; }
static inline f32v load_f32(const float *p) { f32v v; memcpy(&v, p, sizeof v); return v; }
static inline void store_i32(int32_t *p, i32v v) { memcpy(p, &v, sizeof v); }
static inline void store_f32(float *p, f32v v) { memcpy(p, &v, sizeof v); }
static inline float hsum_f32(f32v v) {
    float s = 0.0f;
    for (int t = 0; t < 16; t++) s += v[t];
    return s;
}

/* Offsets of the kh*kw taps inside one padded input plane. */
static void tap_offsets(int *offs, int kh, int kw, int dh, int dw, int Wp) {
    for (int i = 0; i < kh; i++)
        for (int j = 0; j < kw; j++) offs[i * kw + j] = i * dh * Wp + j * dw;
}

/* dst[v][o] = mat[v][wi[o][k]] for one tap k of outputs o0..o0+Og-1; zero for Og <= o < Ogp. With AVX-512,
 * 16 outputs per gather (an int16 entry is read as the low half of a 32-bit load: `mat` carries slack). */
#if defined(__AVX512F__)
#define FOLD(NAME, T)                                                                                               \
    static void NAME(const T *mat, int Vw, int V, const int32_t *wi, int Kg, int o0, int Og, int Ogp, long k,       \
                     T *dst) {                                                                                      \
        for (int b = 0; b < Ogp; b += 16) {                                                                         \
            int32_t w[16];                                                                                          \
            for (int l = 0; l < 16; l++) w[l] = b + l < Og ? wi[(long)(o0 + b + l) * Kg + k] : 0;                 \
            const __mmask16 mask = (__mmask16)(Og - b >= 16 ? 0xFFFF : (1u << (Og - b)) - 1);                     \
            __m512i idx = _mm512_loadu_si512(w);                                                                    \
            const __m512i vw = _mm512_set1_epi32(Vw);                                                               \
            for (int v = 0; v < V; v++, idx = _mm512_add_epi32(idx, vw)) {                                          \
                T *d = dst + (long)v * Ogp + b;                                                                     \
                if (sizeof(T) == 2)                                                                                 \
                    _mm256_storeu_si256((__m256i *)d, _mm512_cvtepi32_epi16(_mm512_mask_i32gather_epi32(           \
                                                          _mm512_setzero_si512(), mask, idx, mat, 2)));             \
                else                                                                                                \
                    _mm512_storeu_si512(d, _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), mask, idx, mat, 4)); \
            }                                                                                                       \
        }                                                                                                           \
    }
#else
#define FOLD(NAME, T)                                                                                               \
    static void NAME(const T *mat, int Vw, int V, const int32_t *wi, int Kg, int o0, int Og, int Ogp, long k,       \
                     T *dst) {                                                                                      \
        int32_t w[Og > 0 ? Og : 1];                                                                                 \
        for (int o = 0; o < Og; o++) w[o] = wi[(long)(o0 + o) * Kg + k];                                            \
        for (int v = 0; v < V; v++) {                                                                               \
            const T *row = mat + (long)v * Vw;                                                                      \
            T *d = dst + (long)v * Ogp;                                                                             \
            for (int o = 0; o < Og; o++) d[o] = row[w[o]];                                                          \
            for (int o = Og; o < Ogp; o++) d[o] = 0;                                                                \
        }                                                                                                           \
    }
#endif

FOLD(fold_i16, int16_t)
FOLD(fold_i32, int32_t)

#if defined(__AVX512F__)
static inline i32v widen_i16(const int16_t *p) { return (i32v)_mm512_cvtepi16_epi32(_mm256_loadu_si256((const __m256i *)p)); }
#else
static inline i32v widen_i16(const int16_t *p) { return load_i16(p); }
#endif

/* One output pixel's sums over the taps of one channel, NV vectors of 16 outputs from o0: acc += T[k][v_k][o]. */
#define PIXEL_SUMS(NAME, T, LOAD)                                                                                   \
    static inline __attribute__((always_inline)) void NAME(const int32_t *base, const int *offs, int taps,          \
                                                           const T *tab, long V, int Ogp, int32_t *acc,             \
                                                           const int NV) {                                          \
        i32v r[8];                                                                                                  \
        for (int q = 0; q < NV; q++) r[q] = load_i32(acc + 16 * q);                                                 \
        for (int k = 0; k < taps; k++) {                                                                            \
            const T *row = tab + ((long)k * V + base[offs[k]]) * Ogp;                                               \
            for (int q = 0; q < NV; q++) r[q] += LOAD(row + 16 * q);                                                \
        }                                                                                                           \
        for (int q = 0; q < NV; q++) store_i32(acc + 16 * q, r[q]);                                                 \
    }
PIXEL_SUMS(pixel_sums_i16, int16_t, widen_i16)
PIXEL_SUMS(pixel_sums_i32, int32_t, load_i32)

typedef int16_t i16w __attribute__((vector_size(64)));  /* 32 int16 lanes */

/* pixel_sums_i16 summing `group` taps at a time in int16 (the caller checked group * max|entry| < 2^15, as adder
 * differences allow), 32 outputs per vector, widened into int32 once per group. */
static inline __attribute__((always_inline)) void pixel_sums_n16(const int32_t *base, const int *offs, int taps,
                                                                 const int16_t *tab, long V, int Ogp, int32_t *acc,
                                                                 int group, const int NV) {
    const int NW = NV / 2, odd = NV & 1;
    i32v r[8];
    for (int q = 0; q < NV; q++) r[q] = load_i32(acc + 16 * q);
    for (int k0 = 0; k0 < taps; k0 += group) {
        const int k1 = k0 + group < taps ? k0 + group : taps;
        i16w s[4];
        i16v s1 = {0};
        for (int w = 0; w < NW; w++) s[w] = (i16w){0};
        for (int k = k0; k < k1; k++) {
            const int16_t *row = tab + ((long)k * V + base[offs[k]]) * Ogp;
            for (int w = 0; w < NW; w++) {
                i16w x;
                memcpy(&x, row + 32 * w, sizeof x);
                s[w] += x;
            }
            if (odd) {
                i16v x;
                memcpy(&x, row + 32 * NW, sizeof x);
                s1 += x;
            }
        }
        for (int w = 0; w < NW; w++) {
            i16v lo, hi;
            memcpy(&lo, &s[w], sizeof lo);
            memcpy(&hi, (const char *)&s[w] + sizeof lo, sizeof hi);
            r[2 * w] += __builtin_convertvector(lo, i32v);
            r[2 * w + 1] += __builtin_convertvector(hi, i32v);
        }
        if (odd) r[2 * NW] += __builtin_convertvector(s1, i32v);
    }
    for (int q = 0; q < NV; q++) store_i32(acc + 16 * q, r[q]);
}

/* Dispatch on the number of 16-output vectors (up to 8 per pass) for the int16-sum path. */
static inline void channel_pass_n16(const int32_t *base, const int *offs, int taps, const int16_t *tab, long V,
                                    int Ogp, int32_t *acc, int group) {
    for (int o0 = 0; o0 < Ogp; o0 += 128) {
        const int16_t *t = tab + o0;
        int32_t *a = acc + o0;
        switch ((Ogp - o0 < 128 ? Ogp - o0 : 128) / 16) {
        case 1: pixel_sums_n16(base, offs, taps, t, V, Ogp, a, group, 1); break;
        case 2: pixel_sums_n16(base, offs, taps, t, V, Ogp, a, group, 2); break;
        case 3: pixel_sums_n16(base, offs, taps, t, V, Ogp, a, group, 3); break;
        case 4: pixel_sums_n16(base, offs, taps, t, V, Ogp, a, group, 4); break;
        case 5: pixel_sums_n16(base, offs, taps, t, V, Ogp, a, group, 5); break;
        case 6: pixel_sums_n16(base, offs, taps, t, V, Ogp, a, group, 6); break;
        case 7: pixel_sums_n16(base, offs, taps, t, V, Ogp, a, group, 7); break;
        default: pixel_sums_n16(base, offs, taps, t, V, Ogp, a, group, 8); break;
        }
    }
}

/* Dispatch on the number of 16-output vectors (up to 8 per pass), so the accumulators live in registers. */
#define CHANNEL_PASS(NAME, T, PIX)                                                                                  \
    static inline void NAME(const int32_t *base, const int *offs, int taps, const T *tab, long V, int Ogp,         \
                            int32_t *acc) {                                                                         \
        for (int o0 = 0; o0 < Ogp; o0 += 128) {                                                                     \
            const T *t = tab + o0;                                                                                  \
            int32_t *a = acc + o0;                                                                                  \
            switch ((Ogp - o0 < 128 ? Ogp - o0 : 128) / 16) {                                                       \
            case 1: PIX(base, offs, taps, t, V, Ogp, a, 1); break;                                                  \
            case 2: PIX(base, offs, taps, t, V, Ogp, a, 2); break;                                                  \
            case 3: PIX(base, offs, taps, t, V, Ogp, a, 3); break;                                                  \
            case 4: PIX(base, offs, taps, t, V, Ogp, a, 4); break;                                                  \
            case 5: PIX(base, offs, taps, t, V, Ogp, a, 5); break;                                                  \
            case 6: PIX(base, offs, taps, t, V, Ogp, a, 6); break;                                                  \
            case 7: PIX(base, offs, taps, t, V, Ogp, a, 7); break;                                                  \
            default: PIX(base, offs, taps, t, V, Ogp, a, 8); break;                                                 \
            }                                                                                                       \
        }                                                                                                           \
    }
CHANNEL_PASS(channel_pass_i16, int16_t, pixel_sums_i16)
CHANNEL_PASS(channel_pass_i32, int32_t, pixel_sums_i32)

/* out[n, g*Og+o, p] = (float)(((double)acc[p][o] + a[o] + b[o] * sx[p]) * s[o]) for one tile (aff = a, b, s):
 * one output channel and one image's stretch of pixels at a time, so the stores are contiguous. */
static void tile_epilogue(const int32_t *acc, const int32_t *sx, const double *aff, float *out, int O, int Og,
                          int Ogp, int g, long p0, long p1, long P) {
    for (long pa = p0; pa < p1;) {
        const long n = pa / P, qa = pa % P, len = (P - qa < p1 - pa) ? P - qa : p1 - pa;
        for (int ol = 0; ol < Og; ol++) {
            const int o = g * Og + ol;
            const double a = aff[o], b = aff[O + o], s = aff[2 * O + o];
            const int32_t *src = acc + (pa - p0) * Ogp + ol, *x = sx + (pa - p0);
            float *dst = out + (n * O + o) * P + qa;
            for (long i = 0; i < len; i++) dst[i] = (float)(((double)src[i * Ogp] + a + b * x[i]) * s);
        }
        pa += len;
    }
}

/* The forward sums over tiles of `tile` output pixels; work holds threads * tile * (Ogp + 3) int32. While one
 * channel's tables are summed, the next channel's are prefetched into L2 a few lines per pixel: the tables of all
 * channels (K*V*Ogp entries, megabytes) come from L3 once per tile, in sequence instead of by random misses. */
#define TABLE_SUMS(NAME, T, FOLDF, PASS, NARROW)                                                                    \
    void NAME(const int32_t *ip, const T *mat, int Vw, int V, const int32_t *wi, T *tab, int32_t *work,            \
              const double *aff, float *out, int N, int C, int Hp, int Wp, int O, int G, int kh, int kw, int sh,   \
              int sw, int dh, int dw, int Ho, int Wo, int tile, int threads) {                                     \
        const int Cg = C / G, Og = O / G, Ogp = (Og + 15) / 16 * 16, taps = kh * kw, Kg = Cg * taps;              \
        const long P = (long)Ho * Wo, NP = (long)N * P, tiles = (NP + tile - 1) / tile, plane = (long)Hp * Wp;     \
        const long ctab = (long)taps * V * Ogp, lines = (ctab * (long)sizeof(T) + 63) / 64;                       \
        int offs[taps], need_sx = 0;                                                                                \
        tap_offsets(offs, kh, kw, dh, dw, Wp);                                                                      \
        for (int o = 0; o < O; o++) need_sx |= aff[O + o] != 0.0;  /* the activation sums only matter when b != 0 */\
        long biggest = 0;                                                                                           \
        for (long e = 0; e < (long)V * Vw; e++) biggest = labs((long)mat[e]) > biggest ? labs((long)mat[e]) : biggest; \
        /* int16 sums pay when they span several taps (a widening per group); a signed 8-bit product allows 2 */    \
        const int group = biggest > 0 ? (int)(32767 / biggest) : taps, narrow = sizeof(T) == 2 && group >= 4;      \
        _Pragma("omp parallel num_threads(threads)") {                                                              \
            _Pragma("omp for schedule(static)") for (long gk = 0; gk < (long)G * Kg; gk++)                          \
                FOLDF(mat, Vw, V, wi, Kg, (int)(gk / Kg) * Og, Og, Ogp, gk % Kg, tab + gk * V * Ogp);                \
            int32_t *acc = work + (long)omp_get_thread_num() * tile * (Ogp + 3), *sx = acc + (long)tile * Ogp;     \
            long *pbase = (long *)(sx + tile);                                                                      \
            _Pragma("omp for schedule(dynamic, 1)") for (long t = 0; t < (long)G * tiles; t++) {                    \
                const int g = (int)(t / tiles);                                                                     \
                const long p0 = (t % tiles) * tile, p1 = p0 + tile < NP ? p0 + tile : NP, count = p1 - p0;          \
                const long step = (lines + count - 1) / count;                                                      \
                for (long p = p0; p < p1; p++) {                                                                    \
                    const long n = p / P, q = p % P;                                                                \
                    pbase[p - p0] = ((n * C + (long)g * Cg) * Hp + (q / Wo) * sh) * Wp + (q % Wo) * sw;            \
                }                                                                                                   \
                memset(acc, 0, sizeof(int32_t) * count * Ogp);                                                      \
                memset(sx, 0, sizeof(int32_t) * count);                                                             \
                for (int cl = 0; cl < Cg; cl++) {                                                                   \
                    const int32_t *cip = ip + cl * plane;                                                           \
                    const T *ctable = tab + ((long)g * Cg + cl) * ctab;                                             \
                    const char *next = (const char *)(ctable + ctab), *end = next + (cl + 1 < Cg ? lines * 64 : 0); \
                    for (long p = 0; p < count; p++) {                                                              \
                        const int32_t *base = cip + pbase[p];                                                       \
                        for (long l = 0; l < step && next < end; l++, next += 64) __builtin_prefetch(next, 0, 2);   \
                        if (narrow)                                                                                 \
                            NARROW(base, offs, taps, (const int16_t *)ctable, V, Ogp, acc + p * Ogp, group);        \
                        else                                                                                        \
                            PASS(base, offs, taps, ctable, V, Ogp, acc + p * Ogp);                                  \
                        if (need_sx) {                                                                              \
                            int s = 0;                                                                              \
                            for (int k = 0; k < taps; k++) s += base[offs[k]];                                      \
                            sx[p] += s;                                                                             \
                        }                                                                                           \
                    }                                                                                               \
                }                                                                                                   \
                tile_epilogue(acc, sx, aff, out, O, Og, Ogp, g, p0, p1, P);                                         \
            }                                                                                                       \
        }                                                                                                           \
    }

/* out[n,o,p] = (sum_k T[k, ip[n, c, oh*sh+i*dh, ow*sw+j*dw], o] + a[o] + b[o] * sum_k ip[...]) * s[o] with
 * k = (c, i, j) over the group's channels, T folded from the int16 (or int32) value-major matrix `mat`. */
TABLE_SUMS(table_sums_i16, int16_t, fold_i16, channel_pass_i16, channel_pass_n16)
TABLE_SUMS(table_sums_i32, int32_t, fold_i32, channel_pass_i32, channel_pass_n16)

/* Output row (column) of each padded row r (column) through filter row i (column j), or -1: computed once per call,
 * not per pixel (divisions by the stride). */
static void reader_table(int *tab, int size, int taps, int step, int dil, int out) {
    for (int r = 0; r < size; r++)
        for (int i = 0; i < taps; i++) {
            const int d = r - i * dil;
            tab[r * taps + i] = d >= 0 && d % step == 0 && d / step < out ? d / step : -1;
        }
}

/* gw[o][k] = sum_v H[v][j][o] * mw[v][wi[o][k]] for the taps k = cl*taps + j of one channel, 16 outputs at a
 * time: H rows are contiguous over o, the mw entries a gather from one row of the matrix (in L1). */
static void channel_weight_grad(const float *H, const float *mw, int Vw, int V, const int32_t *wi, int Kg, int o0,
                                int Og, int Ogp, int cl, int taps, const char *seen, float *gw) {
    for (int j = 0; j < taps; j++) {
        const long k = (long)cl * taps + j;
        for (int b = 0; b < Ogp; b += 16) {
            int32_t w[16];
            for (int t = 0; t < 16; t++) w[t] = b + t < Og ? wi[(long)(o0 + b + t) * Kg + k] : 0;
            f32v s = {0};
            for (int v = 0; v < V; v++) {
                if (!seen[v]) continue;  /* no pixel holds v: its scatter rows are zero (and never written) */
                const float *row = mw + (long)v * Vw;
                f32v m;
                for (int t = 0; t < 16; t++) m[t] = row[w[t]];
                s += load_f32(H + ((long)v * taps + j) * Ogp + b) * m;
            }
            for (int t = 0; t < 16 && b + t < Og; t++) gw[(long)(o0 + b + t) * Kg + k] = s[t];
        }
    }
}

/* A pixel of the sorted walk: its image, padded row and column. */
typedef struct { long g; unsigned mask; int n, r, col; } pixel_t;  /* g, mask: see sort_by_value */

/* One channel's pixels of images n0..n1-1 that some output reads, sorted by value (a counting sort; `start` gets
 * V + 1 run starts), so the pixels of one value share that value's table rows. Each pixel also carries its valid
 * taps as bits and the offset of the output-gradient row at (n, r, col): with unit strides the row tap (i, j) reads
 * is that offset minus (i*dh*Wo + j*dw) rows. */
static void sort_by_value(const int32_t *ip, int C, int c, int n0, int n1, int Hp, int Wp, int V, const int *rows,
                          const int *cols, int kh, int kw, int Ho, int Wo, long gs, int *start, pixel_t *order) {
    memset(start, 0, sizeof(int) * (V + 1));
    for (int pass = 0; pass < 2; pass++) {
        for (int n = n0; n < n1; n++)
            for (int r = 0; r < Hp; r++) {
                int any = 0;
                for (int i = 0; i < kh; i++) any |= rows[r * kh + i] >= 0;
                if (!any) continue;
                const int32_t *irow = ip + (((long)n * C + c) * Hp + r) * Wp;
                for (int col = 0; col < Wp; col++) {
                    int read = 0;
                    for (int j = 0; j < kw; j++) read |= cols[col * kw + j] >= 0;
                    if (!read) continue;
                    if (pass == 0) start[irow[col] + 1]++;
                    else {
                        pixel_t *px = order + start[irow[col]]++;
                        *px = (pixel_t){0, 0, n, r, col};
                        if (Ho > 0 && kh * kw <= 32) {  /* valid taps as bits; unit strides: rows at fixed offsets */
                            for (int i = 0; i < kh; i++)
                                for (int j = 0; j < kw; j++)
                                    if (rows[r * kh + i] >= 0 && cols[col * kw + j] >= 0) px->mask |= 1u << (i * kw + j);
                            px->g = (((long)n * Ho + r) * Wo + col) * gs;
                        }
                    }
                }
            }
        if (pass == 0)
            for (int v = 0; v < V; v++) start[v + 1] += start[v];
    }
    for (int v = V; v > 0; v--) start[v] = start[v - 1];  /* the second pass moved each start to its run's end */
    start[0] = 0;
}

/* One run of pixels holding one value, one block of NV*16 outputs, one tap (i, j): part[e] += g . Av over the
 * run's pixels (16-lane partial dot products, summed once per pixel later) and Hv += sum of their g rows. The
 * value's table row and the scatter sum stay in registers: no read-modify-write of table rows per pixel. */
static inline __attribute__((always_inline)) void run_tap(const pixel_t *run, int count, const int *rows,
                                                          const int *cols, int kh, int kw, int i, int j, int Ho,
                                                          int Wo, long gs, long tap_back, const float *gt,
                                                          const float *Av, float *Hv, f32v *part, const int NV,
                                                          const int DO_A, const int DO_H) {
    f32v a[4], h[4];
    for (int q = 0; q < NV; q++) {
        if (DO_A) a[q] = load_f32(Av + 16 * q);
        h[q] = (f32v){0};
    }
    const unsigned bit = 1u << (i * kw + j);
    for (int e = 0; e < count; e++) {
        const float *g;
        if (tap_back >= 0) {  /* unit strides: a fixed offset from the pixel's own row */
            if (!(run[e].mask & bit)) continue;
            g = gt + run[e].g - tap_back;
        } else {
            const int oh = rows[run[e].r * kh + i], ow = cols[run[e].col * kw + j];
            if (oh < 0 || ow < 0) continue;
            g = gt + (((long)run[e].n * Ho + oh) * Wo + ow) * gs;
        }
        f32v t = {0};
        for (int q = 0; q < NV; q++) {
            const f32v gq = load_f32(g + 16 * q);
            if (DO_A) t += gq * a[q];
            if (DO_H) h[q] += gq;
        }
        if (DO_A) part[e] += t;
    }
    if (DO_H)
        for (int q = 0; q < NV; q++) store_f32(Hv + 16 * q, load_f32(Hv + 16 * q) + h[q]);
}

/* dst[j][o] = ma[v][w[j][o]] + bias[o] for the taps j of one channel and one activation value v (w: the channel's
 * weight indices, taps x Ogp, zero-padded), folded when a pixel first holds v: values no pixel holds cost nothing. */
static void fold_value(const float *ma, int Vw, int v, const int32_t *w, const float *bias, int Og, int Ogp, int taps,
                       float *dst) {
    const float *row = ma + (long)v * Vw;
    for (int j = 0; j < taps; j++)
        for (int o = 0; o < Ogp; o++)
            dst[j * Ogp + o] = o < Og ? row[w[j * Ogp + o]] + (bias ? bias[o] : 0.0f) : 0.0f;
}

/* Table gradients (gradient-LUT backward of both layer kinds):
 * gx[n,c,h,w] = sum over the taps k and output pixels reading the pixel of dot(g[n,oh,ow,:], A[k][v][:]) with
 * A[k][v][o] = ma[v][wi[o][k]] + bias[o]; gw[o][k] = sum_v H[k][v][o] * mw[v][wi[o][k]] with
 * H[k][v][o] = sum of g[n,oh,ow,o] over the (n, oh, ow) whose tap k reads v. gt is (N, Ho, Wo, G*Ogp) float;
 * gx (N, C, H, W, zeroed) and gw (O, Kg) may be NULL when not needed; work holds threads * 2 * kh*kw*V*Ogp floats.
 * Threads own whole input channels. A channel's pixels are walked sorted by value, `chunk` images at a time (their
 * output gradient stays in L2), tap by tap: each output gradient row read serves both gradients, the value's table
 * row and scatter sum are registers, and every float sum runs in a fixed order (reproducible). */
void table_grads_f32(const int32_t *ip, const float *ma, const float *bias, const float *mw, int Vw, int V,
                     const int32_t *wi, const float *gt, float *gx, float *gw, float *work, int N, int C, int Hp,
                     int Wp, int O, int G, int kh, int kw, int sh, int sw, int dh, int dw, int Ho, int Wo, int ph,
                     int pw, int H, int W, int chunk, int threads) {
    const int Cg = C / G, Og = O / G, Ogp = (Og + 15) / 16 * 16, taps = kh * kw, Kg = Cg * taps;
    const long ctab = (long)taps * V * Ogp, gs = (long)G * Ogp, vrow = (long)taps * Ogp, plane = (long)Hp * Wp;
    const int unit = sh == 1 && sw == 1 && taps <= 32;  /* tap rows at fixed offsets from the pixel's (see sort) */
    int *rows = malloc(sizeof(int) * ((long)Hp * kh + (long)Wp * kw));
    int *cols = rows + (long)Hp * kh;
    reader_table(rows, Hp, kh, sh, dh, Ho);
    reader_table(cols, Wp, kw, sw, dw, Wo);
#pragma omp parallel num_threads(threads)
    {
        float *A = ma ? work + (long)omp_get_thread_num() * 2 * ctab : NULL;
        float *Hs = mw ? work + (long)omp_get_thread_num() * 2 * ctab + ctab : NULL;
        int *start = malloc(sizeof(int) * ((long)V + 1));
        pixel_t *order = malloc(sizeof(pixel_t) * chunk * plane);
        f32v *part = aligned_alloc(64, sizeof(f32v) * chunk * plane);
        char *seen = malloc(V);
        int32_t *wt = malloc(sizeof(int32_t) * taps * Ogp);
#pragma omp for schedule(dynamic, 1)
        for (int c = 0; c < C; c++) {
            const int g = c / Cg, cl = c % Cg;
            memset(seen, 0, V);
            for (int j = 0; j < taps; j++)
                for (int o = 0; o < Ogp; o++) wt[j * Ogp + o] = o < Og ? wi[(long)(g * Og + o) * Kg + cl * taps + j] : 0;
            for (int n0 = 0; n0 < N; n0 += chunk) {
                const int n1 = n0 + chunk < N ? n0 + chunk : N;
                sort_by_value(ip, C, c, n0, n1, Hp, Wp, V, rows, cols, kh, kw, Ho, Wo, gs, start, order);
                const float *gc = gt + (long)g * Ogp;
                for (int v = 0; v < V; v++) {
                    const int count = start[v + 1] - start[v];
                    if (count == 0) continue;
                    const pixel_t *run = order + start[v];
                    if (!seen[v]) {  /* first pixel of value v in this channel: its slope rows, zero scatter rows */
                        seen[v] = 1;
                        if (A) fold_value(ma, Vw, v, wt, bias ? bias + g * Og : NULL, Og, Ogp, taps, A + v * vrow);
                        if (Hs) memset(Hs + v * vrow, 0, sizeof(float) * vrow);
                    }
                    if (A) memset(part, 0, sizeof(f32v) * count);
                    for (int o0 = 0; o0 < Ogp; o0 += 64) {
                        const int nv = (Ogp - o0) / 16 < 4 ? (Ogp - o0) / 16 : 4;
                        for (int i = 0; i < kh; i++)
                            for (int j = 0; j < kw; j++) {
                                const long off = v * vrow + (long)(i * kw + j) * Ogp + o0;
                                const long back = unit ? ((long)i * dh * Wo + (long)j * dw) * gs : -1;
                                const float *Av = A ? A + off : NULL;
                                float *Hv = Hs ? Hs + off : NULL;
                                switch (nv * 4 + (Av ? 1 : 0) + (Hv ? 2 : 0)) {
#define RUN_TAP(NV, M) \
    case NV * 4 + M:                                                                                                \
        run_tap(run, count, rows, cols, kh, kw, i, j, Ho, Wo, gs, back, gc + o0, Av, Hv, part, NV, M & 1, M >> 1);  \
        break;
#define RUN_TAPS(NV) RUN_TAP(NV, 1) RUN_TAP(NV, 2) RUN_TAP(NV, 3)
                                    RUN_TAPS(1) RUN_TAPS(2) RUN_TAPS(3) RUN_TAPS(4)
                                }
                            }
                    }
                    if (gx)
                        for (int e = 0; e < count; e++) {
                            const int r = run[e].r, col = run[e].col;
                            if (r >= ph && r < ph + H && col >= pw && col < pw + W)
                                gx[(((long)run[e].n * C + c) * H + r - ph) * W + col - pw] = hsum_f32(part[e]);
                        }
                }
            }
            if (Hs) channel_weight_grad(Hs, mw, Vw, V, wi, Kg, g * Og, Og, Ogp, cl, taps, seen, gw);
        }
        free(seen);
        free(wt);
        free(start);
        free(order);
        free(part);
    }
    free(rows);
}
