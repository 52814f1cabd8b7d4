"""Integer arithmetic back-ends for the AdderNet layers: exact, a two-operand adder LUT, or a ripple of cells.

Every back-end quantizes activations x and weights w of a layer with ONE shared scale (see `dnn.quant`) to integers
in [-qmax, qmax], qmax = 2^(n-2) - 1 for an n-bit adder (the signed (n-1)-bit range, so the n-bit difference never
overflows), computes per tap the difference `d = C(w, -x)` with its adder C on n-bit two's-complement patterns
(w is the FIRST operand, -x the SECOND; the low n output bits are read as signed), and then `|d|` and the sum over the
patch exactly. The layer output is `-step * sum |d|` with `step = scale / qmax`. Zero-padding taps are x = 0.

Gradients (`grad=`):
- "ste": straight-through rounding and the exact operation's slopes, i.e. the AdderNet surrogate gradients at the
  dequantized values: dy/dw = x - w (full precision), dy/dx = HardTanh(w - x).
- "lut" (LutAdder): the circuit's gradient LUTs G_a, G_b (windowed difference) multiply the AdderNet surrogates.
  With d = C(w, -x): dd/dw = G_a(w, -x) and dd/dx = -G_b(w, -x). The surrogate of y = -|d| is, as in AdderNet,
  -d for the weight path (full precision instead of sign) and -HardTanh(d) for the input path, so
  dy/dw = -d * G_a(w, -x) and dy/dx = HardTanh(d) * G_b(w, -x), with d in real units (step * integer d).
  With an exact circuit (G = 1, d = w - x) this is exactly the authors' backward.
"""
from __future__ import annotations

import numpy as np
import torch

from circuits.errors import AxnetError
from dnn import adder_ops, native_kernels
from dnn.quant import abs_max, check_finite, integer_range, layer_scale, quantize

FLOAT32_EXACT = 1 << 24  # integer sums below this are exact in float32
MIN_LUT_BITS, MAX_LUT_BITS = 3, 12
ELEMENTWISE_CHUNK = 1 << 21  # int64 elements per temporary in the per-pair (cell adder) path


def _signed(values, bits):
    """Read the low `bits` bits of integer array `values` as two's complement."""
    low = values & ((1 << bits) - 1)
    return np.where(low >= (1 << (bits - 1)), low - (1 << bits), low)


class IntegerAdderFunction(torch.autograd.Function):
    """Quantize x and w with one step, sum |C(w, -x)| exactly on the back-end, and back-propagate per `grad`."""

    @staticmethod
    def forward(ctx, x, weight, step, geom, backend):
        xq = quantize(x, step, backend.qmax)
        wq = quantize(weight, step, backend.qmax)
        sums = backend.abs_sums(xq, wq, geom)
        ctx.save_for_backward(xq, wq, step)
        ctx.geom, ctx.backend = geom, backend
        return (sums * -step.to(sums.dtype)).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        xq, wq, step = ctx.saved_tensors
        grad_out = grad_out.contiguous().float()
        grad_x, grad_w = ctx.backend.backward(xq, wq, step, grad_out, ctx.geom, ctx.needs_input_grad[:2])
        return grad_x, grad_w, None, None, None


def _ste_backward(xq, wq, step, grad_out, geom, needs):
    """AdderNet surrogate gradients at the dequantized values (straight-through rounding)."""
    x_hat, w_hat = xq * step, wq * step
    grad_x = adder_ops.l1_input_grad(x_hat, w_hat, grad_out, geom) if needs[0] else None
    grad_w = adder_ops.l1_weight_grad(x_hat, w_hat, grad_out, geom) if needs[1] else None
    return grad_x, grad_w


class _Backend:
    """What every back-end shares: the quantized autograd path, describe() and the spec string."""

    bits = 8
    grad = "ste"
    sha256 = None

    @property
    def qmax(self):
        return integer_range(self.bits)

    def conv(self, x, weight, geom, scale):
        """The layer operation on this back-end: -step * sum |C(w, -x)| with the layer's shared scale."""
        x_max, w_max = abs_max(x), abs_max(weight)
        check_finite(x, "input", x_max)
        check_finite(weight, "weight", w_max)
        step = (layer_scale(x, weight, scale, x_max, w_max) / self.qmax).to(x.device)
        return IntegerAdderFunction.apply(x.float(), weight, step, geom, self)

    def backward(self, xq, wq, step, grad_out, geom, needs):
        return _ste_backward(xq, wq, step, grad_out, geom, needs)

    def __repr__(self):
        return f"{type(self).__name__}({self.spec})"


