/* Vector helpers shared by the AdderNet kernels: 8 float lanes as GCC vector extensions, so each file builds
 * for whatever SIMD width -march=native offers. */
#ifndef AXNET_VEC_H
#define AXNET_VEC_H
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <omp.h>
#if defined(__AVX__)
#include <immintrin.h>
#endif

typedef float v8 __attribute__((vector_size(32)));
typedef int32_t vi8 __attribute__((vector_size(32)));

static inline v8 vload(const float *p) { v8 v; memcpy(&v, p, sizeof v); return v; }
static inline void vstore(float *p, v8 v) { memcpy(p, &v, sizeof v); }
static inline v8 vsplat(float a) { return (v8){a, a, a, a, a, a, a, a}; }
static inline v8 vabs(v8 v) { return (v8)((vi8)v & 0x7fffffff); }
/* min(max(w, lo), hi): with lo = x - 1 and hi = x + 1 this is clamp(w - x, -1, 1) + x, one subtraction fewer. */
#if defined(__AVX__)
static inline v8 vclampw(v8 w, v8 lo, v8 hi) { return (v8)_mm256_min_ps(_mm256_max_ps((__m256)w, (__m256)lo), (__m256)hi); }
#else
static inline v8 vselect(vi8 mask, v8 a, v8 b) { return (v8)(((vi8)a & mask) | ((vi8)b & ~mask)); }
static inline v8 vclampw(v8 w, v8 lo, v8 hi) {
    w = vselect(w < lo, lo, w);
    return vselect(w > hi, hi, w);
}
#endif
static inline v8 vgather(const float *p, int step) {
    v8 v;
    for (int t = 0; t < 8; t++) v[t] = p[(long)t * step];
    return v;
}
static inline v8 vrow(const float *p, int step) { return step == 1 ? vload(p) : vgather(p, step); }
static inline float vsum(v8 v) {
    float s = 0.0f;
    for (int t = 0; t < 8; t++) s += v[t];
    return s;
}
#endif
