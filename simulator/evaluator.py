"""One thread's evaluator of a compiled program over blocks of uint64 words: numpy steps, or a compiled kernel.

Shared by exhaustive (`simulator.exhaustive`), random (`simulator.streaming`) and per-lane numpy evaluation
(`simulator.engine`). Bit t of word j of a plane is pattern 64 * (w0 + j) + t for a block starting at word w0.
"""
from __future__ import annotations

import numpy as np

ALL_ONES = np.uint64(0xFFFFFFFFFFFFFFFF)
ZERO = np.uint64(0)
# Word of input i < 6: bit t is bit i of t.
LOW_INPUT_WORDS = [np.uint64(sum(1 << t for t in range(64) if (t >> i) & 1)) for i in range(6)]


def input_word_index_bits(i, start_word, words):
    """Input i >= 6 over words start_word.. : all-ones where bit (i-6) of the word index is set."""
    idx = np.arange(start_word, start_word + words, dtype=np.uint64)
    bits = (idx >> np.uint64(i - 6)) & np.uint64(1)
    return np.negative(bits)  # 1 -> all ones, 0 -> 0 (uint64 wrap-around)


class Evaluator:
    """One thread's buffers and bound steps for a program at a fixed block size (numpy), or the circuit's compiled
    kernel (`native`, a `simulator.engine.NativeCircuit`) writing the output planes.

    For exhaustive runs (`exhaustive=True`) an input that is one word repeated over the whole block (inputs 0..5,
    and inputs whose run of equal words covers the block) is a read-only stride-0 view of a single word: numpy
    reads it as a scalar, and it takes no cache space.
    """

    _UFUNCS = {"and": np.bitwise_and, "or": np.bitwise_or, "xor": np.bitwise_xor}

    def __init__(self, program, words, exhaustive=True, native=None):
        self.program = program
        self.words = words
        self.exhaustive = exhaustive
        self.native = native
        self._start_word = 0
        slots = max(program.n_inputs, 1) if self.native is not None else program.n_slots
        self.buffers = np.zeros((slots, words), dtype=np.uint64)
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
        if self.native is not None:  # the compiled engine writes every output plane itself
            self.out_planes = np.empty((program.n_outputs, words), dtype=np.uint64)
            self.outputs = list(self.out_planes)
            self._high = [i for i in self.cells if i >= 6]
            return
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
        self._start_word = start_word
        for i in self._high:
            self.cells[i][0] = ALL_ONES if (start_word >> (i - 6)) & 1 else ZERO

    def set_inputs(self, planes):
        """Copy explicit input planes (n_inputs x words), e.g. random patterns (needs exhaustive=False)."""
        for i in range(self.program.n_inputs):
            np.copyto(self.rows[i], planes[i])

    def run(self):
        """Evaluate every step; afterwards `self.outputs[k]` is output k's plane for the block."""
        if self.native is not None:
            if self.exhaustive:
                self.native.planes(self._start_word, self.words, out=self.out_planes)
            else:
                self.native.eval_planes(self.buffers[:self.program.n_inputs], out=self.out_planes)
            return self.outputs
        for fn, args in self.bound:
            fn(*args)
        return self.outputs
