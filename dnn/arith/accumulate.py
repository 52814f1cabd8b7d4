"""Approximate accumulation: the adder that sums a layer's terms is a circuit too (`Accumulator`).

Semantics (the same in README.md):
- The terms of one output, in the order `F.unfold` lays out a patch (input channel outermost, then kernel row, then
  kernel column), zero-padding taps included: t_k = |d_k| for adder layers (d_k from the layer's arithmetic
  back-end, as integers), the integer product for multiplier layers.
- An accumulator is an adder circuit C of n_acc bits (first operand the running value, second the new term; the low
  n_acc output bits are kept, so it wraps as the register would).
  - `order="sequential"`: acc = 0, then acc = C(acc, t_k) for k = 0 .. K-1 (a MAC unit).
  - `order="tree"`: a pairwise tree: each level adds adjacent pairs (t0 + t1, t2 + t3, ...) through C, an odd last
    term passes up unchanged, until one value remains.
  - The result is read unsigned for adder layers, and as n_acc-bit two's complement for multiplier layers (products
    and terms then enter as n_acc-bit patterns). The layer then scales it and adds the bias exactly.
- With an exact accumulator wide enough for the sum, every layer gives exactly today's output (a test).

In the unsigned (affine) multiplier mode the accumulator sums the products AM(q_x, q_w); the zero-point corrections
of `dnn.layers.mult_layers` stay exact. `signed=True` reads the result as two's complement in adder layers too.

Gradients: straight-through across the accumulation (the backward is the exact sum's), times each term's own
gradient as the back-end defines it (AdderNet surrogates, gradient LUTs or `diff`): the accumulator changes the
forward only.

Paths, all giving the same integers: a compiled kernel per circuit (`dnn.kernels.accum_native`, CPU), the
bit-sliced torch path (`dnn.kernels.accum_ops`, any device), and `reference` (a plain loop, for tests).
"""
from __future__ import annotations

import os

import torch

from circuits.errors import AxnetError
from dnn.kernels import accum_native
from dnn.kernels import triton as triton_kernels
from dnn.kernels.accum_ops import ORDERS, BitslicedCircuit, indexed_accumulate_torch, reference_accumulate

SCHEMES = ("rca", "loa", "eta1", "trunc")
MAX_PAIR_VALUES = 1 << 12  # a back-end whose operands take more values gets no term table
MAX_BITS = 53  # accumulated values leave as float64, exact up to 2^53


def generator_netlist(text):
    """The Netlist of a bundled-scheme spec `SCHEME:WIDTH[:k=K][:cell=NAME]` (rca, loa, eta1, trunc)."""
    from circuits import generators
    scheme, *parts = text.split(":")
    if not parts:
        raise AxnetError(f"accumulator '{text}': expected SCHEME:WIDTH[:k=K], e.g. loa:16:k=4")
    try:
        width = int(parts[0])
    except ValueError:
        raise AxnetError(f"accumulator '{text}': width '{parts[0]}' is not an integer") from None
    options = {}
    for part in parts[1:]:
        key, sep, value = part.partition("=")
        if not sep or key not in ("k", "cell") or (key == "cell" and scheme != "rca"):
            raise AxnetError(f"accumulator '{text}': unexpected '{part}' (options: k=K" +
                             (", cell=NAME" if scheme == "rca" else "") + ")")
        options[key] = value
    try:
        k = int(options.get("k", 0))
    except ValueError:
        raise AxnetError(f"accumulator '{text}': k={options['k']} is not an integer") from None
    if not 1 <= width <= MAX_BITS or not 0 <= k <= width:
        raise AxnetError(f"accumulator '{text}': need a width of 1 to {MAX_BITS} bits and 0 <= k <= width")
    if scheme == "rca":
        return generators.ripple_carry_adder(width, cell=options.get("cell", "maj"), approx_bits=k)
    build = {"loa": generators.loa_adder, "eta1": generators.eta1_adder, "trunc": generators.truncated_adder}
    return build[scheme](width, k)


def load_netlist(circuit):
    """(netlist, spec text, sha256) from a Netlist, a BLIF/PLA path, or a bundled-scheme spec."""
    from circuits.netlist import Netlist
    if isinstance(circuit, Netlist):
        return circuit, circuit.name, None
    text = os.fspath(circuit) if isinstance(circuit, os.PathLike) else str(circuit)
    if text.split(":")[0] in SCHEMES:
        return generator_netlist(text), text, None
    if not os.path.isfile(text):
        raise AxnetError("accumulator: no such file, and not a scheme spec (rca, loa, eta1, trunc:WIDTH:k=K)",
                         path=text)
    from circuits.files import file_sha256
    if text.endswith(".pla"):
        from circuits.pla import read_pla
        return read_pla(text), text, file_sha256(text)
    from circuits.blif import read_blif
    return read_blif(text), text, file_sha256(text)


