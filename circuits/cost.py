"""Hardware cost estimate of a netlist: two-input gates after decomposition, NAND2-equivalent area, logic depth.

First constants are propagated and buffers resolved (a node reading a constant is cofactored, one that only copies
a net is a wire), and only nodes some output still depends on are counted. Then every node is decomposed on its
own, from its function over the fanins it really depends on:
- constants and buffers cost nothing (ties and wires); a negated input is one inverter, shared by every node that
  reads that net negated;
- a node that is the parity of its inputs (XOR2, XOR3, XNOR...) is a tree of k-1 XOR2 (the last an XNOR2 when
  complemented); a node that reads two inputs only through their XOR gets one XOR2 for them first (the ETA-I sum
  bit (a ^ b) | f is an XOR2 and an OR2);
- the rest (up to 6 inputs) is the cheaper of a prime cover of its on-set and of its off-set (Quine-McCluskey, then
  greedy), algebraically factored (the literal shared by most cubes is pulled out first: MAJ(a, b, c) =
  c(a + b) + ab is 4 gates, not 5), then AND/OR trees of two-input gates; an off-set cover ends in NAND2/NOR2.
  Wider nodes are factored from the cover they are written with.
Trees are built earliest-arriving inputs first (Huffman), so a late carry passes through as few levels as possible.
Depth counts every gate, inverters included, on the longest input-to-output path.

Area is in NAND2 equivalents, from the X1 cell areas of the NanGate 45 nm Open Cell Library (um^2: INV 0.532,
NAND2/NOR2 0.798, AND2/OR2 1.064, XOR2/XNOR2 1.596), divided by NAND2's: `UNIT_AREA` below. The same numbers are
the bundled generic ABC library `circuits/library/generic.genlib`, used by `abc_area` when `yosys-abc` or
`berkeley-abc` is installed (optional: a technology-mapped area, with sharing across nodes that this estimate does
not see).

Not modelled: wire load, fanout buffering, sizing, cross-node logic sharing. The estimate ranks circuits of one
family sensibly; it is not a synthesis result.
"""
from __future__ import annotations

import heapq
import itertools
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass

from circuits.errors import AxnetError

UNIT_AREA = {"NOT": 0.667, "NAND2": 1.0, "NOR2": 1.0, "AND2": 1.333, "OR2": 1.333, "XOR2": 2.0, "XNOR2": 2.0}
QM_MAX_FANIN = 6  # wider nodes are factored from their own cover, as written (prime covers grow too fast)
ABC_PROGRAMS = ("yosys-abc", "berkeley-abc", "abc")
GENLIB = os.path.join(os.path.dirname(os.path.abspath(__file__)), "library", "generic.genlib")


@dataclass
class Cost:
    """Gate counts by kind, their NAND2-equivalent area and the logic depth."""

    cells: dict
    depth: int

    @property
    def gates(self):
        """Two-input gates (inverters not included)."""
        return sum(n for kind, n in self.cells.items() if kind != "NOT")

    @property
    def inverters(self):
        return self.cells.get("NOT", 0)

    @property
    def area(self):
        return round(sum(UNIT_AREA[kind] * n for kind, n in self.cells.items()), 3)

    def as_dict(self):
        """Flat fields for tables: gates, inverters, area_nand2, depth."""
        return {"gates": self.gates, "inverters": self.inverters, "area_nand2": self.area, "depth": self.depth}


class _Counter:
    """Counts gates and tracks each net's arrival level while nodes are decomposed."""

    def __init__(self, inputs):
        self.cells = {}
        self.arrival = {name: 0 for name in inputs}
        self.inverted = {}  # net -> arrival of its shared inverter

    def gate(self, kind, *arrivals):
        self.cells[kind] = self.cells.get(kind, 0) + 1
        return max(arrivals) + 1

    def literal(self, net, positive):
        """Arrival of a net or of its (shared) inverter."""
        if positive:
            return self.arrival[net]
        if net not in self.inverted:
            self.inverted[net] = self.gate("NOT", self.arrival[net])
        return self.inverted[net]

    def tree(self, kind, arrivals, last_kind=None):
        """k-1 gates of `kind` over k arrivals, earliest pair first; the final gate may be another kind."""
        heap = list(arrivals)
        heapq.heapify(heap)
        if len(heap) == 1:
            return heap[0]
        while len(heap) > 2:
            heapq.heappush(heap, self.gate(kind, heapq.heappop(heap), heapq.heappop(heap)))
        return self.gate(last_kind or kind, heap[0], heap[1])


