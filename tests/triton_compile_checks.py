"""Compile every Triton kernel for a real GPU target (sm_90, the H200's) without a GPU: Triton's compiler and the
ptxas it ships need no device, so the code paths the interpreter never takes (typing, layouts, PTX, machine code) are
checked on any machine. Generated kernels are compiled for sample circuits.

`tests/test_triton_kernels.py` runs this file in a subprocess (TRITON_INTERPRET=0) and turns each entry of the JSON
it prints into one test. By hand: `python tests/triton_compile_checks.py [NAME...]`; the registers and spills of each
kernel, from `cuobjdump -res-usage`, go to stderr. Triton caches the results (~/.triton/cache), so a second run takes
seconds; the first takes a few minutes of CPU.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TARGET = ("cuda", 90, 32)  # backend, compute capability, warp size
GEOMETRY = {k: "i32" for k in "N C H W O HO WO SH SW PH PW DH DW".split()}


def _compile(fn, pointers, scalars, constexprs):
    """Compile `fn` for TARGET; pointers {name: element type}, scalars {name: type}, constexprs {name: value}."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    signature = {name: f"*{kind}" for name, kind in pointers.items()}
    signature.update(scalars)
    signature.update({name: "constexpr" for name in constexprs})
    names = fn.arg_names
    assert sorted(names) == sorted(signature), (sorted(names), sorted(signature))
    kernel = triton.compile(ASTSource(fn=fn, signature={n: signature[n] for n in names}, constexprs=constexprs),
                            target=GPUTarget(*TARGET))
    return kernel.asm["cubin"]


def _adder():
    from dnn.kernels.triton import adder
    return adder


def check_l1_forward():
    a = _adder()
    for kind in ("fp32", "fp64"):
        yield _compile(a._l1_forward_kernel, dict(x_ptr=kind, w_ptr=kind, y_ptr=kind), GEOMETRY,
                       dict(KH=3, KW=3, BP=a.BLOCK_P, BO=a.BLOCK_O))


def check_input_grads():
    a = _adder()
    scalars = dict(GEOMETRY, VW="i32")
    yield _compile(a._input_grad_kernel, dict(x_ptr="fp32", idx_ptr="fp32", w_ptr="fp32", wi_ptr="fp32",
                                               g_ptr="fp32", gx_ptr="fp32"), scalars,
                   dict(KH=3, KW=3, TABLE=False, BQ=a.BLOCK_Q, BO=a.BLOCK_O_GRAD))
    yield _compile(a._input_grad_kernel, dict(x_ptr="i32", idx_ptr="i32", w_ptr="fp32", wi_ptr="i32", g_ptr="fp32",
                                               gx_ptr="fp32"), scalars,
                   dict(KH=3, KW=3, TABLE=True, BQ=a.BLOCK_Q, BO=a.BLOCK_O_GRAD))


def check_table_kernels():
    a = _adder()
    scalars = dict(GEOMETRY, VW="i32", PAD="i32")
    for out in ("fp32", "fp64"):
        yield _compile(a._table_forward_kernel, dict(idx_ptr="i32", wi_ptr="i32", m_ptr="i64", y_ptr=out), scalars,
                       dict(KH=3, KW=3, BP=a.BLOCK_P, BO=a.BLOCK_O))
    yield _compile(a._table_weight_grad_kernel, dict(idx_ptr="i32", wi_ptr="i32", m_ptr="fp32", g_ptr="fp32",
                                                     gw_ptr="fp32"), dict(scalars, PIXELS="i32"),
                   dict(KH=3, KW=3, BP=a.BLOCK_P, BO=a.BLOCK_O))


def check_mult_kernels():
    from dnn.kernels.triton import mult
    scalars = dict(M="i32", K="i32", O="i32", NB="i32", SHIFT="i32")
    blocks = dict(BM=mult.BLOCK_M, BO=mult.BLOCK_O)
    for table, wide in (("fp32", False), ("fp64", True)):
        yield _compile(mult._accumulate_kernel, dict(ix_ptr="fp32", iw_ptr="i64", t_ptr=table, out_ptr="fp64"),
                       scalars, dict(blocks, WIDE=wide))
    grads = dict(ix_ptr="fp32", iw_ptr="i64", g_ptr="fp32", t_ptr="fp32", out_ptr="fp32")
    yield _compile(mult._grad_a_kernel, grads, scalars, blocks)
    yield _compile(mult._grad_b_kernel, grads, dict(scalars, ROWS="i32"), blocks)