class ExactInt(_Backend):
    """Exact integer arithmetic on the same quantization grid as an n-bit adder: the baseline for approximate runs."""

    def __init__(self, bits=8):
        bits = int(bits)
        if not 3 <= bits <= 48:
            raise AxnetError(f"exact:{bits}: the adder width must be between 3 and 48 bits")
        self.bits = bits

    @property
    def spec(self):
        return f"exact:{self.bits}"

    def describe(self):
        return f"exact {self.bits}-bit integer adder (operands in +-{self.qmax}, one shared scale per layer)"

    def abs_sums(self, xq, wq, geom):
        """sum_k |w - x| exactly: float32 when the bound allows it, else float64."""
        bound = 2 * self.qmax * wq[0].numel()
        if bound < FLOAT32_EXACT:
            return -adder_ops.l1_forward(xq.contiguous(), wq.contiguous(), geom)
        if self.bits <= 32 and xq.device.type == "cpu" and native_kernels.available():
            return native_kernels.cell_forward(xq, wq, geom, [], 0, self.bits)  # integer kernel, no approximate cell
        return -adder_ops.l1_forward(xq.double().contiguous(), wq.double().contiguous(), geom)


class _TableAdder(_Backend):
    """A back-end whose difference d(w, v) over the whole quantized domain is a (V, V) matrix (V = 2*qmax + 1).

    The forward folds the layer's weights into per-tap tables T[k, v, o] = |d(w[o, k], v)| and sums table rows.
    """

    diff = None  # torch int64 (V, V): d for weight value index i and activation value index j (value = index - qmax)
    grad_w_slope = grad_x_slope = None  # float32 (V, V): G_a(w, -x) and G_b(w, -x), for grad="lut"

    def _fold(self, matrix, wq):
        """(K, V, O) tables: matrix[w[o, k] index, v] for every tap k, value v and filter o."""
        o = wq.shape[0]
        rows = (wq.reshape(o, -1) + self.qmax).long()
        return matrix.to(wq.device)[rows].permute(1, 2, 0).contiguous()

    def _index(self, xq):
        return (xq + self.qmax).to(torch.int32).contiguous()

    def abs_sums(self, xq, wq, geom):
        """sum_k |d(w, x)| exactly, by summing folded table rows."""
        bound = int(self.diff.abs().max()) * wq[0].numel()
        dtype = torch.float32 if bound < FLOAT32_EXACT else torch.float64
        tables = self._fold(self.diff.abs().to(dtype), wq)
        return adder_ops.table_forward(self._index(xq), tables, geom, self.qmax)

    def backward(self, xq, wq, step, grad_out, geom, needs):
        if self.grad == "ste":
            return _ste_backward(xq, wq, step, grad_out, geom, needs)
        index = self._index(xq)
        d = self.diff.to(device=grad_out.device, dtype=torch.float32) * step  # circuit difference, real units
        input_slopes = self._fold(d.clamp(-1, 1) * self.grad_x_slope.to(d.device), wq)  # (K, V, O)
        grad_x, hits = adder_ops.table_backward(index, input_slopes, grad_out, geom, self.qmax)
        weight_slopes = self._fold(-d * self.grad_w_slope.to(d.device), wq)
        grad_w = (hits * weight_slopes).sum(1).t().reshape(wq.shape)
        return (grad_x if needs[0] else None), (grad_w if needs[1] else None)


