/* Padding of 4-byte planes in one pass (float images or int32 table indices). */
#include "vec.h"

/* dst (planes, H + 2ph, W + 2pw) = src (planes, H, W) padded with `fill`, for any 4-byte element (float or int32):
 * one parallel pass that writes every element once (torch's strided border fills cost more than the copy). */
void pad_planes_32(const uint32_t *src, uint32_t *dst, long planes, int H, int W, int ph, int pw, uint32_t fill,
                   int threads) {
    const int Hp = H + 2 * ph, Wp = W + 2 * pw;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (long t = 0; t < planes; t++) {
        uint32_t *out = dst + t * Hp * Wp;
        const uint32_t *in = src + t * H * W;
        for (long e = 0; e < (long)ph * Wp; e++) out[e] = fill;
        for (int h = 0; h < H; h++) {
            uint32_t *row = out + (long)(h + ph) * Wp;
            for (int e = 0; e < pw; e++) row[e] = row[pw + W + e] = fill;
            memcpy(row + pw, in + (long)h * W, sizeof(uint32_t) * W);
        }
        for (long e = (long)(H + ph) * Wp; e < (long)Hp * Wp; e++) out[e] = fill;
    }
}