def check_generated_netlist_kernels():
    from circuits.generators import ripple_carry_adder, signed_array_multiplier
    from dnn.arith.netlist_adder import NetlistAdder
    from dnn.arith.netlist_multiplier import NetlistMultiplier
    from dnn.kernels.triton import netlist
    from simulator.program import compile_netlist
    lanes = compile_netlist(ripple_carry_adder(8, "ama2", 3))
    module = netlist.load_module(netlist.kernel_source(lanes, netlist.operand_slots([8, 8]), lanes.output_slots),
                                 "circuit")
    yield _compile(module.circuit, dict(v0_ptr="i64", v1_ptr="i64", out_ptr="i64"), dict(n="i32"),
                   dict(WORDS=netlist.WORDS))
    wide = NetlistAdder(ripple_carry_adder(32, "ama2", 8)).program  # the widest adder layer: the most live signals
    module = netlist.load_module(netlist.adder_kernel_source(wide, 32), "adder")
    yield _compile(module.adder_sums, dict(x_ptr="i32", w_ptr="i32", y_ptr="i64"), GEOMETRY,
                   dict(KH=3, KW=3, BP=netlist.ADDER_BLOCK_P, BO=netlist.ADDER_BLOCK_O))
    product = NetlistMultiplier(signed_array_multiplier(8, 8), mode="signed").program
    module = netlist.load_module(netlist.mult_kernel_source(product, [8, 8], True), "mult")
    yield _compile(module.product_sums, dict(x_ptr="i64", w_ptr="i64", y_ptr="i64"), dict(M="i32", K="i32", O="i32"),
                   dict(BM=netlist.ADDER_BLOCK_P, BO=netlist.ADDER_BLOCK_O))


def check_generated_accumulator_kernel():
    from dnn.arith.accumulate import Accumulator
    from dnn.kernels.triton import accum
    acc = Accumulator("rca:32:cell=maj:k=8")  # a wide accumulator: 32 running bits live across the loop
    program = acc._program
    module = accum.load_module(accum.kernel_source(program, acc.a_inputs, acc.b_inputs, program.output_slots),
                               "accum")
    yield _compile(module.accumulate, dict(cols_ptr="i64", widx_ptr="i64", pat_ptr="i64", out_ptr="i64"),
                   dict(M="i32", O="i32", K="i32", VX="i32"), dict(BM=accum.BLOCK_M, BO=accum.BLOCK_O))


CHECKS = {name[len("check_"):]: fn for name, fn in sorted(globals().items()) if name.startswith("check_")}


def resource_usage(cubin):
    """'REG:n STACK:n ...' lines of cuobjdump for a cubin (registers per thread, spill stack), or '' without it."""
    import triton
    tool = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        try:
            text = subprocess.run([str(tool), "-res-usage", f.name], capture_output=True, text=True, timeout=60).stdout
        except OSError:
            return ""
    return " ".join(re.findall(r"REG:\d+ STACK:\d+", text))


def main(names):
    """Compile the named groups of kernels (all by default); print {name: {"error": None or traceback, "usage":
    [cuobjdump's registers and spill stack per kernel]}} as JSON."""
    results = {}
    for name in names or CHECKS:
        start = time.perf_counter()
        try:
            usage = [resource_usage(cubin) for cubin in CHECKS[name]()]
            results[name] = {"error": None, "usage": usage}
            print(f"{name}: {time.perf_counter() - start:.1f} s, {usage}", file=sys.stderr)
        except Exception:  # noqa: BLE001 - every failure is reported, with its traceback, to the test of its name
            results[name] = {"error": traceback.format_exc(), "usage": []}
    print(json.dumps(results))


if __name__ == "__main__":
    os.environ["TRITON_INTERPRET"] = "0"  # before triton is imported: real JIT functions, not interpreted ones
    main(sys.argv[1:])