def _lut_bits(lut, where):
    """The adder width n of a LUT, after checking it has two operands of equal width in the supported range."""
    ops = ", ".join(f"{name}:{width}" for name, width in lut.operands)
    if lut.table.ndim != 2 or len(lut.operands) != 2:
        raise AxnetError(f"an adder back-end needs a LUT of exactly two operands, but this one has "
                         f"{len(lut.operands)} ({ops})", path=where)
    (_, wa), (_, wb) = lut.operands
    if wa != wb:
        raise AxnetError(f"an adder back-end needs two operands of equal width, but this LUT has {ops}", path=where)
    if not MIN_LUT_BITS <= wa <= MAX_LUT_BITS:
        raise AxnetError(f"a {wa}-bit adder LUT does not fit an adder layer: the width must be {MIN_LUT_BITS} to "
                         f"{MAX_LUT_BITS} bits (operands use the signed {wa - 1}-bit range)", path=where)
    # an n-bit adder's result fits n+1 bits; a wider table is another operation (a multiplier, say)
    lo, hi = (-(1 << wa), (1 << wa) - 1) if lut.signed else (0, (1 << (wa + 1)) - 1)
    table = np.asarray(lut.table)
    if table.min() < lo or table.max() > hi:
        raise AxnetError(f"LUT values run from {table.min()} to {table.max()}, beyond the {wa + 1}-bit result of a "
                         f"{wa}-bit adder ({lo}..{hi}): this is not an adder LUT (a multiplier?)", path=where)
    return int(wa)


def _check_grads(lut, where):
    """The gradient tables must be one finite float table per operand, shaped like the forward table."""
    names = [name for name, _ in lut.operands]
    if sorted(lut.grads) != sorted(names):
        raise AxnetError(f"the gradient tables ({', '.join(sorted(lut.grads))}) do not match the LUT's operands "
                         f"({', '.join(names)})", path=where)
    for name in names:
        g = np.asarray(lut.grads[name])
        if g.shape != lut.table.shape:
            raise AxnetError(f"gradient table grad_{name} has shape {g.shape}, but the LUT is {lut.table.shape}",
                             path=where)
        if not np.isfinite(g).all():
            raise AxnetError(f"gradient table grad_{name} holds non-finite values", path=where)


def adder_view(lut, bits):
    """The LUT as the adder layer reads it: operands and result as n-bit two's complement (low n output bits).

    A plain n-bit adder LUT also holds a carry-out bit, and an unsigned one orders its axes 0..2^n-1, so the values
    -1 and 0 sit at opposite ends of an axis. Differentiating that table would put the carry and the wrap into the
    gradients right where activations near 0 fall; gradients must be taken of this view instead.
    """
    from lutgen.lut import Lut

    table = _signed(np.asarray(lut.table, dtype=np.int64), bits)
    return Lut(table=table, operands=list(lut.operands), outputs=list(lut.outputs)[:bits], signed=True,
               circuit=lut.circuit, sha256=lut.sha256)


def layer_slopes(lut, bits, qmax, half_window, where=None):
    """Circuit slopes (dd/dw, dd/dc) at c = -x over the layer's domain, indexed [w + qmax, x + qmax] like `diff`.

    Windowed differences of the layer's reading of the circuit (see `adder_view`) in numeric order, with the window
    shrunk at the edges of the domain the layer can reach, so neither the carry-out, the raw-pattern wrap nor the
    overflow beyond the n-bit range enters a slope. A gradient file's own tables are used as they are only when they
    were taken of that same reading (a signed LUT with exactly n outputs) and no `half_window` overrides them;
    otherwise they are recomputed with the file's half window (or `half_window`).
    """
    from lutgen.gradient import shrink_gradient

    mask = (1 << bits) - 1
    pat = np.arange(-qmax, qmax + 1, dtype=np.int64) & mask
    meta = dict(lut.grad_meta or {})
    if half_window is None and lut.grads is not None and lut.signed and len(lut.outputs) == bits:
        name_a, name_b = (name for name, _ in lut.operands)
        return (np.asarray(lut.grads[name_a], np.float32)[np.ix_(pat, pat[::-1])],
                np.asarray(lut.grads[name_b], np.float32)[np.ix_(pat, pat[::-1])])
    if half_window is None and meta.get("method") == "diff":
        half_window = meta.get("half_window")
    if half_window is None:
        raise AxnetError("grad=lut needs gradient tables: this LUT has none; give a half window "
                         "(lut:PATH:grad=lut:w=W) or a file from `axnet gradlut`", path=where)
    reading = _signed(np.asarray(lut.table, dtype=np.int64)[np.ix_(pat, pat)], bits)
    slope_w, slope_c = shrink_gradient(reading, int(half_window), 0), shrink_gradient(reading, int(half_window), 1)
    return slope_w[:, ::-1], slope_c[:, ::-1]  # columns from c = -qmax..qmax to x = -qmax..qmax


