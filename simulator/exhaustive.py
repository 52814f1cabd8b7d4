"""Bit-parallel exhaustive simulation: 64 input patterns per uint64 word, whole blocks of words per numpy call.

A netlist is compiled once into a program of word-level steps (AND, OR, XOR, NOT, copy, fill) over a small set of
buffer slots; a slot is reused as soon as the last reader of its signal has run, so memory depends on the block
size and the circuit's live width, never on the number of patterns. The pattern space is cut into blocks of
`block_words` words that worker threads evaluate independently (numpy releases the GIL inside its ufuncs).

Pattern convention (docs/ARCHITECTURE.md): pattern = sum(in_i << i) in `.inputs` order; bit t of word j of a block
starting at word w0 is pattern 64 * (w0 + j) + t. Input i < 6 is therefore the same word in every position; input
i >= 6 is all-0 or all-1 words in runs of 2^(i-6) words.
"""
from __future__ import annotations

import functools
import itertools
import queue
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from circuits.errors import AxnetError

ALL_ONES = np.uint64(0xFFFFFFFFFFFFFFFF)
ZERO = np.uint64(0)
# Word of input i < 6: bit t is bit i of t.
LOW_INPUT_WORDS = [np.uint64(sum(1 << t for t in range(64) if (t >> i) & 1)) for i in range(6)]
MAX_TABLE_INPUTS = 26  # simulate_table refuses wider circuits: 2**26 int64 = 512 MiB
DEFAULT_BLOCK_WORDS = 1 << 12  # 32 KiB per signal: a block's live signals stay in the L2 cache
_TASK_WORDS = 1 << 15  # words a worker thread simulates per task (several blocks)
_TT_FANIN_LIMIT = 10  # covers with more fanins skip truth-table analysis and are compiled as AND/OR of literals

assert sys.byteorder == "little", "plane <-> byte views assume a little-endian machine"


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
        for r in set(srcs):
            if last_read.get(r) == idx and slot_of[r] >= len(netlist.inputs) and r != dst:
                free.append(slot_of[r])
        if dst not in last_read and slot_of[dst] >= len(netlist.inputs):  # written but never read
            free.append(slot_of[dst])
    return Program(n_inputs=len(netlist.inputs), n_slots=max(n_slots, 1), steps=steps,
                   output_slots=[slot_of[r] for r in out_regs], gate_count=len(order))


# ---------------------------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------------------------

def block_geometry(n_inputs, block_words):
    """(words per block, number of blocks) for exhaustive simulation; blocks are equal powers of two."""
    total = 1 << max(n_inputs - 6, 0)
    if block_words < 1:
        raise AxnetError(f"block_words must be at least 1, got {block_words}")
    words = min(1 << (int(block_words).bit_length() - 1), total)
    return words, total // words


def input_word_index_bits(i, start_word, words):
    """Input i >= 6 over words start_word.. : all-ones where bit (i-6) of the word index is set."""
    idx = np.arange(start_word, start_word + words, dtype=np.uint64)
    bits = (idx >> np.uint64(i - 6)) & np.uint64(1)
    return np.negative(bits)  # 1 -> all ones, 0 -> 0 (uint64 wrap-around)


