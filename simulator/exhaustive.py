"""Bit-parallel exhaustive simulation: 64 input patterns per uint64 word, whole blocks of words per numpy call.

A netlist is compiled once (`simulator.program`) into a program of word-level steps (AND, OR, XOR, NOT, copy,
fill) over a small set of buffer slots; a slot is reused as soon as the last reader of its signal has run, so memory
depends on the block size and the circuit's live width, never on the number of patterns. The pattern space is cut
into blocks of `block_words` words that worker threads evaluate independently (numpy releases the GIL inside its
ufuncs, and the compiled engine of `simulator.engine` runs without it when the work is worth a build).

Pattern convention (docs/ARCHITECTURE.md): pattern = sum(in_i << i) in `.inputs` order; bit t of word j of a block
starting at word w0 is pattern 64 * (w0 + j) + t. Input i < 6 is therefore the same word in every position; input
i >= 6 is all-0 or all-1 words in runs of 2^(i-6) words.
"""
from __future__ import annotations

import queue
import sys

import numpy as np

from circuits.errors import AxnetError
from simulator.engine import select_native
from simulator.ordered_map import ordered_map
from simulator.evaluator import ALL_ONES, LOW_INPUT_WORDS, ZERO, Evaluator, input_word_index_bits  # noqa: F401
from simulator.program import Program, compile_netlist, cover_truth_table  # noqa: F401 (re-exported names)

MAX_TABLE_INPUTS = 26  # simulate_table refuses wider circuits: 2**26 int64 = 512 MiB
DEFAULT_BLOCK_WORDS = 1 << 12  # 32 KiB per signal: a block's live signals stay in the L2 cache
_TASK_WORDS = 1 << 15  # words a worker thread simulates per task (several blocks)

assert sys.byteorder == "little", "plane <-> byte views assume a little-endian machine"


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


def _as_program(netlist_or_program):
    return netlist_or_program if isinstance(netlist_or_program, Program) else compile_netlist(netlist_or_program)


def map_blocks(netlist, fn, block_words=DEFAULT_BLOCK_WORDS, threads=2, progress=None, stop_word=None,
               with_inputs=False, backend="auto"):
    """Simulate every block exhaustively and yield fn(start_pattern, output_planes) in block order.

    `fn` runs in a worker thread on the evaluator's own buffers (a list of 1-D uint64 planes, valid only during the
    call), so reductions happen in parallel and nothing is copied unless `fn` copies it. With `with_inputs` it is
    called as fn(start_pattern, output_planes, input_planes) (read-only; repeated words may be stride-0 views).
    `stop_word` limits the run to the blocks before that word (benchmarks). `progress(n)` is called with the
    patterns done after each block. `backend`: "auto" (the compiled engine when worth building), "native", "numpy".
    """
    program = _as_program(netlist)
    words, n_blocks = block_geometry(program.n_inputs, block_words)
    if stop_word is not None:
        n_blocks = min(n_blocks, max(1, -(-int(stop_word) // words)))
    patterns_per_block = min(64 * words, 1 << program.n_inputs)
    threads = max(1, min(int(threads), n_blocks))
    circuit = select_native(program, backend, work=n_blocks * words * 64 * max(len(program.steps), 1))
    pool = queue.SimpleQueue()
    for _ in range(threads):
        pool.put(Evaluator(program, words, native=circuit))

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
    for results in ordered_map(work, range(0, n_blocks, batch), threads):
        for result in results:
            if progress is not None:
                progress(patterns_per_block)
            yield result


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


def simulate_table(netlist, progress=None, block_words=DEFAULT_BLOCK_WORDS, threads=2, backend="auto"):
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
    program = compile_netlist(netlist)
    circuit = select_native(program, backend, work=table.size * max(len(program.steps), 1))
    if circuit is not None:  # the compiled kernel writes the words in pattern order, its threads over each chunk
        step = max(1 << 20, circuit.group)
        for start in range(0, table.size, step):
            circuit.table(start, min(step, table.size - start), table[start:], threads=threads)
            if progress is not None:
                progress(min(step, table.size - start))
        return table
    per_block = None
    blocks = map_blocks(program, lambda start, planes: (start, planes_to_words(planes)), block_words=block_words,
                        threads=threads, progress=progress, backend="numpy")
    for start, words in blocks:
        per_block = min(words.size, table.size - start) if per_block is None else per_block
        table[start:start + per_block] = words[:per_block]
    return table
