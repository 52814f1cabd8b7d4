/* Types of the compiled accumulator kernels (see accum_kernel.h and dnn/kernels/accum_native.py).
 *
 * A bit plane is an `accv`: ACC_LANES 64-bit words side by side (GCC vector extension), so one operation of the
 * generated accumulator circuit adds for 64 * ACC_LANES outputs at once. 8 words with AVX-512, else 4.
 * This header is only included by generated translation units (dnn/kernels/build.py compiles *.c files only).
 */
#ifndef ACC_TYPES_H
#define ACC_TYPES_H
#include <stdint.h>

#if defined(__AVX512F__)
#define ACC_LANES 8
#else
#define ACC_LANES 4
#endif

typedef uint64_t accv __attribute__((vector_size(8 * ACC_LANES)));

#define ACCV_ZERO ((accv){0})
#define ACCV_ONES (~(accv){0})

#endif