class Evaluator:
    """One thread's buffers and bound steps for a program at a fixed block size.

    For exhaustive runs (`exhaustive=True`) an input that is one word repeated over the whole block (inputs 0..5,
    and inputs whose run of equal words covers the block) is a read-only stride-0 view of a single word: numpy
    reads it as a scalar, and it takes no cache space.
    """

    _UFUNCS = {"and": np.bitwise_and, "or": np.bitwise_or, "xor": np.bitwise_xor}

    def __init__(self, program, words, exhaustive=True):
        self.program = program
        self.words = words
        self.exhaustive = exhaustive
        self.buffers = np.zeros((program.n_slots, words), dtype=np.uint64)
        rows = list(self.buffers)
        self.cells = {}  # input index -> the single word behind its stride-0 row
        self.periodic = []  # inputs that vary inside a block but repeat identically in every block
        if exhaustive:
            for i in range(program.n_inputs):
                if i < 6 or (1 << (i - 6)) >= words:
                    cell = np.zeros(1, dtype=np.uint64)
                    self.cells[i] = cell
                    rows[i] = np.lib.stride_tricks.as_strided(cell, shape=(words,), strides=(0,), writeable=False)
                    if i < 6:
                        cell[0] = LOW_INPUT_WORDS[i]
                else:
                    rows[i][:] = input_word_index_bits(i, 0, words)
        self.rows = rows
        self.bound = []
        for op, dst, *src in program.steps:
            if op in self._UFUNCS:
                self.bound.append((self._UFUNCS[op], (rows[src[0]], rows[src[1]], rows[dst])))
            elif op == "not":
                self.bound.append((np.invert, (rows[src[0]], rows[dst])))
            elif op == "copy":
                self.bound.append((np.copyto, (rows[dst], rows[src[0]])))
            elif op == "zero":
                self.bound.append((np.copyto, (rows[dst], ZERO)))
            else:
                self.bound.append((np.copyto, (rows[dst], ALL_ONES)))
        self.outputs = [rows[s] for s in program.output_slots]
        self._high = [i for i in self.cells if i >= 6]

    def set_exhaustive_inputs(self, start_word):
        """Set the inputs for the block at `start_word` (a multiple of self.words): only the high inputs change."""
        for i in self._high:
            self.cells[i][0] = ALL_ONES if (start_word >> (i - 6)) & 1 else ZERO

    def set_inputs(self, planes):
        """Copy explicit input planes (n_inputs x words), e.g. random patterns (needs exhaustive=False)."""
        for i in range(self.program.n_inputs):
            np.copyto(self.rows[i], planes[i])

    def run(self):
        """Evaluate every step; afterwards `self.outputs[k]` is output k's plane for the block."""
        for fn, args in self.bound:
            fn(*args)
        return self.outputs


def _as_program(netlist_or_program):
    return netlist_or_program if isinstance(netlist_or_program, Program) else compile_netlist(netlist_or_program)