class LutAdder(_TableAdder):
    """An n-bit two-operand adder LUT (from `axnet simulate`) as the layer's subtraction: d = C(w, -x).

    Operands are quantized to [-qmax, qmax], qmax = 2^(n-2) - 1, and passed to the LUT as n-bit two's-complement
    patterns, w as the FIRST operand and -x as the SECOND; the low n bits of the LUT entry are read as signed. |d| and
    the sum over the patch are exact. `grad="lut"` uses the LUT's gradient tables (a gradient file), or computes them
    on load with `half_window` through `lutgen.gradient.gradient_lut`; see the module docstring for the chain rule.
    """

    def __init__(self, lut, grad="ste", half_window=None):
        if grad not in ("ste", "lut"):
            raise AxnetError(f"grad='{grad}': expected 'ste' or 'lut'")
        self.path = None
        if not hasattr(lut, "table"):
            from lutgen.formats import load_lut
            self.path = str(lut)
            lut = load_lut(lut)
        where = self.path or (lut.circuit or None)
        self.bits = _lut_bits(lut, where)
        self.grad, self.half_window = grad, half_window
        self.circuit, self.sha256 = lut.circuit, lut.sha256
        values = np.arange(-self.qmax, self.qmax + 1, dtype=np.int64)
        mask = (1 << self.bits) - 1
        w_pat, nx_pat = (values & mask)[:, None], ((-values) & mask)[None, :]
        self.diff = torch.from_numpy(_signed(np.asarray(lut.table, dtype=np.int64)[w_pat, nx_pat], self.bits))
        if grad == "lut":
            if lut.grads is not None:
                _check_grads(lut, where)
            if half_window is None and (lut.grad_meta or {}).get("method") == "diff":
                self.half_window = lut.grad_meta.get("half_window")
            slope_w, slope_x = layer_slopes(lut, self.bits, self.qmax, half_window, where)
            self.grad_w_slope = torch.from_numpy(np.ascontiguousarray(slope_w))
            self.grad_x_slope = torch.from_numpy(np.ascontiguousarray(slope_x))

    @property
    def spec(self):
        text = f"lut:{self.path or self.circuit}"
        if self.grad == "lut":
            text += ":grad=lut" + (f":w={self.half_window}" if self.half_window is not None else "")
        return text

    def describe(self):
        return (f"{self.bits}-bit adder LUT {self.circuit or self.path} as d = C(w, -x), operands in +-{self.qmax}, "
                f"grad={self.grad}" + (f" (half window {self.half_window})" if self.half_window is not None else ""))


def lut_gather_sums(table, bits, xq, wq, geom):
    """Slow reference: sum_k |d| with d gathered from the LUT for every (x, w) pair, no folding (int64).

    `table` is the raw (2^n, 2^n) LUT, xq and wq integer-valued quantized tensors. This is the plain gather the fast
    table path is tested and benchmarked against.
    """
    table = torch.as_tensor(np.asarray(table, dtype=np.int64)).to(xq.device)
    mask, half = (1 << bits) - 1, 1 << (bits - 1)
    n, o = xq.shape[0], wq.shape[0]
    cols = geom.unfold(xq.double()).to(torch.int64)  # N, K, L
    w_pat = wq.reshape(o, -1).to(torch.int64) & mask
    out = torch.empty(n, o, cols.shape[2], dtype=torch.int64, device=xq.device)
    for i in range(n):
        words = table[w_pat[:, :, None], ((-cols[i]) & mask)[None]] & mask  # O, K, L
        out[i] = torch.where(words >= half, words - (1 << bits), words).abs().sum(1)
    return out.view(n, o, *geom.output_size(*xq.shape[2:]))


