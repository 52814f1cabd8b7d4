"""Write a Netlist as flat BLIF (`.model`, `.inputs`, `.outputs`, one `.names` per node in topological order)."""
from __future__ import annotations

import re

from circuits.errors import AxnetError
from circuits.files import atomic_write


# -- writing --------------------------------------------------------------------------------------------------------

_BAD_NAME = re.compile(r"[\s#=\\]")


def _check_name(name, what):
    """Refuse names BLIF cannot carry: empty, whitespace, '#', '=', backslash, or a leading '.'."""
    if not name or _BAD_NAME.search(name) or name.startswith("."):
        raise AxnetError(f"{what} '{name}' cannot be written to BLIF (empty, or contains whitespace, '#', '=', "
                         "'\\' or a leading '.'); rename it first")


def _wrap(directive, names, width=100):
    """`.inputs a b c ...` split over continuation lines no wider than about `width` characters."""
    lines, current = [], directive
    for name in names:
        if len(current) + 1 + len(name) > width and current != directive:
            lines.append(current + " \\")
            current = " "
        current += " " + name
    lines.append(current)
    return "\n".join(lines)


def _node_text(node):
    """The `.names` block for one node; a constant-1 node with fanins is written as one all-don't-care cube."""
    head = ".names " + " ".join(list(node.fanins) + [node.name])
    n = len(node.fanins)
    if not node.cubes:
        if node.polarity:  # constant 0: no cubes
            return head
        return head + "\n" + "-" * n + (" 1" if n else "1")
    value = str(node.polarity)
    rows = [(cube + " " + value) if n else value for cube in node.cubes]
    return head + "\n" + "\n".join(rows)


def blif_text(netlist):
    """The netlist as flat BLIF text (nodes in topological order)."""
    _check_name(netlist.name, "model name")
    for name in list(netlist.inputs) + list(netlist.outputs) + list(netlist.nodes):
        _check_name(name, "net")
    parts = ["# written by axnet", f".model {netlist.name}", _wrap(".inputs", netlist.inputs),
             _wrap(".outputs", netlist.outputs)]
    parts += [_node_text(netlist.nodes[name]) for name in netlist.topological_order()]
    parts.append(".end")
    return "\n".join(parts) + "\n"


def write_blif(netlist, path):
    """Write the netlist as flat BLIF, atomically (a failed write leaves no partial file)."""
    netlist.check()
    text = blif_text(netlist)
    with atomic_write(path) as f:
        f.write(text)