def node_function(node, k):
    """The node's truth table over its fanins as an int: bit r is the output for fanin pattern r (fanin i = bit i)."""
    table = 0
    for r in range(1 << k):
        if node.value([(r >> i) & 1 for i in range(k)]):
            table |= 1 << r
    return table


def support(table, k):
    """Fanin positions the function depends on."""
    used = []
    for i in range(k):
        stride = 1 << i
        if any(((table >> r) & 1) != ((table >> (r ^ stride)) & 1) for r in range(1 << k) if not r & stride):
            used.append(i)
    return used


def parity_kind(table, k, used):
    """'xor' or 'xnor' when the function is the parity (or its complement) of the `used` fanins, else None."""
    mask = sum(1 << i for i in used)
    odd = sum(1 << r for r in range(1 << k) if bin(r & mask).count("1") % 2)
    full = (1 << (1 << k)) - 1
    return "xor" if table == odd else "xnor" if table == full ^ odd else None


def cube_literals(cubes, fanins):
    """Cubes as frozensets of (net, positive) literals."""
    return [frozenset((net, c == "1") for net, c in zip(fanins, cube) if c != "-") for cube in cubes]


def factor(cubes, counter):
    """Algebraic factoring of a cover into ('and'|'or'|'lit', ...) trees: pull out the literal shared by most
    cubes (the latest-arriving one among equals), recursively."""
    if any(not c for c in cubes):
        return ("const1",)
    if len(cubes) == 1:
        return ("and", [("lit", lit) for lit in sorted(cubes[0])])
    counts = {}
    for cube in cubes:
        for lit in cube:
            counts[lit] = counts.get(lit, 0) + 1
    best = max(sorted(counts), key=lambda lit: (counts[lit], counter.arrival[lit[0]]))
    if counts[best] == 1:
        return ("or", [factor([c], counter) for c in cubes])
    inner = factor([c - {best} for c in cubes if best in c], counter)
    term = ("lit", best) if inner == ("const1",) else ("and", [("lit", best), inner])
    rest = [c for c in cubes if best not in c]
    return ("or", [term, factor(rest, counter)]) if rest else term


def build(expr, counter, invert=False):
    """Count the gates of a factored expression; returns its arrival. `invert` ends in NAND2/NOR2 (or an
    inverter on a bare literal)."""
    kind = expr[0]
    if kind == "lit":
        net, positive = expr[1]
        return counter.literal(net, positive != invert)
    args = [a for e in expr[1] for a in (e[1] if e[0] == kind else [e])]  # flatten nested and/or of the same kind
    arrivals = [build(a, counter) for a in args]
    if len(arrivals) == 1:
        return counter.gate("NOT", arrivals[0]) if invert else arrivals[0]
    two = "AND2" if kind == "and" else "OR2"
    last = ("NAND2" if kind == "and" else "NOR2") if invert else two
    return counter.tree(two, arrivals, last)


def restrict(table, k, used):
    """The function over the `used` fanins only (the others do not matter, so read them as 0)."""
    out = 0
    for r in range(1 << len(used)):
        full = sum(((r >> j) & 1) << i for j, i in enumerate(used))
        out |= ((table >> full) & 1) << r
    return out


def xor_pair(table, k):
    """(i, j) such that the function reads fanins i and j only through i XOR j, or None."""
    for i, j in itertools.combinations(range(k), 2):
        flip = (1 << i) | (1 << j)
        if all(((table >> r) & 1) == ((table >> (r ^ flip)) & 1) for r in range(1 << k)):
            return i, j
    return None


def merge_pair(table, k, i, j):
    """The function with fanin i standing for (i XOR j) and fanin j removed."""
    keep = [v for v in range(k) if v != j]
    return restrict(table, k, keep)  # with j = 0, fanin i's value is i XOR j


