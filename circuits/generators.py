"""Netlist generators for exact and approximate adders and exact unsigned and signed array multipliers.

Every adder has inputs `a[0..w-1]`, `b[0..w-1]` (then `cin` when it has a carry-in) and outputs `s[0..w]`, where
`s[w]` is the carry out, so `evaluate_int(A + (B << w))` is the (approximate) sum A + B. The multiplier has inputs
`a[0..wa-1]`, `b[0..wb-1]` and outputs `p[0..wa+wb-1]`. Internal nets get plain names (`c[i]` carries, `pp...`
partial products) so a written BLIF stays readable.
"""
from __future__ import annotations

import re

from circuits.errors import AxnetError
from circuits.netlist import Netlist, Node

# Covers of the gates the generators use (one character per fanin).
XOR2 = ("10", "01")
XOR3 = ("100", "010", "001", "111")
MAJ3 = ("11-", "1-1", "-11")
AND2 = ("11",)
OR2 = ("1-", "-1")


class _Builder:
    """Collects nodes under unique net names and turns them into a Netlist with the requested output names."""

    def __init__(self, inputs):
        self.inputs = list(inputs)
        self.nodes: dict[str, Node] = {}
        self._const0 = None

    def gate(self, name, fanins, cubes, polarity=1):
        """Add node `name` = cover over `fanins`; returns the net name."""
        if name in self.nodes or name in self.inputs:
            raise AssertionError(f"generator bug: net {name} driven twice")
        self.nodes[name] = Node(name, tuple(fanins), tuple(cubes), polarity)
        return name

    def const0(self):
        """The shared constant-0 net."""
        if self._const0 is None:
            self._const0 = self.gate("const0", (), ())
        return self._const0

    def full_adder(self, a, b, c, s, cout):
        """Exact full adder: s = a ^ b ^ c, cout = MAJ(a, b, c)."""
        return self.gate(s, (a, b, c), XOR3), self.gate(cout, (a, b, c), MAJ3)

    def half_adder(self, a, b, s, cout):
        """Exact half adder: s = a ^ b, cout = a & b."""
        return self.gate(s, (a, b), XOR2), self.gate(cout, (a, b), AND2)

    def instantiate(self, cell, actual_inputs, actual_outputs, prefix):
        """Copy the cell netlist in: its inputs read `actual_inputs`, its outputs drive `actual_outputs`.

        Internal cell nets become `prefix + name`. A cell output that is one of the cell's inputs (a wire such as
        AMA5's S = B), or that repeats an earlier output, becomes a buffer.
        """
        rename = dict(zip(cell.inputs, actual_inputs))
        buffers = []
        for out, actual in zip(cell.outputs, actual_outputs):
            if out in cell.nodes and out not in rename:
                rename[out] = actual
            else:
                buffers.append((actual, out))
        for name in cell.nodes:
            rename.setdefault(name, prefix + name)
        for name in cell.topological_order():
            node = cell.nodes[name]
            self.gate(rename[name], [rename[f] for f in node.fanins], node.cubes, node.polarity)
        for actual, out in buffers:
            self.gate(actual, (rename[out],), ("1",))

    def netlist(self, name, outputs):
        """A checked Netlist; `outputs` lists (output name, net carrying it); a net is renamed to its output name
        where it can be, else the output gets a buffer."""
        rename, buffers = {}, []
        driven_outputs = {o for o, _ in outputs}
        for out, net in outputs:
            if net == out:
                continue
            if (net in self.nodes and net not in rename and net not in driven_outputs
                    and out not in self.nodes and out not in self.inputs):
                rename[net] = out
            else:
                buffers.append((out, net))
        if rename:
            self.nodes = {rename.get(n, n): Node(rename.get(n, n), tuple(rename.get(f, f) for f in node.fanins),
                                                 node.cubes, node.polarity) for n, node in self.nodes.items()}
        for out, net in buffers:
            self.gate(out, (rename.get(net, net),), ("1",))
        names = [o for o, _ in outputs]
        self._prune(names)
        return Netlist(name, self.inputs, names, self.nodes).check()

    def _prune(self, outputs):
        """Drop nodes no output depends on (e.g. the constant carry of a cell that ignores its carry in)."""
        live, stack = set(), [o for o in outputs if o in self.nodes]
        while stack:
            net = stack.pop()
            if net in live:
                continue
            live.add(net)
            stack += [f for f in self.nodes[net].fanins if f in self.nodes]
        self.nodes = {name: node for name, node in self.nodes.items() if name in live}


