"""Error metrics of a circuit or a LUT with the reference chosen the way `axnet metrics` chooses it.

A circuit that fits a table (and is not sampled) is simulated to its LUT and measured exhaustively; a wider one, or
one given `samples`, is streamed without a table. The reference, when not given, is guessed from the shape for a
circuit (mul for two operands of n and m bits with n + m outputs, else add) and from the LUT's values or recorded
reference for a LUT file (`lutgen.reference`).
"""
from __future__ import annotations

from lutgen.lut import MAX_LUT_BITS, build_lut
from lutgen.metrics import error_metrics, stream_metrics
from lutgen.operands import group_operands
from lutgen.reference import guess_from_widths, guess_reference

__all__ = ["circuit_metrics", "lut_metrics", "patterns_to_measure"]


def patterns_to_measure(netlist, samples=None):
    """How many input patterns `circuit_metrics` evaluates (for a progress bar)."""
    return samples or (1 << len(netlist.inputs))


def circuit_metrics(netlist, widths=None, reference=None, signed=False, samples=None, seed=0, overflow="include",
                    progress=None):
    """(reference, why, mode, metrics) of a circuit; `progress(n)` is called with the patterns done."""
    ops = group_operands(netlist.inputs, widths)
    if reference:
        why = "given"
    else:
        reference, why = guess_from_widths([(op.name, op.width) for op in ops], len(netlist.outputs))
    if samples is None and len(netlist.inputs) <= MAX_LUT_BITS:
        lut = build_lut(netlist, widths=widths, signed=signed, progress=progress)
        return reference, why, "exhaustive", error_metrics(lut, reference, overflow=overflow)
    result = stream_metrics(netlist, ops, reference, signed=signed, progress=progress, samples=samples, seed=seed,
                            overflow=overflow)
    mode = f"{samples} random samples (seed {seed})" if samples else "exhaustive, streamed"
    return reference, why, mode, result


def lut_metrics(lut, reference=None, overflow="include"):
    """(reference, why, mode, metrics) of a LUT read from a file."""
    reference, why = (reference, "given") if reference else guess_reference(lut)
    return reference, why, "exhaustive (LUT)", error_metrics(lut, reference, overflow=overflow)
