"""How a circuit's primary inputs form operands.

An operand is a named group of input bits, LSB first. Groups come from the `.inputs` names (`a[3]`, `A[3]`,
`IN1[3]`, `a3`, `cin`) in order of first appearance, or by position from explicit widths (`--operands 8,8,1`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from circuits.errors import AxnetError

_BRACKET = re.compile(r"^(.*)\[(\d+)\]$")
_TRAILING_DIGITS = re.compile(r"^(.*?[A-Za-z_])(\d+)$")


@dataclass(frozen=True)
class Operand:
    """A named operand: `bits[j]` is the position in `.inputs` of the operand's bit j (LSB first)."""

    name: str
    bits: tuple[int, ...]

    @property
    def width(self):
        return len(self.bits)


def _split_name(name):
    """('a', 3) for 'a[3]' or 'a3'; (name, None) for a name with no index."""
    m = _BRACKET.match(name)
    if m:
        return m.group(1), int(m.group(2))
    m = _TRAILING_DIGITS.match(name)
    if m:
        return m.group(1), int(m.group(2))
    return name, None


def operands_from_names(inputs):
    """Group input names into operands by their base name; indices must be exactly 0..w-1 in each group."""
    groups, order = {}, []
    for pos, name in enumerate(inputs):
        base, index = _split_name(name)
        if index is None:
            base, index = name, 0
            if base in groups:
                raise AxnetError(f"input '{name}' appears twice in .inputs")
        if base not in groups:
            groups[base] = {}
            order.append(base)
        if index in groups[base]:
            raise AxnetError(f"input '{name}' repeats bit {index} of operand '{base}'")
        groups[base][index] = pos
    operands = []
    for base in order:
        idx = groups[base]
        if sorted(idx) != list(range(len(idx))):
            raise AxnetError(f"operand '{base}' has bits {sorted(idx)}, not 0..{len(idx) - 1}; "
                             "give the widths with --operands")
        operands.append(Operand(base, tuple(idx[j] for j in range(len(idx)))))
    return operands


def operands_from_widths(inputs, widths, names=None):
    """Consecutive groups of `.inputs` by position, LSB first; the widths must add up to the number of inputs."""
    widths = [int(w) for w in widths]
    if any(w <= 0 for w in widths):
        raise AxnetError(f"--operands {','.join(map(str, widths))}: every width must be positive")
    if sum(widths) != len(inputs):
        raise AxnetError(f"--operands {','.join(map(str, widths))} adds up to {sum(widths)} bits "
                         f"but the circuit has {len(inputs)} inputs")
    default = ["a", "b", "c", "d", "e", "f", "g", "h"]
    if names is None:
        names = default[: len(widths)] if len(widths) <= len(default) else [f"x{i}" for i in range(len(widths))]
    operands, start = [], 0
    for name, w in zip(names, widths):
        operands.append(Operand(name, tuple(range(start, start + w))))
        start += w
    return operands


def group_operands(inputs, widths=None):
    """Operands for a circuit: from widths when given, else from the input names."""
    if widths:
        return operands_from_widths(inputs, widths)
    return operands_from_names(inputs)


def parse_widths(text):
    """'8,8,1' -> [8, 8, 1]; a one-line AxnetError naming --operands for an empty field ('8,,8'), a non-number or
    a width below 1."""
    fields = [t.strip() for t in text.split(",")]
    if not text.strip():
        raise AxnetError(f"--operands '{text}': no widths given")
    if "" in fields:
        raise AxnetError(f"--operands '{text}': empty width at position {fields.index('') + 1}; expected "
                         "comma-separated widths such as 8,8 or 8,8,1")
    if not all(t.isascii() and t.isdigit() for t in fields):
        raise AxnetError(f"--operands '{text}': expected comma-separated widths such as 8,8 or 8,8,1")
    widths = [int(t) for t in fields]
    if any(w < 1 for w in widths):
        raise AxnetError(f"--operands '{text}': every width must be at least 1")
    return widths
