"""The design set of `axnet explore`: circuit files, directories and families, deduplicated by function.

A design is one function: two inputs with the same truth table (same operand widths and signedness, same output
word for every operand pair) are one design, listed under every name it was given. Its LUT comes from the first
source; its hardware cost from the cheapest netlist among its sources (LUT files have no netlist: no cost). Its
role follows from the exact operation it approximates (guessed as `axnet metrics` does): an adder (`add`) serves
the subtraction of AdderNet layers, a multiplier (`mul`) the products of convolution and linear layers.

Circuits of more than `MAX_TABLE_INPUTS` inputs (16-bit adders and wider) get no table: they run in the layers
through the netlist engine (`dnn.arith.netlist_adder.NetlistAdder`, `netlist_multiplier.NetlistMultiplier`), their
metrics are streamed, their reference is
guessed from their shape, and their function key is a signature of their outputs on `SIGNATURE_SAMPLES` fixed
random operand pairs (two such circuits that agree on all of them are taken as one function).
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field

import numpy as np

from circuits.errors import AxnetError

CIRCUIT_SUFFIXES = (".blif", ".pla")
LUT_SUFFIXES = (".npz", ".txt", ".csv", ".h", ".hpp")
ROLES = {"add": "adder", "mul": "multiplier"}
MAX_TABLE_INPUTS = 24  # 2^24 table entries (12-bit adders): beyond, circuits run through the netlist engine
SIGNATURE_SAMPLES = 1 << 16
SIGNATURE_SEED = 14


@dataclass
class Design:
    """One function, under all the names and sources that gave it."""

    key: str
    names: list
    sources: list
    lut: object
    reference: str
    reference_reason: str
    netlist: object = None
    cost: dict = field(default_factory=dict)
    implementation: str = ""

    @property
    def name(self):
        """The first name it was given."""
        return self.names[0]

    @property
    def role(self):
        """'adder', 'multiplier' or None (fits no layer)."""
        return ROLES.get(self.reference)

    @property
    def short_key(self):
        return self.key[:12]

    @property
    def circuit(self):
        """What the layers run: the LUT, or the netlist of a circuit too wide for one."""
        return self.lut if self.lut is not None else self.netlist

    @property
    def widths(self):
        if self.lut is not None:
            return self.lut.widths
        from lutgen.operands import group_operands
        return [op.width for op in group_operands(self.netlist.inputs)]

    @property
    def signed(self):
        return bool(self.lut.signed) if self.lut is not None else False


def function_key(lut):
    """sha256 of a LUT's function: operand widths, signedness and the table."""
    h = hashlib.sha256(f"{lut.widths}|{bool(lut.signed)}|{len(lut.outputs)}|".encode())
    h.update(np.ascontiguousarray(np.asarray(lut.table), dtype=np.int64).tobytes())
    return h.hexdigest()


def signature_key(netlist):
    """sha256 of a wide circuit's operand widths, output count and outputs on fixed random input patterns."""
    from lutgen.operands import group_operands
    from simulator.streaming import simulate_random

    widths = [op.width for op in group_operands(netlist.inputs)]
    _, outputs = simulate_random(netlist, SIGNATURE_SAMPLES, seed=SIGNATURE_SEED)
    h = hashlib.sha256(f"{widths}|False|{len(netlist.outputs)}|sampled|".encode())
    h.update(repr([int(v) for v in outputs]).encode())
    return h.hexdigest()


def wide_reference(netlist):
    """(reference, why) for a circuit without a table: from its shape, as `axnet metrics` guesses for circuits."""
    from lutgen.operands import group_operands
    from lutgen.reference import guess_from_widths

    ops = group_operands(netlist.inputs)
    return guess_from_widths([(op.name, op.width) for op in ops], len(netlist.outputs))


def list_files(path):
    """The circuit and LUT files a --circuits PATH names: the file itself, or a directory's (recursively, sorted)."""
    if not os.path.exists(path):
        raise AxnetError("--circuits: no such file or directory", path=path)
    if not os.path.isdir(path):
        return [path]
    found = []
    for root, dirs, files in os.walk(path):
        dirs.sort()
        found += [os.path.join(root, f) for f in sorted(files)
                  if os.path.splitext(f)[1].lower() in CIRCUIT_SUFFIXES + LUT_SUFFIXES and not f.startswith(".")]
    if not found:
        raise AxnetError(f"--circuits: no circuit files ({', '.join(CIRCUIT_SUFFIXES + LUT_SUFFIXES)}) in the "
                         "directory", path=path)
    return found


