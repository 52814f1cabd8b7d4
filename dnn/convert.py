"""Model conversion: swap a network's Conv2d/Linear layers for AdderNet or approximate-multiplier layers.

`convert(model, kind, arith)` replaces layers in place (nested Sequentials, residual blocks, shared modules alike),
copies weights and biases, keeps the first and last such layer exact by default (as the AdderNet and AppMult work
do), and returns the model with a report of what happened to every candidate layer.
"""
from __future__ import annotations

import os

import torch
from torch import nn

from circuits.errors import AxnetError

KINDS = ("adder", "approx_mult")


def convert(model, kind="adder", arith=None, keep_first_last=True):
    """Replace `model`'s Conv2d/Linear layers in place; returns (model, report).

    kind "adder": Adder2d/AdderLinear with `arith` (a dnn.arith back-end, a parse_arith string, or None = float).
    kind "approx_mult": ApproxConv2d/ApproxLinear with `arith` as the multiplier (a LutMultiplier, a LUT path, or
    None = float until one is set). The report is a list of dicts: name, old, new, shape, note.
    """
    if kind not in KINDS:
        raise AxnetError(f"convert kind '{kind}': expected 'adder' or 'approx_mult'")
    backend = resolve_backend(kind, arith)
    candidates = candidate_layers(model)
    first = candidates[0][0] if candidates else None
    last = candidates[-1][0] if candidates else None
    replaced, report = {}, []
    for name, layer in candidates:
        reason = None
        if keep_first_last and name == first:
            reason = "kept: first layer"
        elif keep_first_last and name == last:
            reason = "kept: last layer"
        else:
            reason = unsupported_reason(layer, kind)
        if reason is None:
            new = build_replacement(layer, kind, backend)
            replaced[id(layer)] = new
            report.append(report_row(name, layer, new, "replaced"))
        else:
            report.append(report_row(name, layer, layer, reason))
    if id(model) in replaced:
        return replaced[id(model)], report
    swap_children(model, replaced)
    return model, report


def resolve_backend(kind, arith):
    """The back-end object the new layers get: paths and strings are read into one; wrong types are an error."""
    if arith is None:
        return None
    if kind == "approx_mult":
        from dnn.arith.lut_multiplier import LutMultiplier
        if isinstance(arith, (str, os.PathLike)):
            return LutMultiplier(arith)
        if not isinstance(arith, LutMultiplier):
            raise AxnetError(f"convert kind 'approx_mult' needs a LutMultiplier or a LUT path as arith, "
                             f"not {type(arith).__name__}")
        return arith
    if isinstance(arith, str):
        from dnn.arith.spec import parse_arith
        return parse_arith(arith)
    if not hasattr(arith, "describe"):
        raise AxnetError(f"convert kind 'adder' needs a dnn.arith back-end as arith, not {type(arith).__name__}")
    return arith


def candidate_layers(model):
    """(name, layer) for every plain Conv2d/Linear in module order, skipping layers that are already converted."""
    from dnn.layers.assign import APPROX_LAYERS
    out = []
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)) and not isinstance(m, APPROX_LAYERS):
            out.append((name or "(model)", m))
    return out


def unsupported_reason(layer, kind):
    """Why `layer` cannot be converted to `kind`, or None when it can."""
    if isinstance(layer, nn.Linear):
        return None
    if layer.padding_mode != "zeros":
        return f"kept: padding_mode='{layer.padding_mode}' is not supported"
    if isinstance(layer.padding, str) and layer.padding != "valid":
        return f"kept: padding='{layer.padding}' is not supported"
    if kind == "adder" and layer.groups != 1:
        return f"kept: groups={layer.groups} (Adder2d has no groups)"
    return None


def conv_padding(layer):
    """The numeric padding of a Conv2d ('valid' is 0)."""
    return (0, 0) if isinstance(layer.padding, str) else tuple(layer.padding)


def build_replacement(layer, kind, backend):
    """A new layer of `kind` with `layer`'s geometry, weights and bias, on its device and dtype."""
    bias = layer.bias is not None
    if kind == "adder":
        from dnn.layers.adder2d import Adder2d
        from dnn.layers.adder_linear import AdderLinear
        if isinstance(layer, nn.Linear):
            new = AdderLinear(layer.in_features, layer.out_features, bias=bias, arith=backend)
        else:
            new = Adder2d(layer.in_channels, layer.out_channels, tuple(layer.kernel_size), stride=tuple(layer.stride),
                          padding=conv_padding(layer), dilation=tuple(layer.dilation), bias=bias, arith=backend)
    else:
        from dnn.layers.mult_layers import ApproxConv2d, ApproxLinear
        if isinstance(layer, nn.Linear):
            new = ApproxLinear(layer.in_features, layer.out_features, bias=bias, mult=backend)
        else:
            new = ApproxConv2d(layer.in_channels, layer.out_channels, tuple(layer.kernel_size),
                               stride=tuple(layer.stride), padding=conv_padding(layer),
                               dilation=tuple(layer.dilation), groups=layer.groups, bias=bias, mult=backend)
    copy_parameters(layer, new)
    new.to(device=layer.weight.device)
    new.train(layer.training)
    return new


@torch.no_grad()
def copy_parameters(old, new):
    """Copy weight and bias (same shapes), keeping the old layer's dtype and requires_grad flags."""
    if tuple(new.weight.shape) != tuple(old.weight.shape):
        raise AxnetError(f"cannot convert {type(old).__name__}: new weight shape {tuple(new.weight.shape)} "
                         f"differs from {tuple(old.weight.shape)}")
    new.weight.data = old.weight.detach().clone()
    new.weight.requires_grad_(old.weight.requires_grad)
    if old.bias is not None:
        new.bias.data = old.bias.detach().clone()
        new.bias.requires_grad_(old.bias.requires_grad)


def swap_children(model, replaced):
    """Point every parent that holds a replaced layer (under any name, shared or not) at its replacement."""
    for parent in model.modules():
        for child_name, child in list(parent._modules.items()):
            if child is not None and id(child) in replaced:
                setattr(parent, child_name, replaced[id(child)])


def report_row(name, old, new, note):
    """One report entry: module name, old and new type names, weight shape, and what happened."""
    return {"name": name, "old": type(old).__name__, "new": type(new).__name__,
            "shape": tuple(old.weight.shape), "note": note}


def format_report(report):
    """A readable table of a conversion report, with a count of replaced layers at the end."""
    headers = ("module", "old", "new", "shape", "note")
    rows = [(r["name"], r["old"], r["new"], "x".join(map(str, r["shape"])), r["note"]) for r in report]
    widths = [max([len(h)] + [len(row[i]) for row in rows]) for i, h in enumerate(headers)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()
    out = [line(headers), line(["-" * w for w in widths])] + [line(row) for row in rows]
    done = sum(r["note"] == "replaced" for r in report)
    out.append(f"{done} of {len(report)} layers replaced")
    return "\n".join(out)
