/* Types of the compiled netlist engine (see axn_engine.h and simulator/engine.py).
 *
 * A signal is an `axv`: AXN_LANES 64-bit words side by side (GCC vector extension), so one operation of the
 * generated circuit function evaluates a gate for 64 * AXN_LANES input patterns. The width follows the CPU the
 * library is built for (-march=native): 8 words with AVX-512, else 4 (two 128-bit or one 256-bit register).
 */
#ifndef AXN_TYPES_H
#define AXN_TYPES_H
#include <stdint.h>

#if defined(__AVX512F__)
#define AXN_LANES 8
#else
#define AXN_LANES 4
#endif

typedef uint64_t axv __attribute__((vector_size(8 * AXN_LANES)));
typedef int64_t axvs __attribute__((vector_size(8 * AXN_LANES)));

#define AXV_ZERO ((axv){0})
#define AXV_ONES (~(axv){0})

#endif