def _check_width(width, what="width"):
    if not isinstance(width, int) or isinstance(width, bool) or width < 1:
        raise AxnetError(f"{what} must be a positive integer, got {width!r}")


def _check_approx_bits(approx_bits, width):
    if not isinstance(approx_bits, int) or isinstance(approx_bits, bool) or not 0 <= approx_bits <= width:
        raise AxnetError(f"approx_bits must be an integer in 0..{width} for a {width}-bit adder, got {approx_bits!r}")


def _adder_inputs(width, carry_in=False):
    return [f"a[{i}]" for i in range(width)] + [f"b[{i}]" for i in range(width)] + (["cin"] if carry_in else [])


def _exact_ripple(builder, width, start, carry):
    """Exact full adders for bit positions start..width-1 from carry net `carry` (None = constant 0).

    Returns the (sum net) list for those positions and the carry-out net.
    """
    sums = []
    for i in range(start, width):
        a, b = f"a[{i}]", f"b[{i}]"
        if carry is None:
            s, carry = builder.half_adder(a, b, f"s[{i}]", f"c[{i + 1}]")
        else:
            s, carry = builder.full_adder(a, b, carry, f"s[{i}]", f"c[{i + 1}]")
        sums.append(s)
    return sums, carry


def _cell_netlist(cell):
    """The cell as a 3-input 2-output Netlist (inputs a b cin, outputs s cout), from anything the library takes."""
    from circuits import library  # imported here: the library reads BLIF files, which the generators do not need

    return library.cell_netlist(cell)


def ripple_carry_adder(width, cell="exact", approx_bits=0, carry_in=False, name=None):
    """A width-bit ripple-carry adder whose lowest `approx_bits` cells are `cell` and the rest exact full adders.

    `cell` is a bundled cell name, a cell BLIF path, or an 8-row truth-table string (anything
    `circuits.library.cell_truth_table` takes); its netlist is instantiated once per approximate bit position.
    Without a carry-in the lowest cell reads constant 0 as its carry in (an exact lowest bit is then a half adder).
    """
    _check_width(width)
    _check_approx_bits(approx_bits, width)
    cell_nl = _cell_netlist(cell)  # checked even when no cell is used, so a mistyped --cell is never ignored
    builder = _Builder(_adder_inputs(width, carry_in))
    carry = "cin" if carry_in else None
    sums = []
    if approx_bits:
        for i in range(approx_bits):
            cin = carry if carry is not None else builder.const0()
            builder.instantiate(cell_nl, [f"a[{i}]", f"b[{i}]", cin], [f"s[{i}]", f"c[{i + 1}]"], f"cell{i}/")
            sums.append(f"s[{i}]")
            carry = f"c[{i + 1}]"
    high, carry = _exact_ripple(builder, width, approx_bits, carry)
    sums += high
    if name is None:
        name = f"rca{width}" + (f"_{_cell_label(cell)}_k{approx_bits}" if approx_bits else "")
    return builder.netlist(name, [(f"s[{i}]", n) for i, n in enumerate(sums)] + [(f"s[{width}]", carry)])


def _cell_label(cell):
    """Short model-name fragment for a cell spec, safe to write as a BLIF model name."""
    from pathlib import Path

    if isinstance(cell, Netlist):
        text = cell.name
    elif isinstance(cell, (list, tuple)):
        text = "custom"
    elif isinstance(cell, Path) or str(cell).endswith(".blif") or "/" in str(cell):
        text = Path(cell).stem
    else:
        text = re.sub(r"[\s,;]+", "", str(cell)).lower()
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text) or "cell"


