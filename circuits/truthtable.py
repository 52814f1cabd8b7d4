"""Truth tables to netlists (covers minimised with espresso through pyeda) and netlists to truth tables.

Row order everywhere in this module is the project's pattern convention: row r is the input pattern in which input
i (in `inputs` order) has the value of bit i of r. So for inputs (a, b, cin) row 1 is a=1, b=0, cin=0. (The cell
tables of `circuits.library` list rows with A as the most significant bit instead; the library converts.)
"""
from __future__ import annotations

import numpy as np

from circuits.errors import AxnetError
from circuits.netlist import Netlist, Node

# pyeda's espresso encodes an input literal as 1 (0), 2 (1), 3 (don't care); an output as 0, 1, 2 (don't care).
_IN_CHAR = {1: "0", 2: "1", 3: "-"}
MAX_TABLE_INPUTS = 20


def _row_values(row, n_outputs, r):
    """A row as a tuple of per-output values 0, 1 or '-': from an int output word or a sequence."""
    if isinstance(row, int) and not isinstance(row, bool):
        if not 0 <= row < (1 << n_outputs):
            raise AxnetError(f"truth-table row {r}: output word {row} does not fit {n_outputs} outputs")
        return tuple((row >> k) & 1 for k in range(n_outputs))
    values = tuple(row)
    if len(values) != n_outputs:
        raise AxnetError(f"truth-table row {r} has {len(values)} values, expected {n_outputs}")
    out = []
    for v in values:
        if v in (0, 1, "0", "1"):
            out.append(int(v))
        elif v in ("-", None):
            out.append("-")
        else:
            raise AxnetError(f"truth-table row {r}: value {v!r} is not 0, 1 or '-'")
    return tuple(out)


def espresso_cover(n_inputs, rows):
    """Minimised multi-output cover of a table: list of (input cube over '01-', tuple of 0/1 per output).

    `rows[r]` is a tuple of 0, 1 or '-' per output for input pattern r (input i = bit i of r). Runs espresso via
    pyeda on the on-set, don't-care set and off-set, so don't cares may be used either way.
    """
    from pyeda.boolalg.espresso import DTYPE, FTYPE, RTYPE, espresso, set_config

    n_outputs = len(rows[0]) if rows else 0
    if n_inputs == 0:  # espresso needs at least one input; the single row is its own cover
        ones = tuple(int(v == 1) for v in rows[0])
        return [("", ones)] if any(ones) else []
    code = {0: 0, 1: 1, "-": 2}
    cover = set()
    for r, values in enumerate(rows):
        invec = tuple(2 if (r >> i) & 1 else 1 for i in range(n_inputs))
        cover.add((invec, tuple(code[v] for v in values)))
    set_config(single_expand=False, remove_essential=True, force_irredundant=True, unwrap_onset=True,
               recompute_onset=False, use_super_gasp=False)
    result = espresso(n_inputs, n_outputs, cover, intype=FTYPE | DTYPE | RTYPE)
    cubes = [("".join(_IN_CHAR[c] for c in invec), tuple(outvec)) for invec, outvec in result]
    return sorted(cubes)


def _node_from_cubes(name, inputs, cubes):
    """A node over only the inputs its cubes use (a constant node when none)."""
    used = [i for i in range(len(inputs)) if any(c[i] != "-" for c in cubes)]
    if not used:
        return Node(name, (), ("",) if cubes else (), 1)
    return Node(name, tuple(inputs[i] for i in used), tuple("".join(c[i] for i in used) for c in cubes), 1)


def netlist_from_truth_table(inputs, outputs, rows, name="table"):
    """A Netlist with one espresso-minimised node per output, from a complete truth table.

    `rows` has 2**len(inputs) entries in pattern order (row r: input i = bit i of r); each is an int output word
    (output k = bit k) or a sequence of 0, 1 or '-' (don't care) per output. Constant outputs become constant
    nodes; other nodes read only the inputs their cubes use.
    """
    inputs, outputs = list(inputs), list(outputs)
    if len(inputs) > MAX_TABLE_INPUTS:
        raise AxnetError(f"truth table with {len(inputs)} inputs is too large (at most {MAX_TABLE_INPUTS})")
    if len(set(inputs) | set(outputs)) != len(inputs) + len(outputs):
        raise AxnetError("truth table: input and output names must all be different")
    rows = list(rows)
    if len(rows) != 1 << len(inputs):
        raise AxnetError(f"truth table has {len(rows)} rows, expected 2**{len(inputs)} = {1 << len(inputs)}")
    values = [_row_values(row, len(outputs), r) for r, row in enumerate(rows)]
    nodes = {}
    varying = []
    for k, out in enumerate(outputs):
        column = {v[k] for v in values} - {"-"}
        if column == {1}:
            nodes[out] = Node(out, (), ("",), 1)
        elif column <= {0}:
            nodes[out] = Node(out, (), (), 1)
        else:
            varying.append(k)
    if varying:
        cover = espresso_cover(len(inputs), [tuple(v[k] for k in varying) for v in values])
        for j, k in enumerate(varying):
            cubes = [cube for cube, outvec in cover if outvec[j] == 1]
            nodes[outputs[k]] = _node_from_cubes(outputs[k], inputs, cubes)
    return Netlist(name, inputs, outputs, {o: nodes[o] for o in outputs}).check()


def _node_bits(node, values, full):
    """Bit-parallel value of a node: `values` maps nets to ints whose bit r is the net's value in pattern r."""
    hit = 0
    for cube in node.cubes:
        term = full
        for fanin, c in zip(node.fanins, cube):
            if c == "1":
                term &= values[fanin]
            elif c == "0":
                term &= ~values[fanin]
        hit |= term
    return hit & full if node.polarity else ~hit & full


def truth_table(netlist):
    """Output word of every input pattern (list of 2**n ints), evaluated bit-parallel on Python integers.

    Fast enough for small circuits (up to about 20 inputs); `Netlist.evaluate_int` is the slow reference.
    """
    n = len(netlist.inputs)
    if n > MAX_TABLE_INPUTS:
        raise AxnetError(f"circuit has {n} inputs; a full truth table needs at most {MAX_TABLE_INPUTS}",
                         path=netlist.source)
    size = 1 << n
    full = (1 << size) - 1
    values = {name: _input_bits(i, size) for i, name in enumerate(netlist.inputs)}
    for name in netlist.topological_order():
        values[name] = _node_bits(netlist.nodes[name], values, full)
    table = np.zeros(size, dtype=np.int64)
    for k, out in enumerate(netlist.outputs):
        table |= _unpack(values[out], size) << k
    return table.tolist()


def _input_bits(i, size):
    """Int whose bit r is bit i of r, for r < size: runs of 2**i zeros then 2**i ones, doubled up to size."""
    run = 1 << i
    word, length = ((1 << run) - 1) << run, 2 * run
    while length < size:
        word |= word << length
        length *= 2
    return word & ((1 << size) - 1)


def _unpack(bits, size):
    """int64 array of the low `size` bits of a Python int, bit r at index r."""
    raw = bits.to_bytes((size + 7) // 8, "little")
    return np.unpackbits(np.frombuffer(raw, dtype=np.uint8), bitorder="little")[:size].astype(np.int64)
