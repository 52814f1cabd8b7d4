"""Random-pattern simulation for circuits too wide to enumerate, bit-parallel like the exhaustive simulator.

Each block draws its input planes from its own generator (seeded by (seed, block number)), so results do not depend
on the number of threads. Exhaustive streaming lives in `simulator.exhaustive.map_blocks`; both hand a reduction
function one block of planes at a time, so no table of all patterns is ever built.
"""
from __future__ import annotations

import queue

import numpy as np

from circuits.errors import AxnetError
from simulator.engine import select_native
from simulator.ordered_map import ordered_map
from simulator.exhaustive import DEFAULT_BLOCK_WORDS, Evaluator, _as_program, planes_to_words

_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def random_input_planes(n_inputs, words, seed, block):
    """Uniform random input planes (n_inputs x words) for block `block` of a run seeded with `seed`."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed) & (2 ** 63 - 1), int(block)]))
    return rng.integers(0, _MASK64, size=(n_inputs, words), dtype=np.uint64, endpoint=True)


def valid_mask(n_valid, words):
    """Plane with the first n_valid pattern bits set (the tail of the last random block is unused)."""
    mask = np.zeros(words, dtype=np.uint64)
    full, rest = divmod(int(n_valid), 64)
    mask[:full] = _MASK64
    if rest:
        mask[full] = np.uint64((1 << rest) - 1)
    return mask


def map_random_blocks(netlist, fn, samples, seed=0, block_words=DEFAULT_BLOCK_WORDS, threads=2, progress=None,
                      backend="auto"):
    """Simulate `samples` random patterns and yield fn(input_planes, output_planes, n_valid) per block, in order.

    Only the first n_valid bits of each plane are real samples. `fn` runs in a worker thread. `backend` as in
    `simulator.exhaustive.map_blocks`.
    """
    samples = int(samples)
    if samples < 1:
        raise AxnetError(f"--samples must be a positive number of patterns, got {samples}")
    program = _as_program(netlist)
    words = max(1, min(int(block_words), -(-samples // 64)))
    per_block = 64 * words
    n_blocks = -(-samples // per_block)
    threads = max(1, min(int(threads), n_blocks))
    circuit = select_native(program, backend, work=n_blocks * per_block * max(len(program.steps), 1))
    pool = queue.SimpleQueue()
    for _ in range(threads):
        pool.put(Evaluator(program, words, exhaustive=False, native=circuit))

    def work(block):
        inputs = random_input_planes(program.n_inputs, words, seed, block)
        n_valid = min(per_block, samples - block * per_block)
        ev = pool.get()
        try:
            ev.set_inputs(inputs)
            return fn(inputs, ev.run(), n_valid), n_valid
        finally:
            pool.put(ev)

    for result, n_valid in ordered_map(work, range(n_blocks), threads):
        if progress is not None:
            progress(n_valid)
        yield result


def planes_to_ints(planes, n_valid):
    """Integers sum(bit_k << k) per pattern: int64 for up to 63 planes, Python ints (object array) beyond."""
    planes = list(planes)
    if len(planes) <= 63:
        return planes_to_words(planes, n_valid)
    total = np.zeros(n_valid, dtype=object)
    for lo in range(0, len(planes), 60):
        chunk = planes_to_words(planes[lo:lo + 60], n_valid).astype(object)
        total = total + (chunk << lo)
    return total


def simulate_random(netlist, samples, seed=0, progress=None, block_words=DEFAULT_BLOCK_WORDS, threads=2,
                    backend="auto"):
    """(patterns, outputs) for `samples` uniformly random input patterns of a circuit of any width.

    Patterns follow the pattern = sum(in_i << i) convention. Both arrays are int64 when they fit in 63 bits and
    object arrays of Python ints otherwise. The same seed gives the same patterns.
    """
    n_out = len(netlist.outputs)
    pats, outs = [], []
    for p, o in map_random_blocks(
            netlist, lambda inputs, outputs, n: (planes_to_ints(inputs, n), planes_to_ints(outputs, n)),
            samples, seed=seed, block_words=block_words, threads=threads, progress=progress, backend=backend):
        pats.append(p)
        outs.append(o)
    if n_out == 0:
        outs = [np.zeros(len(p), dtype=np.int64) for p in pats]
    return np.concatenate(pats), np.concatenate(outs)