def loa_adder(width, approx_bits, carry_variant="and", name=None):
    """Lower-part OR adder: low bits s_i = a_i | b_i; the carry into the exact upper part is a_{l-1} & b_{l-1}.

    `carry_variant="zero"` feeds no carry into the upper part instead.
    """
    _check_width(width)
    _check_approx_bits(approx_bits, width)
    if carry_variant not in ("and", "zero"):
        raise AxnetError(f"carry_variant must be 'and' or 'zero', got {carry_variant!r}")
    builder = _Builder(_adder_inputs(width))
    sums = [builder.gate(f"s[{i}]", (f"a[{i}]", f"b[{i}]"), OR2) for i in range(approx_bits)]
    carry = None
    if approx_bits and carry_variant == "and":
        low = approx_bits - 1
        carry = builder.gate(f"c[{approx_bits}]", (f"a[{low}]", f"b[{low}]"), AND2)
    high, carry = _exact_ripple(builder, width, approx_bits, carry)
    if carry is None:
        carry = builder.const0()
    return builder.netlist(name or f"loa{width}_k{approx_bits}",
                           [(f"s[{i}]", n) for i, n in enumerate(sums + high)] + [(f"s[{width}]", carry)])


def eta1_adder(width, approx_bits, name=None):
    """Error-tolerant adder I: the low part XORs from its top bit down until a position has both bits 1; from
    there downwards every sum bit is 1. No carry goes from the low part into the exact upper part.

    Built as a flag chain from the top of the low part: f_i = f_{i+1} | (a_i & b_i), s_i = (a_i ^ b_i) | f_i.
    """
    _check_width(width)
    _check_approx_bits(approx_bits, width)
    builder = _Builder(_adder_inputs(width))
    sums = [None] * approx_bits
    flag = None
    for i in reversed(range(approx_bits)):
        a, b = f"a[{i}]", f"b[{i}]"
        if flag is None:
            flag = builder.gate(f"f[{i}]", (a, b), AND2)
        else:
            flag = builder.gate(f"f[{i}]", (a, b, flag), ("11-", "--1"))
        sums[i] = builder.gate(f"s[{i}]", (a, b, flag), ("10-", "01-", "--1"))
    high, carry = _exact_ripple(builder, width, approx_bits, None)
    if carry is None:
        carry = builder.const0()
    return builder.netlist(name or f"eta1_{width}_k{approx_bits}",
                           [(f"s[{i}]", n) for i, n in enumerate(sums + high)] + [(f"s[{width}]", carry)])


def truncated_adder(width, approx_bits, name=None):
    """Truncated adder: the low `approx_bits` sum bits are constant 0 and pass no carry; the rest add exactly."""
    _check_width(width)
    _check_approx_bits(approx_bits, width)
    builder = _Builder(_adder_inputs(width))
    sums = [builder.gate(f"s[{i}]", (), ()) for i in range(approx_bits)]
    high, carry = _exact_ripple(builder, width, approx_bits, None)
    if carry is None:
        carry = builder.const0()
    return builder.netlist(name or f"trunc{width}_k{approx_bits}",
                           [(f"s[{i}]", n) for i, n in enumerate(sums + high)] + [(f"s[{width}]", carry)])


def subtractor(width, name=None):
    """Exact width-bit subtractor: outputs s[0..w] hold A - B as a (w+1)-bit two's-complement word.

    Built as A + NOT B + 1 with a full-adder ripple; s[w] = NOT carry-out is the sign (1 exactly when A < B).
    """
    _check_width(width)
    builder = _Builder(_adder_inputs(width))
    carry = None
    sums = []
    for i in range(width):
        a, b = f"a[{i}]", f"b[{i}]"
        if carry is None:  # carry in is 1: s = a XOR b, carry = a | NOT b
            s = builder.gate(f"s[{i}]", (a, b), XOR2)
            carry = builder.gate(f"c[{i + 1}]", (a, b), ("1-", "-0"))
        else:  # full adder on (a, NOT b, carry)
            s = builder.gate(f"s[{i}]", (a, b, carry), ("110", "000", "011", "101"))
            carry = builder.gate(f"c[{i + 1}]", (a, b, carry), ("10-", "1-1", "-01"))
        sums.append(s)
    sign = builder.gate("sign", (carry,), ("0",))
    return builder.netlist(name or f"sub{width}",
                           [(f"s[{i}]", n) for i, n in enumerate(sums)] + [(f"s[{width}]", sign)])


