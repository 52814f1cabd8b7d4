"""A compiled netlist (`simulator.program.Program`) evaluated with torch bitwise ops on int64 words, on any device.

Lanes are packed 64 to a word: bit t of word j of an input plane is bit i of lane 64 j + t. Every gate is then one
elementwise op over words, and planes broadcast, so an operand that is constant along some axis (a layer's weight
across the pixels of an image) is one word, not one per lane. This is the fallback of the compiled kernels in
`dnn.kernels.netlist_native` (CPU without a compiler, `AXNET_NATIVE=0`, CUDA) and the reference they are tested
against.
"""
from __future__ import annotations

import torch

from dnn.kernels import triton as triton_kernels
from simulator import torch_engine

LANE_CHUNK = 1 << 20  # lanes per temporary in `evaluate_lanes`


def _shifts(device):
    return torch.arange(64, dtype=torch.int64, device=device)


def pack_planes(values, bits):
    """(bits, ..., W) int64 planes of the int64 `values` (..., L): bit t of word j of plane i is bit i of lane 64j+t.

    L is padded with zero lanes to a multiple of 64.
    """
    length = values.shape[-1]
    words = -(-length // 64)
    if words * 64 != length:
        values = torch.nn.functional.pad(values, (0, words * 64 - length))
    lanes = values.reshape(*values.shape[:-1], words, 2, 32)
    shifts = _shifts(values.device)[:32]
    planes = []
    for i in range(bits):
        halves = (((lanes >> i) & 1) << shifts).sum(-1)  # each half below 2^32: no overflow
        planes.append(halves[..., 0] | (halves[..., 1] << 32))
    return torch.stack(planes) if planes else values.new_zeros((0, *values.shape[:-1], words))


def unpack_planes(planes, length):
    """Inverse of `pack_planes` for output planes (n, ..., W): the word sum(bit_k << k) per lane, (..., length)."""
    shifts = _shifts(planes.device)
    out = None
    for k in range(planes.shape[0]):
        bit = ((planes[k].unsqueeze(-1) >> shifts) & 1).flatten(-2)[..., :length]
        out = bit if out is None else out | (bit << k)
    return out


def broadcast_planes(values, bits):
    """(bits, ...) planes of all-0 or all-1 words: bit i of each value repeated in every lane."""
    i = torch.arange(bits, dtype=torch.int64, device=values.device).view(-1, *[1] * values.dim())
    return -((values.unsqueeze(0) >> i) & 1)


def run_program(program, inputs):
    """Output words of `program` for input words `inputs` (one broadcastable int64 tensor per input slot)."""
    return torch_engine.run_program(program, inputs, broadcast=True)


def evaluate_lanes(program, operands, widths):
    """Output word per lane (int64) when operand k (the next `widths[k]` input slots, LSB first) holds
    operands[k][lane]; only the low widths[k] bits of each value count. Operands: int tensors of one shape.
    On CUDA the generated Triton kernel of `dnn.kernels.triton.netlist` runs instead, when triton is installed."""
    if triton_kernels.use(*operands):
        from dnn.kernels.triton import netlist
        return netlist.evaluate_lanes(program, operands, widths)
    shape = operands[0].shape
    flat = [t.reshape(-1).to(torch.int64) for t in operands]
    total = flat[0].numel()
    out = torch.empty(total, dtype=torch.int64, device=flat[0].device)
    for start in range(0, total, LANE_CHUNK):
        part = [t[start:start + LANE_CHUNK] for t in flat]
        words = []
        for values, bits in zip(part, widths):
            words += list(pack_planes(values, bits))
        planes = run_program(program, words)
        length = part[0].numel()
        planes = [p.expand(words[0].shape) if p.shape != words[0].shape else p for p in planes]
        out[start:start + length] = unpack_planes(torch.stack(planes), length) if planes else 0
    return out.view(shape)


def window_points(index, size, half_window):
    """(up1, up0, dn0, dn1, den) of the shrink-rule slope at integer positions `index` of an axis of `size` points:
    slope = (v[up1] + v[up0] - v[dn0] - v[dn1]) / den, as `lutgen.gradient.shrink_gradient` computes it (a central
    window of half width min(w, i-1, size-2-i), and a one-sided difference at either end)."""
    index = index.clamp(0, size - 1)  # float32 quantization of 26+ bit operands can round qmax up: the edge's slope
    h = torch.clamp(torch.minimum(torch.minimum(index - 1, size - 2 - index), torch.full_like(index, half_window)),
                    min=0)
    up1, up0, dn0, dn1, den = index + h + 1, index + h, index - h, index - h - 1, 2 * (2 * h + 1)
    first, last = index == 0, index == size - 1
    up1, up0 = torch.where(first, 1, up1), torch.where(first, 1, up0)
    dn0, dn1 = torch.where(first, 0, dn0), torch.where(first, 0, dn1)
    up1, up0 = torch.where(last, size - 1, up1), torch.where(last, size - 1, up0)
    dn0, dn1 = torch.where(last, size - 2, dn0), torch.where(last, size - 2, dn1)
    den = torch.where(first | last, 2, den)
    return up1, up0, dn0, dn1, den
