"""A compiled Program as one C function over vector words: the circuit part of every generated kernel.

The simulator's engine, the netlist layer kernels and the accumulator kernels all wrap the same function body: each
signal slot a local variable of the vector type, each step one word operation, in the Program's order.
"""
from __future__ import annotations

OPERATORS = {"and": "&", "or": "|", "xor": "^"}


def c_circuit_function(program, name, vtype, zero, ones, params=None, inputs=None, outputs=None,
                       inline="always_inline"):
    """C text of `static inline void name(params)` that evaluates `program` on words of type `vtype`.

    `inputs[i]` is the C expression of input position i (default `in[i]`), `outputs[k]` the slot stored to
    `out[k]` (default the program's output slots); `zero` and `ones` are the vector constants' names.
    """
    params = params or f"const {vtype} *restrict in, {vtype} *restrict out"
    inputs = inputs or [f"in[{i}]" for i in range(program.n_inputs)]
    outputs = program.output_slots if outputs is None else outputs
    lines = [f"static inline __attribute__(({inline})) void {name}({params}) {{"]
    lines += [f"    {vtype} s{i} = {inputs[i]};" for i in range(program.n_inputs)]
    temps = [f"s{k}" for k in range(program.n_inputs, program.n_slots)]
    for k in range(0, len(temps), 16):
        lines.append(f"    {vtype} " + ", ".join(temps[k:k + 16]) + ";")
    for op, dst, *src in program.steps:
        if op in OPERATORS:
            expr = f"s{src[0]} {OPERATORS[op]} s{src[1]}"
        elif op == "not":
            expr = f"~s{src[0]}"
        elif op == "copy":
            expr = f"s{src[0]}"
        else:
            expr = zero if op == "zero" else ones
        lines.append(f"    s{dst} = {expr};")
    lines += [f"    out[{k}] = s{slot};" for k, slot in enumerate(outputs)]
    return "\n".join(lines + ["}"])