def array_multiplier(width_a, width_b, name=None):
    """Exact unsigned array multiplier: partial products a_j & b_i, accumulated row by row with ripple adders.

    Inputs `a[0..wa-1]`, `b[0..wb-1]`; outputs `p[0..wa+wb-1]` with P = A * B.
    """
    _check_width(width_a, "width_a")
    _check_width(width_b, "width_b")
    inputs = [f"a[{j}]" for j in range(width_a)] + [f"b[{i}]" for i in range(width_b)]
    builder = _Builder(inputs)

    def pp(i, j):
        return builder.gate(f"pp{i}_{j}", (f"a[{j}]", f"b[{i}]"), AND2)

    # acc[k] is the net holding bit k of the running sum of rows 0..i; bits above len(acc) are 0.
    acc = [pp(0, j) for j in range(width_a)]
    for i in range(1, width_b):
        carry = None
        for j in range(width_a):
            k = i + j
            x = pp(i, j)
            if k < len(acc):
                if carry is None:
                    acc[k], carry = builder.half_adder(acc[k], x, f"r{i}_{k}", f"rc{i}_{k + 1}")
                else:
                    acc[k], carry = builder.full_adder(acc[k], x, carry, f"r{i}_{k}", f"rc{i}_{k + 1}")
            elif carry is None:  # only when width_a == 1: bit k is new and nothing carries into it
                acc.append(x)
            else:
                s, carry = builder.half_adder(x, carry, f"r{i}_{k}", f"rc{i}_{k + 1}")
                acc.append(s)
        if carry is not None:
            acc.append(carry)
    total = width_a + width_b
    while len(acc) < total:
        acc.append(builder.const0())
    return builder.netlist(name or f"mul{width_a}x{width_b}", [(f"p[{k}]", acc[k]) for k in range(total)])


def signed_array_multiplier(width_a, width_b, name=None):
    """Exact two's-complement array multiplier (Baugh-Wooley): the same inputs and outputs as `array_multiplier`,
    with A, B and P = A * B read as signed.

    A*B = a_{n-1}b_{m-1}2^{n+m-2} + sum a_j b_i 2^{i+j} (j < n-1, i < m-1) minus the sign rows; each minus x*2^k
    becomes NOT(x)*2^k - 2^k, so the rows mixing one sign bit with the other operand's magnitude bits are NANDs and
    all the -2^k fold into one constant, 2^{n+m-1} + 2^{n-1} + 2^{m-1} modulo 2^{n+m}, added as a row of 1s.
    """
    _check_width(width_a, "width_a")
    _check_width(width_b, "width_b")
    if min(width_a, width_b) < 2:
        raise AxnetError(f"a signed multiplier needs operands of at least 2 bits (a sign and a magnitude bit), "
                         f"not {width_a}x{width_b}")
    n, m = width_a, width_b
    total = n + m
    builder = _Builder([f"a[{j}]" for j in range(n)] + [f"b[{i}]" for i in range(m)])
    rows = []
    for i in range(m):
        row = {}
        for j in range(n):
            plain = (j < n - 1 and i < m - 1) or (j == n - 1 and i == m - 1)
            row[i + j] = builder.gate(f"pp{i}_{j}", (f"a[{j}]", f"b[{i}]"), AND2 if plain else ("0-", "-0"))
        rows.append(row)
    constant = ((1 << (total - 1)) + (1 << (n - 1)) + (1 << (m - 1))) % (1 << total)
    one = builder.gate("const1", (), ("",))
    rows.append({k: one for k in range(total) if (constant >> k) & 1})
    acc = {}
    for r, row in enumerate(rows):
        acc = _add_columns(builder, acc, row, total, f"r{r}_")
    return builder.netlist(name or f"smul{n}x{m}",
                           [(f"p[{k}]", acc.get(k) or builder.const0()) for k in range(total)])


def _add_columns(builder, acc, row, total, tag):
    """acc + row modulo 2^total with half and full adders; both map a column to its net, a missing column is 0."""
    out, carry = {}, None
    for k in range(total):
        bits = [net for net in (acc.get(k), row.get(k), carry) if net is not None]
        carry = None
        if len(bits) == 1:
            out[k] = bits[0]
        elif len(bits) == 2:
            out[k], carry = builder.half_adder(*bits, f"{tag}s{k}", f"{tag}c{k + 1}")
        elif len(bits) == 3:
            out[k], carry = builder.full_adder(*bits, f"{tag}s{k}", f"{tag}c{k + 1}")
    return out

