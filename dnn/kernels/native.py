"""ctypes wrappers of the compiled AdderNet kernels (`csrc/*.c`): padding, buffers and argument marshalling.

Each wrapper mirrors a torch reference in `dnn.kernels.adder_ops` (the dispatcher there decides which runs).
"""
from __future__ import annotations

import ctypes
import threading

import torch
import torch.nn.functional as F

from dnn.kernels.build import available, error, load  # noqa: F401  (re-exported: callers ask native.available())

SLACK = 256  # spare elements after each padded image, so 8-lane vectors may read past the end of a row


def _ptr(t):
    return ctypes.c_void_p(t.data_ptr())


def _ints(*values):
    return [ctypes.c_int(int(v)) for v in values]


_WORK = threading.local()


def _work_buffer(name, numel):
    """A float32 work buffer of at least `numel` elements kept between calls (per thread): fresh multi-MB buffers
    cost a page fault per 4 KiB on every call, which on a VM is several milliseconds per layer."""
    buffers = _WORK.__dict__.setdefault("buffers", {})
    buf = buffers.get(name)
    if buf is None or buf.numel() < numel:
        buf = buffers[name] = torch.empty(numel, dtype=torch.float32)
    return buf[:numel]


def _typed_buffer(name, dtype, numel):
    """A work buffer of `dtype` kept between calls (per thread), like `_work_buffer`."""
    buffers = _WORK.__dict__.setdefault("typed", {})
    buf = buffers.get((name, dtype))
    if buf is None or buf.numel() < numel:
        buf = buffers[(name, dtype)] = torch.empty(max(numel, 1), dtype=dtype)
    return buf[:numel]


def _padded(x, geom, fill, dtype):
    """Copy x (N, C, H, W) into a fresh buffer padded by geom.padding with `fill`, plus SLACK spare elements."""
    n, c, h, w = x.shape
    ph, pw = geom.padding
    hp, wp = h + 2 * ph, w + 2 * pw
    flat = torch.empty(n * c * hp * wp + SLACK, dtype=dtype)
    flat[n * c * hp * wp:] = fill
    image = flat[: n * c * hp * wp].view(n, c, hp, wp)
    if dtype in (torch.float32, torch.int32):  # one compiled pass
        src = x.to(dtype).contiguous()
        bits = torch.tensor([fill], dtype=dtype).view(torch.int32).item() & 0xFFFFFFFF
        load().pad_planes_32(_ptr(src), _ptr(flat), ctypes.c_long(n * c), *_ints(h, w, ph, pw),
                             ctypes.c_uint32(bits), ctypes.c_int(torch.get_num_threads()))
        return flat, image
    if ph:  # only the border is filled: the interior is written once, by the copy
        image[:, :, :ph] = fill
        image[:, :, ph + h:] = fill
    if pw:
        image[:, :, ph:ph + h, :pw] = fill
        image[:, :, ph:ph + h, pw + w:] = fill
    image[:, :, ph:ph + h, pw:pw + w] = x
    return flat, image


def _geometry_args(geom, ho, wo):
    return _ints(*geom.kernel, *geom.stride, *geom.dilation, ho, wo)


def pad_input(x, geom):
    """(flat, image): x zero-padded for the l1 kernels, with slack; pass it to both kernels to pad only once."""
    return _padded(x, geom, 0.0, torch.float32)


def l1_forward(x, weight, geom, padded=None):
    """Compiled exact forward: -sum |x - w| over each padded patch, (N, O, Ho, Wo) float32."""
    lib = load()
    n, c, h, w = x.shape
    o = weight.shape[0]
    ho, wo = geom.output_size(h, w)
    flat, image = padded or pad_input(x, geom)
    blocks = (o + 7) // 8
    wt = torch.zeros(blocks * 8, weight[0].numel(), dtype=torch.float32)
    wt[:o] = weight.reshape(o, -1)
    wt = wt.view(blocks, 8, -1).transpose(1, 2).contiguous()
    out = torch.empty(n, o, ho, wo, dtype=torch.float32)
    lib.l1_forward_f32(_ptr(flat), _ptr(wt), _ptr(out), *_ints(n, c, image.shape[2], image.shape[3], o),
                       *_geometry_args(geom, ho, wo), ctypes.c_int(torch.get_num_threads()))
    return out