def read_source(path, undriven="error"):
    """(name, netlist or None, lut) for one file: a circuit is simulated exhaustively, a LUT file read."""
    from circuits.files import file_sha256

    suffix = os.path.splitext(path)[1].lower()
    if suffix == ".blif":
        from circuits.blif import read_blif
        netlist = read_blif(path, undriven=undriven)
    elif suffix == ".pla":
        from circuits.pla import read_pla
        netlist = read_pla(path)
    elif suffix in LUT_SUFFIXES:
        from lutgen.formats import load_lut
        lut = load_lut(path)
        return lut.circuit or os.path.splitext(os.path.basename(path))[0], None, lut
    else:
        raise AxnetError(f"--circuits: not a circuit or LUT file (expected {', '.join(CIRCUIT_SUFFIXES + LUT_SUFFIXES)})",
                         path=path)
    return netlist.name, netlist, netlist_lut(netlist, path, file_sha256(path))


def netlist_lut(netlist, where, sha256=None):
    """The exhaustive LUT of a netlist, or None for one too wide for a table (the netlist engine runs it)."""
    from lutgen.lut import build_lut
    from lutgen.operands import group_operands

    if len(netlist.inputs) > MAX_TABLE_INPUTS:
        try:
            group_operands(netlist.inputs)
        except AxnetError as e:
            raise AxnetError(e.message, path=where) from None
        return None
    return build_lut(netlist, sha256=sha256)


def gather_sources(paths, families, undriven="error"):
    """[(name, source, netlist or None, lut)] from every --circuits path and --family spec, in the order given."""
    from dnn.workflow.explore_families import family_netlists

    out = []
    for path in paths:
        for f in list_files(os.fspath(path)):
            name, netlist, lut = read_source(f, undriven)
            out.append((name, f, netlist, lut))
    for spec in families:
        for name, netlist in family_netlists(spec):
            out.append((name, f"family {spec}", netlist, netlist_lut(netlist, f"--family {spec}")))
    if not out:
        raise AxnetError("no circuits to explore: give --circuits PATH... and/or --family SPEC")
    return out


def unique_name(name, taken):
    """`name`, or `name~2`, `name~3`... when another design already uses it."""
    if name not in taken:
        return name
    n = 2
    while f"{name}~{n}" in taken:
        n += 1
    return f"{name}~{n}"


def collect_designs(paths=(), families=(), undriven="error", cost=True):
    """The deduplicated designs, in first-seen order (see module docstring)."""
    from circuits.cost import cost_fields
    from lutgen.reference import guess_reference

    designs, by_key, taken = [], {}, set()
    for name, source, netlist, lut in gather_sources(paths, families, undriven):
        key = function_key(lut) if lut is not None else signature_key(netlist)
        design = by_key.get(key)
        if design is None:
            reference, why = guess_reference(lut) if lut is not None else wide_reference(netlist)
            design = Design(key=key, names=[], sources=[], lut=lut, reference=reference, reference_reason=why)
            by_key[key] = design
            designs.append(design)
        if name not in design.names:
            label = unique_name(name, taken)
            taken.add(label)
            design.names.append(label)
        if source not in design.sources:
            design.sources.append(source)
        if netlist is not None and cost:
            fields = cost_fields(netlist)
            if not design.cost or fields["area_nand2"] < design.cost["area_nand2"]:
                design.cost, design.netlist, design.implementation = fields, netlist, name
        elif netlist is not None and design.netlist is None:
            design.netlist, design.implementation = netlist, name
    return designs


def check_roles(designs, layer_role, what):
    """Refuse, naming the design, any design whose role is not `layer_role` (the checkpoint's approximate layers)."""
    for d in designs:
        if d.role != layer_role:
            kind = d.role or f"'{d.reference}' circuit"
            raise AxnetError(f"--circuits: {d.name} ({d.sources[0]}) is {'an' if kind[0] in 'aeiou' else 'a'} "
                             f"{kind} ({d.reference_reason}), but {what}: it fits no layer")


def check_adder_fits(designs):
    """Every adder design must make a back-end: a LutAdder (two equal operands of 3 to 12 bits) or, without a
    table, a NetlistAdder (3 to 32 bits); a one-line error otherwise."""
    from dnn.arith.lut_adder import LutAdder

    for d in designs:
        try:
            if d.lut is not None:
                LutAdder(d.lut)
            else:
                from dnn.arith.netlist_adder import NetlistAdder
                NetlistAdder(d.netlist, table_bits=0)
        except AxnetError as e:
            raise AxnetError(f"--circuits: {d.name} ({d.sources[0]}) fits no adder layer: {e.message}") from None


def check_multiplier_fits(designs):
    """Every multiplier design must make a back-end: a LutMultiplier (operands of at most 10 bits) or, without a
    table, a NetlistMultiplier."""
    from dnn.arith.lut_multiplier import LutMultiplier

    for d in designs:
        try:
            if d.lut is not None:
                LutMultiplier(d.lut)
            else:
                from dnn.arith.netlist_multiplier import NetlistMultiplier
                NetlistMultiplier(d.netlist)
        except AxnetError as e:
            raise AxnetError(f"--circuits: {d.name} ({d.sources[0]}) fits no multiplier layer: {e.message}") from None
