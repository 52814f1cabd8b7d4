"""The netlist engine in torch bitwise operations on int64 tensors, so circuits run on any torch device (CUDA too).

Same conventions and results as `simulator.engine` (which the tests compare it with): a signal is an int64 tensor
of words, bit t of word w being pattern 64 w + t (exhaustive planes) or lane 64 w + t (per-lane evaluation); the
steps of the circuit's program (`simulator.program`) run as `&`, `|`, `^`, `~` on whole tensors. torch is imported
here only, so the rest of the simulator never needs it.
"""
from __future__ import annotations

import torch

from circuits.errors import AxnetError
from simulator.engine import operand_widths
from simulator.program import Program, compile_netlist

_LOW_WORDS = [sum(1 << t for t in range(64) if (t >> i) & 1) for i in range(6)]
_CHUNK_LANES = 1 << 20  # lanes per pass, so the (words, 64) bit views stay a few MiB


def _signed(word):
    """A 64-bit pattern as the int64 value with the same bits."""
    return word - (1 << 64) if word >= 1 << 63 else word


def run_program(program, inputs, outputs=None, broadcast=False):
    """Output planes (list of tensors) of a program given its input planes (list of int64 tensors, same shape).

    `outputs` lists the slots to return (default the program's outputs). With `broadcast`, the inputs need only
    broadcast together and constants are one-element tensors; otherwise constants take the first input's shape.
    """
    like = inputs[0] if inputs else torch.zeros(1, dtype=torch.int64)
    slots = list(inputs) + [None] * (program.n_slots - len(inputs))
    for op, dst, *src in program.steps:
        if op == "and":
            slots[dst] = slots[src[0]] & slots[src[1]]
        elif op == "or":
            slots[dst] = slots[src[0]] | slots[src[1]]
        elif op == "xor":
            slots[dst] = slots[src[0]] ^ slots[src[1]]
        elif op == "not":
            slots[dst] = ~slots[src[0]]
        elif op == "copy":
            slots[dst] = slots[src[0]]
        elif broadcast:
            slots[dst] = torch.full((1,), 0 if op == "zero" else -1, dtype=torch.int64, device=like.device)
        else:
            slots[dst] = torch.full_like(like, 0 if op == "zero" else -1)
    return [slots[s] for s in (program.output_slots if outputs is None else outputs)]


def exhaustive_planes(netlist, start_word, words, device="cpu"):
    """Output planes (n_outputs x words, int64 with the bits of uint64 planes) of exhaustive words
    start_word .. start_word + words - 1."""
    program = netlist if isinstance(netlist, Program) else compile_netlist(netlist)
    index = torch.arange(start_word, start_word + words, dtype=torch.int64, device=device)
    inputs = []
    for i in range(program.n_inputs):
        if i < 6:
            inputs.append(torch.full((words,), _signed(_LOW_WORDS[i]), dtype=torch.int64, device=device))
        else:
            inputs.append(-((index >> (i - 6)) & 1))
    outs = run_program(program, inputs)
    if not outs:
        return torch.zeros((0, words), dtype=torch.int64, device=device)
    return torch.stack([o.expand(words) for o in outs])


def _lanes_to_planes(pattern, n_inputs):
    """Planes (list of n_inputs tensors of words) of packed patterns whose count is a multiple of 64."""
    bits = pattern.view(-1, 64)
    shifts = torch.arange(64, dtype=torch.int64, device=pattern.device)
    return [(((bits >> i) & 1) << shifts).sum(dim=1) for i in range(n_inputs)]


def _planes_to_lanes(planes, n):
    """Packed word per lane from output planes (list of tensors of words)."""
    if not planes:
        return None
    shifts = torch.arange(64, dtype=torch.int64, device=planes[0].device)
    words = torch.zeros((planes[0].numel(), 64), dtype=torch.int64, device=planes[0].device)
    for k, plane in enumerate(planes):
        words |= ((plane.unsqueeze(1) >> shifts) & 1) << k
    return words.view(-1)[:n]


def evaluate_operands(netlist, operand_values, widths=None):
    """Output word per lane (int64 tensor on the operands' device) when operand k takes operand_values[k][lane];
    operands are consecutive input groups (`widths`, default an even split), low widths[k] bits of each value."""
    program = netlist if isinstance(netlist, Program) else compile_netlist(netlist)
    if program.n_inputs > 64 or program.n_outputs > 64:
        raise AxnetError(f"per-lane evaluation packs at most 64 inputs and 64 outputs per lane; the circuit has "
                         f"{program.n_inputs} inputs and {program.n_outputs} outputs")
    widths = operand_widths(program.n_inputs, len(operand_values), widths)
    values = [torch.as_tensor(v).reshape(-1).to(torch.int64) for v in operand_values]
    n = values[0].numel()
    if any(v.numel() != n for v in values):
        raise AxnetError(f"operand arrays differ in length: {[v.numel() for v in values]}")
    pattern = torch.zeros(n, dtype=torch.int64, device=values[0].device)
    off = 0
    for v, w in zip(values, widths):
        pattern |= (v & ((1 << w) - 1 if w < 64 else -1)) << off
        off += w
    return evaluate_patterns(program, pattern)


def evaluate_patterns(netlist, patterns):
    """Output word per lane for the packed input pattern per lane (int64 tensor, any device)."""
    program = netlist if isinstance(netlist, Program) else compile_netlist(netlist)
    patterns = torch.as_tensor(patterns).reshape(-1).to(torch.int64)
    n = patterns.numel()
    out = torch.zeros(n, dtype=torch.int64, device=patterns.device)
    for lo in range(0, n, _CHUNK_LANES):
        part = patterns[lo:lo + _CHUNK_LANES]
        m = part.numel()
        padded = torch.zeros(-(-m // 64) * 64, dtype=torch.int64, device=part.device)
        padded[:m] = part
        words = _planes_to_lanes(run_program(program, _lanes_to_planes(padded, program.n_inputs)), m)
        if words is not None:
            out[lo:lo + m] = words
    return out