class Accumulator:
    """An n_acc-bit adder circuit that sums a layer's terms in `order` ("sequential" or "tree"); see the module.

    `circuit`: a BLIF or PLA path, a `circuits.netlist.Netlist`, or a bundled-scheme spec such as `loa:16:k=4`,
    `trunc:16:k=4`, `eta1:16:k=4` or `rca:16:cell=maj:k=4`. Its two operands must have the same width n_acc (the
    accumulator's width); its low n_acc outputs are the new running value. One object may serve any number of layers.
    """

    def __init__(self, circuit, order="sequential", signed=False):
        from lutgen.operands import group_operands
        from simulator.program import compile_netlist
        if order not in ORDERS:
            raise AxnetError(f"accumulator order '{order}': expected sequential or tree")
        netlist, self.source, self.sha256 = load_netlist(circuit)
        where = self.source if self.sha256 else None
        operands = group_operands(netlist.inputs)
        if len(operands) != 2 or operands[0].width != operands[1].width:
            shape = ", ".join(f"{op.name}:{op.width}" for op in operands)
            raise AxnetError(f"accumulator '{netlist.name}' needs two operands of equal width (running value, "
                             f"term), but has {len(operands)} ({shape})", path=where)
        self.bits = operands[0].width
        if len(netlist.outputs) < self.bits:
            raise AxnetError(f"accumulator '{netlist.name}' has {len(netlist.outputs)} outputs, fewer than its "
                             f"{self.bits}-bit operands", path=where)
        if self.bits > MAX_BITS:
            raise AxnetError(f"accumulator '{netlist.name}': {self.bits}-bit operands; at most {MAX_BITS} are "
                             "supported (results are exact float64 integers)", path=where)
        self.netlist, self.order, self.signed = netlist, order, bool(signed)
        self.name = netlist.name
        from circuits.netlist import Netlist
        kept = Netlist(netlist.name, netlist.inputs, netlist.outputs[:self.bits], netlist.nodes, netlist.source)
        program = compile_netlist(kept)  # the carry out and any higher outputs are dead logic here
        self.a_inputs, self.b_inputs = operands[0].bits, operands[1].bits
        self.circuit = BitslicedCircuit(program, self.a_inputs, self.b_inputs, program.output_slots, self.bits)
        self._program = program
        self._tables = {}

    @property
    def spec(self):
        return self.source + (":order=tree" if self.order == "tree" else "")

    def describe(self):
        return f"{self.bits}-bit accumulator {self.name} ({self.order})"

    def __repr__(self):
        return f"Accumulator({self.spec!r})"

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_tables"] = {}
        return state

    # -- one circuit call, for the reference ------------------------------------------------------------------------
    def add_int(self, a, b):
        """C(a, b) on two Python ints through `Netlist.evaluate_int` (low n_acc bits): the reference's step."""
        mask = (1 << self.bits) - 1
        pattern = 0
        for j in range(self.bits):
            pattern |= ((a >> j) & 1) << self.a_inputs[j]
            pattern |= ((b >> j) & 1) << self.b_inputs[j]
        return self.netlist.evaluate_int(pattern) & mask

    def read(self, patterns, signed):
        """n_acc-bit patterns (int64) as unsigned or two's-complement integers."""
        if not signed:
            return patterns
        half = 1 << (self.bits - 1)
        return torch.where(patterns >= half, patterns - (1 << self.bits), patterns)

    # -- the core: terms from a table of (weight, activation) pairs --------------------------------------------------
    def check_terms(self, pair, signed, what):
        """One-line error when a single term does not fit the accumulator as it is read."""
        lo, hi = int(pair.min()), int(pair.max())
        half = 1 << (self.bits - 1)
        limit_lo, limit_hi = (-half, half - 1) if signed else (0, 2 * half - 1)
        if lo < limit_lo or hi > limit_hi:
            need = max(hi.bit_length(), (-lo - 1).bit_length()) + (1 if signed else 0)
            raise AxnetError(f"accumulator {self.spec}: {self.bits} bits are narrower than a single term needs: "
                             f"{what} run from {lo} to {hi}, which takes {need} bits"
                             + (" as two's complement" if signed else ""))

    def accumulate(self, cols, w_index, pair, signed, path="auto"):
        """out[m, o] = ACC_k pair[w_index[o, k], cols[m, k]] read as (un)signed integers, float64 (M, O).

        cols (M, K) and w_index (O, K) are integer tensors; pair (Vw, Vx) int64 holds the term values.
        path: "auto" (compiled on CPU when available, else torch), "native", "torch" or "reference".
        """
        mask = (1 << self.bits) - 1
        if path in ("auto", "native") and cols.device.type == "cpu" and self.bits <= accum_native.MAX_BITS:
            source, tables = self._native_tables(pair)
            out = accum_native.indexed_accumulate(source, cols.t(), w_index, tables, self.order == "tree", signed)
            if out is not None:
                return out
        patterns = pair.to(torch.int64) & mask
        if path == "auto" and triton_kernels.use(cols):  # CUDA: the Triton kernels (dnn.kernels.triton.accum)
            from dnn.kernels.triton import accum
            out = accum.accumulate(self._program, self.a_inputs, self.b_inputs, self._program.output_slots, cols,
                                   w_index.to(cols.device), patterns.to(cols.device), self.order)
            return self.read(out, signed).double()  # float64 like every other path: the layer scales it by step
        if path == "native":
            raise AxnetError("the compiled accumulator kernel is not available on this machine")
        patterns = patterns.to(cols.device)
        return self.accumulate_terms(cols, w_index.to(cols.device).long(),
                                     lambda c, w: patterns[w[None, :, :], c[:, None, :]], signed, path)

    def accumulate_terms(self, cols, w, terms_of, signed, path="torch"):
        """out[m, o] = ACC_k of the terms `terms_of(cols_chunk, w)` -> (mc, O, K) int64 values, read (un)signed,
        as float64 (exact: accumulators have at most MAX_BITS = 53 bits).

        The torch path (any device) or, with path="reference", a plain Python loop over every output's terms."""
        mask = (1 << self.bits) - 1
        if path == "reference":
            terms = (terms_of(cols.long(), w) & mask).reshape(-1, cols.shape[1]).tolist()
            out = torch.tensor(reference_accumulate(self.add_int, terms, self.order), dtype=torch.int64)
            return self.read(out.view(cols.shape[0], w.shape[0]), signed).to(cols.device).double()
        out = indexed_accumulate_torch(self.circuit, cols, w, lambda c, ww: terms_of(c, ww) & mask, self.order)
        return self.read(out, signed).double()

    def _source(self, term_bits):
        return accum_native.c_source(self._program, self.a_inputs, self.b_inputs, self._program.output_slots,
                                     self.bits, max(1, term_bits))

    # -- adder layers ---------------------------------------------------------------------------------------------
    def adder_sums(self, backend, xq, wq, geom, path="auto"):
        """The accumulated |d| of an adder layer as (N, O, Ho, Wo) float64 (xq, wq: quantized integer tensors)."""
        from dnn.kernels.adder_ops import _unfold_index
        qmax = backend.qmax
        n, o = xq.shape[0], wq.shape[0]
        ho, wo = geom.output_size(*xq.shape[2:])
        w_index = (wq.reshape(o, -1) + qmax).long()
        if 2 * qmax + 1 <= MAX_PAIR_VALUES and path in ("auto", "native"):
            out = self._native_image(xq, qmax, geom, w_index, self.adder_pair_table(backend, xq.device), path)
            if out is not None:
                return out
        cols = _unfold_index((xq + qmax).to(torch.int32), geom, qmax)  # (N, K, L) value indices, padding x = 0
        k = cols.shape[1]
        cols = cols.transpose(1, 2).reshape(-1, k)
        if 2 * qmax + 1 <= MAX_PAIR_VALUES:
            out = self.accumulate(cols, w_index, self.adder_pair_table(backend, xq.device), self.signed, path)
        else:  # a wide back-end: every (w, x) pair computed, through the torch path
            out = self.accumulate_terms(cols, w_index, lambda c, w: self._wide_terms(backend, c, w),
                                        self.signed, "reference" if path == "reference" else "torch")
        return out.view(n, ho * wo, o).transpose(1, 2).reshape(n, o, ho, wo)

    def _native_image(self, xq, qmax, geom, w_index, pair, path):
        """The compiled kernel straight from the activation index image (no unfold), or None."""
        if xq.device.type != "cpu" or self.bits > accum_native.MAX_BITS:
            return None
        source, tables = self._native_tables(pair)
        return accum_native.image_accumulate(source, (xq + qmax).to(torch.int32), geom, qmax, w_index, tables,
                                             self.order == "tree", self.signed)

    def _native_tables(self, pair):
        """(C source, kernel tables) for a cached term table: built once per table, not per forward."""
        key = ("native", id(pair), accum_native.BYTE_TABLES)  # the entry keeps `pair`, so its id stays unique
        if key not in self._tables:
            patterns = pair.to(torch.int64) & ((1 << self.bits) - 1)
            term_bits = max(1, int(patterns.max()).bit_length())
            self._tables[key] = (pair, (self._source(term_bits), accum_native.term_tables(patterns, term_bits)))
        return self._tables[key][1]

    def _wide_terms(self, backend, c, w):
        qmax = backend.qmax
        terms = pair_differences(backend, w[None, :, :] - qmax, c[:, None, :] - qmax).abs()
        self.check_terms(terms, self.signed, f"the terms |d| of {backend.spec}")
        return terms

    def adder_pair_table(self, backend, device):
        """|d(w, x)| over the back-end's whole quantized domain, indexed [w + qmax, x + qmax] (int64), checked."""
        key = (id(backend), str(device))
        if key not in self._tables:
            qmax = backend.qmax
            values = torch.arange(-qmax, qmax + 1, dtype=torch.int64)
            pair = pair_differences(backend, values[:, None], values[None, :]).abs()
            self.check_terms(pair, self.signed, f"the terms |d| of {backend.spec}")
            self._tables[key] = (backend, pair.to(device))  # the back-end is kept so its id stays unique
        return self._tables[key][1]

    # -- multiplier layers ----------------------------------------------------------------------------------------
    def mult_sums(self, mult, qx, qw, path="auto"):
        """The accumulated products sum_k AM(q_x, q_w) of a multiplier layer as float64 (M, O), read signed."""
        key = (id(mult), str(qx.device))
        if getattr(mult, "values", None) is None:
            raise AxnetError(f"accumulator {self.spec}: {mult.describe()} has no product table to take terms from "
                             "(a netlist multiplier evaluated per pair); use a LUT multiplier of at most 10 bits")
        if key not in self._tables:
            import numpy as np
            pair = torch.from_numpy(np.ascontiguousarray(np.asarray(mult.values, dtype=np.int64).T))
            self.check_terms(pair, True, f"the products of {mult.describe()}")
            self._tables[key] = (mult, pair.to(qx.device))
        pair = self._tables[key][1]
        qmin_a, qmin_b = mult.qrange(0)[0], mult.qrange(1)[0]
        cols = (qx.detach() - qmin_a).round().long()
        w_index = (qw.detach() - qmin_b).round().long()
        return self.accumulate(cols, w_index, pair, True, path)