def prime_cover(table, k):
    """A small sum-of-products cover of a function of k <= QM_MAX_FANIN inputs: its prime implicants
    (Quine-McCluskey), then essential primes and the greedy choice. Cubes are strings over 01- per fanin."""
    terms = {format(r, f"0{k}b")[::-1] for r in range(1 << k) if (table >> r) & 1}
    primes, current = set(), terms
    while current:
        merged, used = set(), set()
        for a, b in itertools.combinations(sorted(current), 2):
            diff = [p for p in range(k) if a[p] != b[p]]
            if len(diff) == 1 and "-" not in (a[diff[0]], b[diff[0]]):
                merged.add(a[:diff[0]] + "-" + a[diff[0] + 1:])
                used.update((a, b))
        primes |= current - used
        current = merged
    minterms = {r for r in range(1 << k) if (table >> r) & 1}
    covers = {p: {r for r in minterms if all(c == "-" or int(c) == (r >> i) & 1 for i, c in enumerate(p))}
              for p in sorted(primes)}
    chosen, left = [], set(minterms)
    while left:
        best = max(covers, key=lambda p: (len(covers[p] & left), p.count("-")))
        chosen.append(best)
        left -= covers[best]
    return chosen


def expr_gates(expr):
    """Two-input gates in a factored expression (inverters not counted)."""
    if expr[0] in ("lit", "const1"):
        return 0
    args = [a for e in expr[1] for a in (e[1] if e[0] == expr[0] else [e])]
    return len(args) - 1 + sum(expr_gates(a) for a in args)


def expr_inverters(expr, counter, invert):
    """Inverters an expression would add: negated literals not inverted yet, and a bare inverted output."""
    lits = set()

    def walk(e):
        if e[0] == "lit":
            lits.add(e[1])
        elif e[0] != "const1":
            for a in e[1]:
                walk(a)
    walk(expr)
    top_is_gate = expr[0] in ("and", "or") and expr_gates(expr) > 0
    return sum(1 for net, pos in lits if not pos and net not in counter.inverted) + (invert and not top_is_gate)


def sop(table, nets, counter):
    """Factor the cheaper of the on-set and off-set covers (an off-set cover ends in NAND2/NOR2)."""
    k = len(nets)
    full = (1 << (1 << k)) - 1
    options = []
    for invert, fn in ((False, table), (True, full ^ table)):
        expr = factor(cube_literals(prime_cover(fn, k), nets), counter)
        score = expr_gates(expr) * UNIT_AREA["AND2"] + expr_inverters(expr, counter, invert) * UNIT_AREA["NOT"]
        options.append((score, invert, expr))
    _, invert, expr = min(options, key=lambda o: (o[0], o[1]))
    return build(expr, counter, invert=invert)


def decompose(table, nets, counter, name):
    """Count the gates of a function of `nets` (all in its support); returns its arrival."""
    k = len(nets)
    kind = parity_kind(table, k, list(range(k)))
    if kind:
        if k == 1:  # buffer or inverter
            return counter.arrival[nets[0]] if kind == "xor" else counter.literal(nets[0], False)
        return counter.tree("XOR2", [counter.arrival[n] for n in nets], "XNOR2" if kind == "xnor" else "XOR2")
    pair = xor_pair(table, k)
    if pair:
        i, j = pair
        virtual = f"{name}/xor{len(counter.arrival)}"
        counter.arrival[virtual] = counter.gate("XOR2", counter.arrival[nets[i]], counter.arrival[nets[j]])
        rest = [virtual if v == i else n for v, n in enumerate(nets) if v != j]
        return decompose(merge_pair(table, k, i, j), rest, counter, name)
    return sop(table, nets, counter)


def cofactor(table, k, fixed):
    """The function with the fanins in `fixed` ({position: 0/1}) set; returns (table, kept positions)."""
    keep = [i for i in range(k) if i not in fixed]
    base = sum(v << i for i, v in fixed.items())
    out = 0
    for r in range(1 << len(keep)):
        full = base + sum(((r >> j) & 1) << i for j, i in enumerate(keep))
        out |= ((table >> full) & 1) << r
    return out, keep


def merge_repeats(table, nets):
    """A function whose fanin list names one net twice, as a function of each net once."""
    while len(set(nets)) < len(nets):
        k = len(nets)
        i = next(i for i, n in enumerate(nets) if nets.index(n) != i)  # a repeat: same net as an earlier position
        first = nets.index(nets[i])
        keep = [v for v in range(k) if v != i]
        out = 0
        for r in range(1 << (k - 1)):
            full = sum(((r >> j) & 1) << v for j, v in enumerate(keep))
            full |= ((full >> first) & 1) << i
            out |= ((table >> full) & 1) << r
        table, nets = out, [nets[v] for v in keep]
    return table, nets


