"""Netlist -> word-level program: the analysis every simulator back-end shares (numpy, compiled C, torch).

Each node's cover is reduced to the cheapest tree of AND/OR/XOR/NOT over the fanins it really depends on (recipes
for every function of up to 3 variables), buffers become aliases, identical sub-expressions are shared, dead logic
is dropped, and the result is a list of steps over a small set of reusable slots (a slot is freed after the last
read of its signal).
"""
from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass

_TT_FANIN_LIMIT = 10  # covers with more fanins skip truth-table analysis and are compiled as AND/OR of literals

# ---------------------------------------------------------------------------------------------------------------
# Truth tables and recipes for small functions
# ---------------------------------------------------------------------------------------------------------------

def _var_masks(k):
    """Truth-table masks of k variables: bit r of mask j is bit j of r (r = row over 2^k fanin patterns)."""
    return [sum(1 << r for r in range(1 << k) if (r >> j) & 1) for j in range(k)]


def cover_truth_table(node):
    """The node's function as a Python int over its fanins: bit r = value for fanin j = bit j of r."""
    k = len(node.fanins)
    full = (1 << (1 << k)) - 1
    masks = _var_masks(k)
    on = 0
    for cube in node.cubes:
        term = full
        for j, c in enumerate(cube):
            if c == "1":
                term &= masks[j]
            elif c == "0":
                term &= ~masks[j] & full
        on |= term
    return on if node.polarity else ~on & full


def _depends_on(tt, k, j):
    """True when the k-input function tt changes with variable j."""
    mask = _var_masks(k)[j]
    high = tt & mask
    low = tt & ~mask & ((1 << (1 << k)) - 1)
    return (high >> (1 << j)) != low


def _restrict(tt, k, keep):
    """The truth table over the variables `keep` (indices into the k fanins) of a function that ignores the rest."""
    out = 0
    for r in range(1 << len(keep)):
        row = sum(((r >> i) & 1) << j for i, j in enumerate(keep))
        out |= ((tt >> row) & 1) << r
    return out


@functools.cache
def _recipes(k):
    """Cheapest expression tree over {and, or, xor, not} for every function of k <= 3 variables.

    Returns {truth table: expr} where expr is ('var', j), ('not', e) or (op, e1, e2); found by a relaxation over
    tree cost (number of numpy calls), run once per k and cached.
    """
    full = (1 << (1 << k)) - 1
    best = {m: (0, ("var", j)) for j, m in enumerate(_var_masks(k))}
    changed = True
    while changed:
        changed = False
        items = list(best.items())
        for tt, (cost, expr) in items:
            cand = [(~tt & full, cost + 1, ("not", expr))]
            for tt2, (cost2, expr2) in items:
                if tt2 <= tt:
                    continue
                c = cost + cost2 + 1
                cand += [(tt & tt2, c, ("and", expr, expr2)), (tt | tt2, c, ("or", expr, expr2)),
                         (tt ^ tt2, c, ("xor", expr, expr2))]
            for t, c, e in cand:
                if t not in best or c < best[t][0]:
                    best[t] = (c, e)
                    changed = True
    recipes = {tt: expr for tt, (cost, expr) in best.items()}
    if k == 3:
        # Majority as (a & b) | (c & (a ^ b)): same cost, and it shares a ^ b with a full adder's sum a ^ b ^ c.
        a, b, c = ("var", 0), ("var", 1), ("var", 2)
        recipes[0b11101000] = ("or", ("and", a, b), ("and", c, ("xor", a, b)))
    return recipes


# ---------------------------------------------------------------------------------------------------------------
# Compilation
# ---------------------------------------------------------------------------------------------------------------

@dataclass
class Program:
    """A compiled netlist: `steps` are (opcode, dst, src...) over slot numbers; slots 0..n_inputs-1 hold inputs.

    Opcodes: 'and', 'or', 'xor' (dst, a, b), 'not' (dst, a), 'zero', 'one' (dst). `output_slots[k]` holds output k
    after the steps have run.
    """

    n_inputs: int
    n_slots: int
    steps: list
    output_slots: list
    gate_count: int

    @property
    def n_outputs(self):
        return len(self.output_slots)