# -- ripple-carry adders of full-adder cells ------------------------------------------------------------------------
def ripple_tables(rows, bits):
    """Chained tables for the low `bits` cells: [(offset, m, table)] with m <= 8 bits each.

    table[(cin << 2m) | (a << m) | b] = s | (cout << m) for m-bit slices a, b of the operands, computed by rippling
    the cell's truth table `rows` (row index A*4 + B*2 + Cin) across the slice. Every slice of the same width
    ripples the same cell the same way, so those chunks share one table tensor (the compiled adder reads it once).
    """
    s_of = np.array([r[0] for r in rows], dtype=np.int64)
    c_of = np.array([r[1] for r in rows], dtype=np.int64)
    chunks, offset, made = [], 0, {}
    while offset < bits:
        m = min(8, bits - offset)
        if m in made:
            chunks.append((offset, m, made[m]))
            offset += m
            continue
        entries = np.arange(1 << (2 * m + 1), dtype=np.int64)
        b, a, carry = entries & ((1 << m) - 1), (entries >> m) & ((1 << m) - 1), entries >> (2 * m)
        total = np.zeros_like(entries)
        for i in range(m):
            row = ((a >> i) & 1) * 4 + ((b >> i) & 1) * 2 + carry
            total |= s_of[row] << i
            carry = c_of[row]
        made[m] = torch.from_numpy(total | (carry << m))
        chunks.append((offset, m, made[m]))
        offset += m
    return chunks


def ripple_add(a, b, chunks, approx_bits, width):
    """Width-bit sum of patterns a and b (int64 tensors) whose low `approx_bits` cells follow `chunks`.

    The high part is exact: sum = ((a_hi + b_hi + c_k) << k) | s_lo, with (s_lo, c_k) from the chained tables.
    Returns the low `width` bits as an unsigned pattern.
    """
    carry = torch.zeros((), dtype=torch.int64, device=a.device)
    low = torch.zeros((), dtype=torch.int64, device=a.device)
    for offset, m, table in chunks:
        mask = (1 << m) - 1
        index = (carry << (2 * m)) | (((a >> offset) & mask) << m) | ((b >> offset) & mask)
        entry = table.to(a.device)[index]
        low = low | ((entry & mask) << offset)
        carry = entry >> m
    high = ((a >> approx_bits) + (b >> approx_bits) + carry) << approx_bits
    return (high | low) & ((1 << width) - 1)