def map_blocks(netlist, fn, block_words=DEFAULT_BLOCK_WORDS, threads=2, progress=None, stop_word=None,
               with_inputs=False):
    """Simulate every block exhaustively and yield fn(start_pattern, output_planes) in block order.

    `fn` runs in a worker thread on the evaluator's own buffers (a list of 1-D uint64 planes, valid only during the
    call), so reductions happen in parallel and nothing is copied unless `fn` copies it. With `with_inputs` it is
    called as fn(start_pattern, output_planes, input_planes) (read-only; repeated words may be stride-0 views).
    `stop_word` limits the run to the blocks before that word (benchmarks). `progress(n)` is called with the
    patterns done after each block.
    """
    program = _as_program(netlist)
    words, n_blocks = block_geometry(program.n_inputs, block_words)
    if stop_word is not None:
        n_blocks = min(n_blocks, max(1, -(-int(stop_word) // words)))
    patterns_per_block = min(64 * words, 1 << program.n_inputs)
    threads = max(1, min(int(threads), n_blocks))
    pool = queue.SimpleQueue()
    for _ in range(threads):
        pool.put(Evaluator(program, words))

    def call(ev, block):
        ev.set_exhaustive_inputs(block * words)
        outputs = ev.run()
        if with_inputs:
            return fn(block * words * 64, outputs, ev.rows[:program.n_inputs])
        return fn(block * words * 64, outputs)

    # A task runs several consecutive blocks so thread hand-over costs little next to the work, but there are
    # still several tasks per thread to balance the load.
    batch = max(1, min(_TASK_WORDS // words, n_blocks // (4 * threads)))

    def work(first):
        ev = pool.get()
        try:
            results = []
            for block in range(first, min(first + batch, n_blocks)):
                results.append(call(ev, block))
            return results
        finally:
            pool.put(ev)

    if threads == 1:
        ev = pool.get()
        for block in range(n_blocks):
            result = call(ev, block)
            if progress is not None:
                progress(patterns_per_block)
            yield result
        return
    with ThreadPoolExecutor(max_workers=threads) as executor:
        starts = iter(range(0, n_blocks, batch))
        pending = [executor.submit(work, first) for first in itertools.islice(starts, 2 * threads)]
        try:
            while pending:
                results = pending.pop(0).result()
                nxt = next(starts, None)
                if nxt is not None:
                    pending.append(executor.submit(work, nxt))
                for result in results:
                    if progress is not None:
                        progress(patterns_per_block)
                    yield result
        finally:
            for f in pending:
                f.cancel()


def iter_output_planes(netlist, block_words=DEFAULT_BLOCK_WORDS, threads=2, progress=None):
    """Yield (start_pattern, planes) per block; planes is a fresh uint64 array of shape (n_outputs, words).

    For circuits with fewer than 6 inputs there is one word whose bit t is the output for pattern t mod 2^n.
    """
    return map_blocks(netlist, lambda start, planes: (start, np.array(planes, dtype=np.uint64).reshape(
        len(planes), -1)), block_words=block_words, threads=threads, progress=progress)


def _small_uint(n_bits):
    """Smallest unsigned dtype holding n_bits."""
    for dtype in (np.uint8, np.uint16, np.uint32, np.uint64):
        if n_bits <= 8 * np.dtype(dtype).itemsize:
            return dtype
    raise AxnetError(f"{n_bits} bit planes do not fit a 64-bit word")


_TRANSPOSE_STEPS = [(np.uint64(0x00AA00AA00AA00AA), np.uint64(7)), (np.uint64(0x0000CCCC0000CCCC), np.uint64(14)),
                    (np.uint64(0x00000000F0F0F0F0), np.uint64(28))]


def _bytes_from_planes(planes):
    """uint8 array, 64 bytes per plane word, whose byte p has bit p of plane j as its bit j (up to 8 planes).

    Gathers byte q of every plane into one uint64 (an 8x8 bit matrix: row j = plane j) and transposes each matrix
    with three masked delta swaps, so the work is a few whole-array uint64 operations instead of one per bit.
    """
    words = planes[0].size
    stacked = (np.empty if len(planes) == 8 else np.zeros)((8 * words, 8), dtype=np.uint8)
    for j, p in enumerate(planes):
        stacked[:, j] = np.ascontiguousarray(p).view(np.uint8)
    x = stacked.view(np.uint64).reshape(-1)
    t = np.empty_like(x)
    for mask, shift in _TRANSPOSE_STEPS:
        np.right_shift(x, shift, out=t)
        np.bitwise_xor(t, x, out=t)
        np.bitwise_and(t, mask, out=t)
        np.bitwise_xor(x, t, out=x)
        np.left_shift(t, shift, out=t)
        np.bitwise_xor(x, t, out=x)
    return x.view(np.uint8)


def planes_to_words(planes, n_patterns=None, dtype=np.int64):
    """Words sum(plane_k bit << k) per pattern from bit planes (at most 63 planes for int64).

    Builds the words in the smallest unsigned type that holds the planes, one byte lane per group of 8 planes,
    then converts to `dtype`; `dtype=None` keeps that small type.
    """
    planes = list(planes)
    if dtype is not None and np.dtype(dtype) == np.int64 and len(planes) > 63:
        raise AxnetError(f"{len(planes)} outputs do not fit a 64-bit signed table entry")
    n = 64 * (planes[0].size if planes else 0)
    acc_type = _small_uint(max(len(planes), 1))
    if 0 < len(planes) <= 8:
        out = _bytes_from_planes(planes)
    else:
        out = np.zeros(n, dtype=acc_type)
        lanes = out.view(np.uint8).reshape(n, -1)
        for g in range(0, len(planes), 8):
            lanes[:, g // 8] = _bytes_from_planes(planes[g:g + 8])
    if n_patterns is not None:
        out = out[:n_patterns]
    return out if dtype is None else out.astype(dtype)


def simulate_table(netlist, progress=None, block_words=DEFAULT_BLOCK_WORDS, threads=2):
    """Output word for every input pattern, as int64 of length 2**n_inputs (index = pattern).

    Refuses circuits with more than 2**26 patterns: use streaming metrics (`lutgen.metrics.stream_metrics`,
    `axnet metrics`) for those, which never materialise the table.
    """
    n = len(netlist.inputs)
    if n > MAX_TABLE_INPUTS:
        raise AxnetError(f"circuit '{netlist.name}' has {n} inputs: a table of 2^{n} patterns exceeds the "
                         f"2^{MAX_TABLE_INPUTS} limit; compute its error metrics by streaming instead "
                         "(`axnet metrics`, lutgen.metrics.stream_metrics)", path=netlist.source)
    if len(netlist.outputs) > 63:
        raise AxnetError(f"circuit '{netlist.name}' has {len(netlist.outputs)} outputs; a table entry holds at "
                         "most 63 bits", path=netlist.source)
    table = np.empty(1 << n, dtype=np.int64)
    per_block = None
    blocks = map_blocks(netlist, lambda start, planes: (start, planes_to_words(planes)), block_words=block_words,
                        threads=threads, progress=progress)
    for start, words in blocks:
        per_block = min(words.size, table.size - start) if per_block is None else per_block
        table[start:start + per_block] = words[:per_block]
    return table