def l1_input_grad(x_shape, weight, grad_out, geom, padded):
    """Compiled HardTanh input gradient of an input of `x_shape`, from its `pad_input` buffers."""
    lib = load()
    n, c, h, w = x_shape
    o = weight.shape[0]
    ho, wo = geom.output_size(h, w)
    flat, image = padded
    wk = weight.reshape(o, -1).t().contiguous()
    g = _work_buffer("grad_rows", n * ho * o * wo + SLACK)
    g[n * ho * o * wo:] = 0
    gsum = _work_buffer("grad_sums", n * ho * wo + SLACK)
    gsum[n * ho * wo:] = 0
    lib.l1_grad_rows(_ptr(grad_out.float().contiguous()), _ptr(g), _ptr(gsum), *_ints(n, o, ho, wo),
                     ctypes.c_int(torch.get_num_threads()))
    grad = torch.empty(n, c, h, w, dtype=torch.float32)
    threads = torch.get_num_threads()
    scratch = _work_buffer("planes", threads * (image.shape[2] * image.shape[3] + 8))
    lib.l1_input_grad_f32(_ptr(flat), _ptr(wk), _ptr(g), _ptr(gsum), _ptr(grad), _ptr(scratch),
                          *_ints(n, c, image.shape[2], image.shape[3], o), *_geometry_args(geom, ho, wo),
                          *_ints(*geom.padding, h, w), ctypes.c_int(threads))
    return grad


def cell_forward(xq, wq, geom, chunks, approx_bits, width):
    """Compiled per-pair sums of |add(w, -x)| for a ripple of cells (width <= 32), (N, O, Ho, Wo) float64."""
    if len(chunks) <= 1 and width <= 32:
        return _cell_small_forward(xq, wq, geom, chunks[0][2] if chunks else None, approx_bits, width)
    lib = load()
    n, c, h, w = xq.shape
    o = wq.shape[0]
    ho, wo = geom.output_size(h, w)
    mask = (1 << width) - 1
    flat, image = _padded((-xq).to(torch.int64) & mask, geom, 0, torch.int64)
    wk = (wq.reshape(o, -1).to(torch.int64) & mask).contiguous()
    # entries hold m + 1 <= 9 bits: int16 tables, each shared table once (ripple_tables gives every m = 8 chunk the
    # same one), so a 32-cell ripple reads one 256 KiB table that stays in L2, not four of 1 MiB
    tables, starts, seen = [], [], {}
    for _, _, table in chunks:
        if id(table) not in seen:
            seen[id(table)] = sum(t.numel() for t in tables)
            tables.append(table.to(torch.int16))
        starts.append(seen[id(table)])
    tabs = torch.cat(tables) if tables else torch.zeros(1, dtype=torch.int16)
    count = max(1, len(chunks))
    offsets = (ctypes.c_int * count)(*[off for off, _, _ in chunks])
    bits = (ctypes.c_int * count)(*[m for _, m, _ in chunks])
    begins = (ctypes.c_long * count)(*starts[:len(chunks)])
    out = torch.empty(n, o, ho, wo, dtype=torch.float64)
    lib.cell_forward_i64(_ptr(flat), _ptr(wk), _ptr(out), *_ints(n, c, image.shape[2], image.shape[3], o),
                         *_geometry_args(geom, ho, wo), _ptr(tabs), offsets, bits, begins, ctypes.c_int(len(chunks)),
                         ctypes.c_int(approx_bits), ctypes.c_int(width), ctypes.c_int(torch.get_num_threads()))
    return out


CHAIN_FILTERS = 4  # filters per block of csrc/cell_chain.c (CHAIN_FB)


