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


def _padded_table(table):
    """(K, V, O) -> (K, V, Op) float32 with Op the next multiple of 8 (zero columns)."""
    k, v, o = table.shape
    width = (o + 7) // 8 * 8
    if width == o and table.dtype == torch.float32 and table.is_contiguous():
        return table
    return F.pad(table.float(), (0, width - o)).contiguous()


def _grad_rows(grad_out, width):
    """(N, O, Ho, Wo) -> (N, Ho, Wo, Op) float32 with zero columns up to Op."""
    return F.pad(grad_out.float().permute(0, 2, 3, 1), (0, width - grad_out.shape[1])).contiguous()


def table_forward(index, table, geom, pad_index):
    """Compiled table forward: sum of table rows, (N, O, Ho, Wo) float32."""
    lib = load()
    n, c, h, w = index.shape
    k, v, o = table.shape
    ho, wo = geom.output_size(h, w)
    flat, image = _padded(index, geom, pad_index, torch.int32)
    tab = _padded_table(table)
    width = tab.shape[2]
    out = torch.empty(n, ho, wo, width, dtype=torch.float32)
    lib.table_forward_f32(_ptr(flat), _ptr(tab), _ptr(out), *_ints(n, c, image.shape[2], image.shape[3], v, width),
                          *_geometry_args(geom, ho, wo), ctypes.c_int(torch.get_num_threads()))
    return out[..., :o].permute(0, 3, 1, 2)


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


def table_backward(index, table, grad_out, geom, pad_index):
    """Compiled table backward: (input gradient shaped like index, (K, V, O) tables), see adder_ops."""
    lib = load()
    n, c, h, w = index.shape
    k, v, o = table.shape
    ho, wo = geom.output_size(h, w)
    flat, image = _padded(index, geom, pad_index, torch.int32)
    tab = _padded_table(table)
    width = tab.shape[2]
    g = _grad_rows(grad_out, width)
    grad_x = torch.empty(n, c, h, w, dtype=torch.float32)
    threads = max(1, min(torch.get_num_threads(), n))
    hbuf = torch.zeros(threads, k, v, width, dtype=torch.float32)
    lib.table_backward_f32(_ptr(flat), _ptr(tab), _ptr(g), _ptr(grad_x), _ptr(hbuf),
                           *_ints(n, c, image.shape[2], image.shape[3], v, width),
                           *_geometry_args(geom, ho, wo), *_ints(*geom.padding, h, w), ctypes.c_int(threads))
    return grad_x, hbuf.sum(0)[..., :o]