class _Lowering:
    """Turns nodes into virtual-register instructions; registers are net names or ('t', n) temporaries."""

    def __init__(self):
        self.instrs = []
        self.alias = {}
        self.shared = {}  # (op, operand registers...) -> register already holding that value
        self.node_fn = {}  # (fanin registers, truth table) -> register of a node computing it
        self._temps = itertools.count()

    def temp(self):
        return ("t", next(self._temps))

    def reg(self, net):
        """The register that holds `net` (buffers are aliases of their fanin, not copies)."""
        while net in self.alias:
            net = self.alias[net]
        return net

    def emit_expr(self, expr, names, dst):
        """Emit an expression tree over variables `names` into register `dst`, reusing any identical
        sub-expression an earlier node already computed (e.g. a ^ b shared by a full adder's sum and carry)."""
        kind = expr[0]
        if kind == "var":
            self.instrs.append(("copy", dst, self.reg(names[expr[1]])))
            return
        args = [self.operand(e, names) for e in expr[1:]]
        key = (kind, *sorted(args, key=repr))
        if key in self.shared:
            self.instrs.append(("copy", dst, self.shared[key]))
            return
        self.instrs.append((kind, dst, *args))
        self.shared[key] = dst

    def operand(self, expr, names):
        """Register holding sub-expression `expr` (a variable's own register, a shared one, or a new temporary)."""
        if expr[0] == "var":
            return self.reg(names[expr[1]])
        t = self.temp()
        self.emit_expr(expr, names, t)
        return t

    def node(self, node):
        """Lower one node: recognised small functions by recipe, the rest as an OR of ANDs of literals."""
        k = len(node.fanins)
        if k <= _TT_FANIN_LIMIT:
            tt = cover_truth_table(node)
            keep = [j for j in range(k) if _depends_on(tt, k, j)]
            if len(keep) <= 3:
                self.small_function(node.name, _restrict(tt, k, keep), [node.fanins[j] for j in keep])
                return
        elif not node.cubes or any(set(cube) <= {"-"} for cube in node.cubes):
            constant = bool(node.cubes) == bool(node.polarity)  # no cubes: NOT polarity; a full cube: polarity
            self.instrs.append(("one" if constant else "zero", node.name))
            return
        self.sum_of_products(node)

    def small_function(self, name, tt, fanins):
        k = len(fanins)
        full = (1 << (1 << k)) - 1
        if tt == 0:
            self.instrs.append(("zero", name))
        elif tt == full:
            self.instrs.append(("one", name))
        elif k == 1 and tt == 0b10:
            self.alias[name] = self.reg(fanins[0])
        else:
            regs = tuple(self.reg(f) for f in fanins)
            same, inverse = self.node_fn.get((regs, tt)), self.node_fn.get((regs, ~tt & full))
            if same is not None:  # an earlier node computes the same function of the same nets
                self.alias[name] = same
                return
            if inverse is not None:  # ... or its complement (a cell's S = NOT Co written as a 3-input cover)
                self.instrs.append(("not", name, inverse))
            else:
                self.emit_expr(_recipes(k)[tt], fanins, name)
            self.node_fn[(regs, tt)] = name

    def sum_of_products(self, node):
        """General cover: complemented literals once per fanin, each cube an AND chain, cubes ORed."""
        neg = {}
        for j, f in enumerate(node.fanins):
            if any(cube[j] == "0" for cube in node.cubes):
                neg[j] = self.temp()
                self.instrs.append(("not", neg[j], self.reg(f)))
        acc = None
        for cube in node.cubes:
            lits = [self.reg(node.fanins[j]) if c == "1" else neg[j] for j, c in enumerate(cube) if c != "-"]
            if len(lits) == 1:
                term = lits[0]
            else:
                term = self.temp()
                self.instrs.append(("and", term, lits[0], lits[1]))
                for lit in lits[2:]:
                    self.instrs.append(("and", term, term, lit))
            if acc is None:
                acc = term
            else:
                new = self.temp()
                self.instrs.append(("or", new, acc, term))
                acc = new
        dst = node.name
        if node.polarity:
            self.instrs.append(("copy", dst, acc))
        else:
            self.instrs.append(("not", dst, acc))


def _needed_nets(netlist):
    """Nets in the transitive fanin of the outputs (dead logic is not simulated)."""
    seen, stack = set(), list(netlist.outputs)
    while stack:
        net = stack.pop()
        if net in seen:
            continue
        seen.add(net)
        node = netlist.nodes.get(net)
        if node is not None:
            stack.extend(node.fanins)
    return seen


def _drop_copies(instrs):
    """Remove 'copy dst src' by renaming dst to src in every later read; returns (instrs, renaming).

    Sound because no register is written again after a copy has read it."""
    rename, out = {}, []
    for ins in instrs:
        ins = (ins[0], ins[1], *[rename.get(r, r) for r in ins[2:]])
        if ins[0] == "copy":
            rename[ins[1]] = ins[2]
            continue
        out.append(ins)
    return out, rename


def compile_netlist(netlist):
    """Compile a checked netlist into a Program: nodes in topological order, slots reused after their last read."""
    netlist.check()
    lower = _Lowering()
    needed = _needed_nets(netlist)
    order = [n for n in netlist.topological_order() if n in needed]
    for name in order:
        lower.node(netlist.nodes[name])
    out_regs = [lower.reg(o) for o in netlist.outputs]
    instrs, rename = _drop_copies(lower.instrs)
    out_regs = [rename.get(r, r) for r in out_regs]
    # Liveness: index of the last instruction that reads each register; outputs live to the end.
    last_read = {}
    for idx, ins in enumerate(instrs):
        for r in ins[2:]:
            last_read[r] = idx
    for r in out_regs:
        last_read[r] = len(instrs)
    slot_of = {name: i for i, name in enumerate(netlist.inputs)}
    free, n_slots, steps = [], len(netlist.inputs), []
    for idx, ins in enumerate(instrs):
        op, dst, srcs = ins[0], ins[1], ins[2:]
        src_slots = [slot_of[r] for r in srcs]
        if dst not in slot_of:
            if free:
                slot_of[dst] = free.pop()
            else:
                slot_of[dst] = n_slots
                n_slots += 1
        steps.append((op, slot_of[dst], *src_slots))
        for r in dict.fromkeys(srcs):  # ordered: the slot numbering (and the C text) must not depend on the hash seed
            if last_read.get(r) == idx and slot_of[r] >= len(netlist.inputs) and r != dst:
                free.append(slot_of[r])
        if dst not in last_read and slot_of[dst] >= len(netlist.inputs):  # written but never read
            free.append(slot_of[dst])
    return Program(n_inputs=len(netlist.inputs), n_slots=max(n_slots, 1), steps=steps,
                   output_slots=[slot_of[r] for r in out_regs], gate_count=len(order))