def cell_chain_forward(xq, wq, geom, masks, width, mode):
    """Compiled sums of |add(w, -x)| for a chain of monotone-carry cells (csrc/cell_chain.c), (N, O, Ho, Wo) float64.

    `masks`: the 16 words of `dnn.arith.cell_adder.chain_masks` (g, p, s, d: M00 M01 M10 M11 each); `mode`: 1 = d does
    not depend on b, 2 = g + p rises by 1 with b in every bit (`chain_mode`). The values must fit in int32."""
    n, c, h, w = xq.shape
    o = wq.shape[0]
    k = wq[0].numel()
    ho, wo = geom.output_size(h, w)
    flat, image = _padded(xq, geom, 0, torch.int32)  # the kernel turns the values into patterns in place
    weights = wq.reshape(o, -1).to(torch.int32).contiguous()
    words = _typed_buffer("chain_words", torch.int32, (o + CHAIN_FILTERS - 1) // CHAIN_FILTERS * CHAIN_FILTERS * k * 8)
    out = torch.empty(n, o, ho, wo, dtype=torch.float64)
    load().cell_chain_forward(_ptr(flat), ctypes.c_long(flat.numel()), _ptr(weights), (ctypes.c_uint32 * 16)(*masks),
                              _ptr(words), _ptr(out), *_ints(n, c, image.shape[2], image.shape[3], o),
                              *_geometry_args(geom, ho, wo), *_ints(32 - width, mode, torch.get_num_threads()))
    return out


def _cell_small_forward(xq, wq, geom, table, approx_bits, width):
    """cell_forward for at most 8 approximate cells (one chunk, or none), through the low part's error table."""
    lib = load()
    n, c, h, w = xq.shape
    o = wq.shape[0]
    ho, wo = geom.output_size(h, w)
    k = approx_bits
    low = (1 << k) - 1
    entries = torch.arange(1 << (2 * k), dtype=torch.int64)
    a_lo, b_lo = entries >> k, entries & low
    if table is None:  # no approximate cells: exact addition, zero error
        table = torch.zeros(1, dtype=torch.int64)
    delta = (table.to(torch.int64)[: 1 << (2 * k)] - a_lo - b_lo).to(torch.int32)  # carry in 0: first half
    x_int = xq.to(torch.int64)
    values, _ = _padded(x_int.to(torch.int32), geom, 0, torch.int32)
    lows, _ = _padded(((-x_int) & low).to(torch.int32), geom, 0, torch.int32)
    w_int = wq.reshape(o, -1).to(torch.int64)
    wv = w_int.to(torch.int32).contiguous()
    wlo = ((w_int & low) << k).to(torch.int32).contiguous()
    image_h, image_w = h + 2 * geom.padding[0], w + 2 * geom.padding[1]
    out = torch.empty(n, o, ho, wo, dtype=torch.float64)
    lib.cell_small_forward(_ptr(values), _ptr(lows), _ptr(wv), _ptr(wlo), _ptr(delta), _ptr(out),
                           *_ints(n, c, image_h, image_w, o), *_geometry_args(geom, ho, wo), ctypes.c_int(width),
                           ctypes.c_int(torch.get_num_threads()))
    return out



# -- table kernels (csrc/table.c): shared by the LUT adder and the LUT multiplier layers ------------------------------
TILE_BYTES = 1 << 20  # int32 accumulators of one tile of output pixels: stay in L2 beside one channel's tables


def _with_slack(mat):
    """A contiguous copy of a small table with spare elements after it: the kernels' vector gathers read 32 bits at
    the address of a 16-bit entry."""
    flat = torch.zeros(mat.numel() + 16, dtype=mat.dtype)
    flat[:mat.numel()] = mat.reshape(-1)
    return flat


def pad_index(index, geom, pad_index):
    """(flat, image): an int32 index image (N, C, H, W) padded with `pad_index`, with slack, for the table kernels."""
    return _padded(index.to(torch.int32), geom, int(pad_index), torch.int32)


def outputs_padded(outputs):
    """Outputs per group rounded up to the 16-lane vectors of the table kernels."""
    return (outputs + 15) // 16 * 16


def tile_pixels(pixels, width, threads):
    """Output pixels per tile: TILE_BYTES of accumulators, and at least two tiles per thread when there is work."""
    tile = max(16, TILE_BYTES // (4 * (width + 3)))
    return max(16, min(tile, -(-pixels // (2 * threads))) // 16 * 16)


def table_sums(padded, mat, wi, groups, geom, out_size, affine):
    """Compiled table forward, (N, O, Ho, Wo) float32:
    out[n,o,p] = (sum_k T[k, I[n,k,p], o] + a[o] + b[o] * sum_k I[n,k,p]) * s[o], T[k,v,o] = mat[v, wi[o,k]].

    `padded` is `pad_index`'s result, `mat` a value-major (V, Vw) int16 or int32 matrix, `wi` (O, Kg) weight indices,
    `affine` (3, O) float64 rows a, b, s. The integer sums are exact (int32); the caller checks they cannot overflow.
    """
    lib = load()
    flat, image = padded
    n, c, hp, wp = image.shape
    o, kg = wi.shape
    v, vw = mat.shape
    ho, wo = out_size
    width = outputs_padded(o // groups)
    threads = torch.get_num_threads()
    tile = tile_pixels(n * ho * wo, width, threads)
    tab = _typed_buffer("table", mat.dtype, groups * kg * v * width)
    work = _typed_buffer("table_acc", torch.int32, threads * tile * (width + 3))
    out = torch.empty(n, o, ho, wo, dtype=torch.float32)
    mat, wi, affine = _with_slack(mat), wi.to(torch.int32).contiguous(), affine.to(torch.float64).contiguous()
    kernel = lib.table_sums_i16 if mat.dtype == torch.int16 else lib.table_sums_i32
    kernel(_ptr(flat), _ptr(mat), *_ints(vw, v), _ptr(wi), _ptr(tab), _ptr(work), _ptr(affine), _ptr(out),
           *_ints(n, c, hp, wp, o, groups), *_ints(*geom.kernel, *geom.stride, *geom.dilation, ho, wo),
           *_ints(tile, threads))
    return out


def grad_rows(grad_out, groups, scale=None):
    """(N, O, Ho, Wo) -> (N, Ho, Wo, G * Ogp) float32: each group's output gradients padded to whole vectors, times
    `scale` (O,) per output channel when given (one pass when no padding is needed)."""
    n, o, ho, wo = grad_out.shape
    og = o // groups
    width = outputs_padded(og)
    if width == og:
        rows = torch.empty(n, ho, wo, o, dtype=torch.float32)
        view = grad_out.permute(0, 2, 3, 1)
        if scale is None:
            return rows.copy_(view)
        return torch.mul(view.float(), scale.to(torch.float32).view(1, 1, 1, o), out=rows)
    if scale is not None:
        grad_out = grad_out.float() * scale.to(torch.float32).view(1, o, 1, 1)
    rows = grad_out.float().reshape(n, groups, og, ho, wo).permute(0, 3, 4, 1, 2)
    return F.pad(rows, (0, width - og)).reshape(n, ho, wo, -1).contiguous()


GRAD_CHUNK_BYTES = 1 << 20  # output gradient of the images one sorted pass of the table backward reads (L2)


def grad_chunk(rows):
    """Images per sorted pass of the table backward: their output gradient rows stay in L2."""
    per_image = rows[0].numel() * 4
    return max(1, min(rows.shape[0], GRAD_CHUNK_BYTES // max(per_image, 1)))


def table_grads(padded, ma, bias, mw, wi, groups, geom, x_shape, rows, out_size):
    """Compiled table gradients: (gx (N, C, H, W) or None, gw (O, Kg) or None), see csrc/table.c.

    gx[n,c,h,w] = sum over taps and outputs reading the pixel of g . A[k, v, :], A[k,v,o] = ma[v, wi[o,k]] + bias[o];
    gw[o,k] = sum_v H[k,v,o] mw[v, wi[o,k]], H the output gradient scattered by activation value. `ma`/`mw` are
    value-major float32 (V, Vw) matrices or None (that gradient is not computed); `rows` is `grad_rows`'s result.
    """
    lib = load()
    flat, image = padded
    n, c, hp, wp = image.shape
    o, kg = wi.shape
    ho, wo = out_size
    base = ma if ma is not None else mw
    v, vw = base.shape
    width = outputs_padded(o // groups)
    threads = max(1, min(torch.get_num_threads(), c))
    work = _work_buffer("table_grads", threads * 2 * geom.kernel[0] * geom.kernel[1] * v * width)
    gx = torch.zeros(x_shape, dtype=torch.float32) if ma is not None else None
    gw = torch.empty(o, kg, dtype=torch.float32) if mw is not None else None
    keep = [_with_slack(t.float()) if t is not None else None for t in (ma, bias, mw)]  # alive during the call
    wi = wi.to(torch.int32).contiguous()
    ma_p, bias_p, mw_p, gx_p, gw_p = (_ptr(t) if t is not None else ctypes.c_void_p(None) for t in (*keep, gx, gw))
    lib.table_grads_f32(_ptr(flat), ma_p, bias_p, mw_p, *_ints(vw, v), _ptr(wi), _ptr(rows), gx_p, gw_p, _ptr(work),
                        *_ints(n, c, hp, wp, o, groups), *_ints(*geom.kernel, *geom.stride, *geom.dilation, ho, wo),
                        *_ints(*geom.padding), *_ints(x_shape[2], x_shape[3], grad_chunk(rows), threads))
    return gx, gw