def pair_differences(backend, w, x):
    """The back-end's integer difference d = C(w, -x) for quantized values w, x (broadcast int64 tensors)."""
    qmax = backend.qmax
    if getattr(backend, "diff", None) is not None:
        return backend.diff[w + qmax, x + qmax]
    if hasattr(backend, "differences"):  # NetlistAdder beyond its domain table
        return backend.differences(w, x)
    from dnn.arith.base import ExactInt
    from dnn.arith.cell_adder import CellAdder, ripple_add
    if isinstance(backend, CellAdder):
        mask = (1 << backend.bits) - 1
        words = ripple_add(w & mask, (-x) & mask, backend.chunks, backend.approx_bits, backend.bits)
        half = 1 << (backend.bits - 1)
        return torch.where(words >= half, words - (1 << backend.bits), words)
    if isinstance(backend, ExactInt):
        return (w - x).expand(torch.broadcast_shapes(w.shape, x.shape))
    raise AxnetError(f"accumulator: the back-end {backend.spec} cannot give its differences to an accumulator")


def parse_accum(text):
    """An Accumulator from a CLI string: SCHEME:WIDTH[:k=K][:cell=NAME] or PATH, then optionally :order=tree
    (or :order=sequential); `none` gives None. Errors name --accum."""
    text = str(text).strip()
    if text in ("", "none"):
        return None
    body, order = text, "sequential"
    head, sep, tail = text.rpartition(":")
    if sep and tail.startswith("order="):
        body, order = head, tail.partition("=")[2]
    if order not in ORDERS:
        raise AxnetError(f"--accum '{text}': order '{order}' is not sequential or tree")
    try:
        return Accumulator(body, order=order)
    except AxnetError as exc:
        if exc.path:
            raise
        raise AxnetError(f"--accum '{text}': {exc.message}") from None



def accum_label(label, accum):
    """A back-end's one-line label with the accumulator appended (unchanged for None)."""
    return label if accum is None else f"{label}; {accum.describe()}"