class CellAdder(_TableAdder):
    """A width-bit ripple-carry adder whose lowest `approx_bits` cells are `cell` and the rest exact full adders.

    The seed-000 setting: operands quantized to the signed (width-1)-bit range with the shared scale, then
    d = approx_add(w, -x) in width-bit two's complement (w the first operand, A of each cell), |d| and the sum exact.
    approx_bits = 0 is exact addition. Adders of up to 12 bits run through folded tables like LutAdder; wider ones
    compute every (x, w) pair with the chained-table ripple (`ripple_add`). Gradients are straight-through ("ste").
    """

    def __init__(self, cell="maj", approx_bits=0, width=32, grad="ste"):
        from circuits.library import cell_truth_table
        width, approx_bits = int(width), int(approx_bits)
        if not 3 <= width <= 48:
            raise AxnetError(f"cell adder width={width}: must be between 3 and 48 bits")
        if not 0 <= approx_bits <= width:
            raise AxnetError(f"cell adder k={approx_bits}: the number of approximate cells must be 0 to {width}")
        if grad != "ste":
            raise AxnetError(f"cell adder grad='{grad}': only 'ste' is available (a {width}-bit adder has no "
                             "gradient LUT); make a LUT of a narrow adder for grad=lut")
        self.cell, self.approx_bits, self.bits, self.grad = cell, approx_bits, width, grad
        self.rows = cell_truth_table(cell)
        self.chunks = ripple_tables(self.rows, approx_bits)
        if width <= MAX_LUT_BITS:
            values = torch.arange(-self.qmax, self.qmax + 1, dtype=torch.int64)
            mask = (1 << width) - 1
            words = ripple_add((values & mask)[:, None], ((-values) & mask)[None, :], self.chunks, approx_bits, width)
            self.diff = torch.from_numpy(_signed(words.numpy(), width))

    @property
    def spec(self):
        return f"cell:{self.cell}:k={self.approx_bits}:width={self.bits}"

    def describe(self):
        return (f"{self.bits}-bit ripple-carry adder, lowest {self.approx_bits} cells '{self.cell}', as "
                f"d = add(w, -x), operands in +-{self.qmax}, grad={self.grad}")

    def abs_sums(self, xq, wq, geom):
        if self.diff is not None:
            return super().abs_sums(xq, wq, geom)
        if self.approx_bits == 0:  # exact addition, and the operand range rules out overflow: |w - x| exactly
            return ExactInt(self.bits).abs_sums(xq, wq, geom)
        if self.bits <= 32 and xq.device.type == "cpu" and native_kernels.available():
            return native_kernels.cell_forward(xq, wq, geom, self.chunks, self.approx_bits, self.bits)
        return self.pairwise_sums(xq, wq, geom)

    def pairwise_sums(self, xq, wq, geom):
        """sum_k |add(w, -x)| computed for every (x, w) pair in chunks (float64, exact below 2^53)."""
        n, o = xq.shape[0], wq.shape[0]
        mask = (1 << self.bits) - 1
        w_pat = (wq.reshape(o, -1).to(torch.int64) & mask)[None, :, :, None]  # 1, O, K, 1
        ho, wo = geom.output_size(*xq.shape[2:])
        length, k = ho * wo, w_pat.shape[2]
        out = torch.empty(n, o, length, dtype=torch.float64, device=xq.device)
        o_step = max(1, min(o, ELEMENTWISE_CHUNK // (k * length)))
        n_step = max(1, ELEMENTWISE_CHUNK // (k * length * o_step))
        half = 1 << (self.bits - 1)
        for n0 in range(0, n, n_step):
            cols = geom.unfold(xq[n0:n0 + n_step].double()).to(torch.int64)
            nx_pat = ((-cols) & mask)[:, None]  # n, 1, K, L
            for o0 in range(0, o, o_step):
                words = ripple_add(w_pat[:, o0:o0 + o_step], nx_pat, self.chunks, self.approx_bits, self.bits)
                d = torch.where(words >= half, words - (1 << self.bits), words)
                out[n0:n0 + n_step, o0:o0 + o_step] = d.abs_().sum(2).double()
        return out.view(n, o, ho, wo)


# -- choosing back-ends ---------------------------------------------------------------------------------------------
def _options(parts, text, allowed):
    """key=value options from the tail of an --arith spec."""
    options = {}
    for part in parts:
        key, sep, value = part.partition("=")
        if not sep or key not in allowed:
            raise AxnetError(f"--arith '{text}': unexpected '{part}' (options here: "
                             f"{', '.join(k + '=...' for k in allowed)})")
        options[key] = value
    return options


def _int_option(options, key, text, default=None):
    if key not in options:
        if default is None:
            raise AxnetError(f"--arith '{text}': {key}=... is required")
        return default
    try:
        return int(options[key])
    except ValueError:
        raise AxnetError(f"--arith '{text}': {key}={options[key]} is not an integer") from None


def parse_arith(text):
    """A back-end from a CLI string: float | exact:BITS | lut:PATH[:grad=lut|ste][:w=W] | cell:NAME:k=K[:width=W].

    Returns None for "float" (exact float AdderNet).
    """
    text = str(text).strip()
    kind, _, rest = text.partition(":")
    if kind == "float" and not rest:
        return None
    if kind == "exact":
        try:
            return ExactInt(int(rest) if rest else 8)
        except ValueError:
            raise AxnetError(f"--arith '{text}': expected exact:BITS, e.g. exact:8") from None
    if kind == "lut" and rest:
        parts = rest.split(":")
        tail = 0
        while tail < len(parts) - 1 and parts[-1 - tail].partition("=")[0] in ("grad", "w"):
            tail += 1
        path = ":".join(parts[:len(parts) - tail])
        options = _options(parts[len(parts) - tail:], text, ("grad", "w"))
        half_window = _int_option(options, "w", text, default=-1)
        return LutAdder(path, grad=options.get("grad", "lut" if "w" in options else "ste"),
                        half_window=None if half_window == -1 else half_window)
    if kind == "cell" and rest:
        name, *parts = rest.split(":")
        options = _options(parts, text, ("k", "width", "grad"))
        return CellAdder(name, approx_bits=_int_option(options, "k", text),
                         width=_int_option(options, "width", text, default=32), grad=options.get("grad", "ste"))
    raise AxnetError(f"--arith '{text}': expected float, exact:BITS, lut:PATH[:grad=lut|ste][:w=W] or "
                     "cell:NAME:k=K[:width=W]")


def set_arith(model, arith):
    """Give every adder layer of `model` the back-end `arith` (None: exact float); returns how many were set."""
    from dnn.adder2d import adder_layers
    layers = adder_layers(model)
    for layer in layers:
        layer.arith = arith
    return len(layers)