def simplify(netlist):
    """Constants propagated and buffers resolved, node by node in topological order.

    Returns (const {net: 0/1}, alias {net: the net it buffers}, funcs {net: (table, nets) over resolved nets in its
    support, or ("cover", node) for nodes wider than QM_MAX_FANIN, taken as written})."""
    const, alias, funcs = {}, {}, {}
    for name in netlist.topological_order():
        node = netlist.nodes[name]
        fanins = [alias.get(f, f) for f in node.fanins]
        if len(fanins) > QM_MAX_FANIN:
            funcs[name] = ("cover", node)
            continue
        table, keep = cofactor(node_function(node, len(fanins)), len(fanins),
                               {i: const[f] for i, f in enumerate(fanins) if f in const})
        table, nets = merge_repeats(table, [fanins[i] for i in keep])
        used = support(table, len(nets))
        table, nets = restrict(table, len(nets), used), [nets[i] for i in used]
        if not nets:
            const[name] = table & 1
        elif len(nets) == 1 and table == 0b10:
            alias[name] = nets[0]
        else:
            funcs[name] = (table, nets)
    return const, alias, funcs


def live_nets(netlist, alias, funcs):
    """Nets some output depends on after simplification (logic that only dead or constant nets read is free)."""
    live, stack = set(), [alias.get(o, o) for o in netlist.outputs]
    while stack:
        net = stack.pop()
        if net in live or net not in funcs:
            continue
        live.add(net)
        entry = funcs[net]
        stack += [alias.get(f, f) for f in entry[1].fanins] if entry[0] == "cover" else list(entry[1])
    return live


def cover_cost(node, counter, alias):
    """A node wider than QM_MAX_FANIN, factored from the cover it is written with."""
    if not node.cubes:
        return 0
    fanins = [alias.get(f, f) for f in node.fanins]
    expr = factor(cube_literals(node.cubes, fanins), counter)
    if expr == ("const1",):
        return 0
    return build(expr, counter, invert=not node.polarity)


def netlist_cost(netlist):
    """The Cost of a netlist: constants propagated and buffers resolved, then every node some output depends on
    decomposed into two-input gates and inverters (see module docstring)."""
    const, alias, funcs = simplify(netlist)
    live = live_nets(netlist, alias, funcs)
    counter = _Counter(netlist.inputs)
    for net in const:
        counter.arrival[net] = 0
    for name in netlist.topological_order():
        if name not in live:
            continue
        entry = funcs[name]
        if entry[0] == "cover":
            counter.arrival[name] = cover_cost(entry[1], counter, alias)
        else:
            counter.arrival[name] = decompose(entry[0], entry[1], counter, name)
    depth = max((counter.arrival.get(alias.get(o, o), 0) for o in netlist.outputs), default=0)
    return Cost(cells=dict(sorted(counter.cells.items())), depth=depth)


# ---- optional: area mapped by ABC ------------------------------------------------------------------------------------

def find_abc():
    """Path of an ABC program on PATH (yosys-abc, berkeley-abc or abc), or None."""
    for name in ABC_PROGRAMS:
        path = shutil.which(name)
        if path:
            return path
    return None


def abc_area(netlist, abc=None, timeout=60):
    """Area in NAND2 equivalents after ABC maps the netlist onto the bundled generic library (strash; dch; map).

    Returns None when no ABC program is installed; an AxnetError when ABC fails on the circuit."""
    from circuits.blif_write import write_blif

    abc = abc or find_abc()
    if abc is None:
        return None
    with tempfile.TemporaryDirectory(prefix="axnet-abc-") as tmp:
        path = os.path.join(tmp, "circuit.blif")
        write_blif(netlist, path)
        script = f"read_library {GENLIB}; read_blif {path}; strash; dch; map; print_stats"
        try:
            run = subprocess.run([abc, "-c", script], capture_output=True, text=True, timeout=timeout)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise AxnetError(f"ABC ({abc}) failed on circuit {netlist.name}: {e}") from None
    found = re.search(r"area\s*=\s*([0-9.]+)", run.stdout)
    if run.returncode != 0 or not found:
        last = (run.stderr or run.stdout).strip().splitlines()[-1:] or ["no area in its output"]
        raise AxnetError(f"ABC ({abc}) failed on circuit {netlist.name}: {last[0][:160]}")
    return float(found.group(1))


def cost_fields(netlist, abc=None):
    """A flat dict for result tables: gates, inverters, area_nand2, depth and, when ABC ran, abc_area."""
    fields = netlist_cost(netlist).as_dict()
    if abc:
        fields["abc_area"] = abc_area(netlist, abc)
    return fields
