"""Read and write espresso PLA files (`.i .o .ilb .ob .p .type`, cubes, `.e`).

Reading gives a Netlist with one node per output over the inputs its cubes use. Types: `f` (default: output 1 =
on-set), `fd` (`-` = don't care), `fr` and `fdr` (`0` = off-set), `r` and `dr` (the function is the complement of the
off-set). Don't-care points read as 0 wherever an on-set is given, so the netlist is the on-set exactly; for `fr`
files an on-set cube that meets an off-set cube is refused. `~` in an output column means "not in this output".

The reader is written here rather than taken from `pyeda.parsing.pla`, which only allows `\\w` labels (not `a[3]`),
keeps no line numbers and does not check cube widths. Writing collapses the netlist to its truth table and
minimises it with espresso through pyeda (`circuits.truthtable.espresso_cover`), so any netlist up to 20 inputs can
be written.
"""
from __future__ import annotations

from pathlib import Path

from circuits.errors import AxnetError
from circuits.files import atomic_write, read_text
from circuits.netlist import Netlist, Node
from circuits.truthtable import MAX_TABLE_INPUTS, espresso_cover, truth_table

PLA_TYPES = ("f", "r", "fd", "fr", "dr", "fdr")
MAX_COLUMNS = 1 << 16  # inputs or outputs; far beyond any circuit axnet can measure, and it bounds the work
_UNSUPPORTED = (".mv", ".kiss", ".phase", ".pair", ".symbolic", ".symbolic-output", ".label")


class _PlaParser:
    """Line-by-line PLA reader that remembers where each cube came from."""

    def __init__(self, text, source):
        self.text, self.source = text, source
        self.ni = self.no = None
        self.ilb = self.ob = None
        self.type = None
        self.cubes = []  # (line, input plane, output plane)

    def error(self, message, line=None):
        return AxnetError(message, path=self.source, line=line)

    def parse(self):
        for number, raw in enumerate(self.text.splitlines(), 1):
            tokens = raw.split("#", 1)[0].split()
            if not tokens:
                continue
            if tokens[0].startswith("."):
                if self.directive(tokens[0].lower(), tokens[1:], number):
                    break
            else:
                self.cube(tokens, number)
        if self.ni is None or self.no is None:
            raise self.error("missing .i or .o: a PLA file must declare its input and output counts")
        return self

    def count(self, head, args, line):
        if len(args) != 1 or not (args[0].isascii() and args[0].isdigit()):
            raise self.error(f"{head} needs one non-negative integer", line)
        if head != ".p" and (len(args[0]) > 7 or int(args[0]) > MAX_COLUMNS):
            raise self.error(f"{head} {args[0]}: at most {MAX_COLUMNS} columns are supported", line)
        return int(args[0])

    def directive(self, head, args, line):
        """Handle one directive; True at `.e`/`.end`."""
        if head in (".e", ".end"):
            return True
        if head in (".i", ".o") and getattr(self, "n" + head[1]) is not None:
            raise self.error(f"{head} declared twice", line)
        if head == ".i":
            self.ni = self.count(head, args, line)
        elif head == ".o":
            self.no = self.count(head, args, line)
        elif head == ".p":
            self.count(head, args, line)  # a size hint; the cubes themselves are authoritative
        elif head == ".ilb":
            self.ilb = self.labels(head, args, self.ni, line)
        elif head == ".ob":
            self.ob = self.labels(head, args, self.no, line)
        elif head == ".type":
            if len(args) != 1 or args[0] not in PLA_TYPES:
                raise self.error(f".type must be one of {', '.join(PLA_TYPES)}", line)
            self.type = args[0]
        elif head in _UNSUPPORTED:
            raise self.error(f"{head} is not supported (binary-valued combinational PLAs only)", line)
        else:
            raise self.error(f"unknown directive '{head}'", line)
        return False

    def labels(self, head, args, expected, line):
        if expected is None:
            raise self.error(f"{head} before {'.i' if head == '.ilb' else '.o'}", line)
        if len(args) != expected:
            raise self.error(f"{head} lists {len(args)} names but {expected} were declared", line)
        if len(set(args)) != len(args):
            raise self.error(f"{head} repeats a name", line)
        return list(args)

    def cube(self, tokens, line):
        if self.ni is None or self.no is None:
            raise self.error("cube before .i and .o", line)
        text = "".join(tokens)
        if len(tokens) == 2:
            plane_in, plane_out = tokens
        elif len(text) == self.ni + self.no:
            plane_in, plane_out = text[: self.ni], text[self.ni:]
        else:
            raise self.error(f"cube '{' '.join(tokens)}' does not have {self.ni} input and {self.no} output "
                             "columns", line)
        if len(plane_in) != self.ni or len(plane_out) != self.no:
            raise self.error(f"cube '{plane_in} {plane_out}' has {len(plane_in)} input and {len(plane_out)} output "
                             f"columns, expected {self.ni} and {self.no}", line)
        plane_in = plane_in.replace("2", "-")
        if set(plane_in) - set("01-"):
            raise self.error(f"input part '{plane_in}' may contain only 0, 1 and -", line)
        if set(plane_out) - set("01-~"):
            raise self.error(f"output part '{plane_out}' may contain only 0, 1, - and ~", line)
        self.cubes.append((line, plane_in, plane_out))


def _cubes_meet(x, y):
    """True when two input cubes share a point."""
    return all(a == b or a == "-" or b == "-" for a, b in zip(x, y))


def _reduce(name, inputs, cubes, polarity):
    """A node over only the inputs its cubes use; constants without fanins."""
    used = sorted({i for c in cubes for i, ch in enumerate(c) if ch != "-"})  # work follows the cubes, not .i
    if not used:
        value = int(bool(cubes)) if polarity else int(not cubes)
        return Node(name, (), ("",) if value else (), 1)
    return Node(name, tuple(inputs[i] for i in used), tuple("".join(c[i] for i in used) for c in cubes), polarity)


def parse_pla(text, source="<string>", name=None):
    """Parse PLA text into a checked Netlist (one node per output)."""
    p = _PlaParser(text, source).parse()
    inputs = p.ilb or [f"x[{i}]" for i in range(p.ni)]
    outputs = p.ob or [f"y[{k}]" for k in range(p.no)]
    clash = set(inputs) & set(outputs)
    if clash:
        raise AxnetError(f"'{sorted(clash)[0]}' is both an input and an output label", path=source)
    kind = p.type or "f"
    nodes = {}
    for k, out in enumerate(outputs):
        on = [(line, c_in) for line, c_in, c_out in p.cubes if c_out[k] == "1"]
        off = [(line, c_in) for line, c_in, c_out in p.cubes if c_out[k] == "0"]
        if "f" in kind:
            if "r" in kind:
                for line, c_in in on:
                    hit = next((ln for ln, c_off in off if _cubes_meet(c_in, c_off)), None)
                    if hit is not None:
                        raise AxnetError(f"on-set cube '{c_in}' of output '{out}' meets the off-set cube at line "
                                         f"{hit}", path=source, line=line)
            nodes[out] = _reduce(out, inputs, [c for _, c in on], 1)
        else:
            nodes[out] = _reduce(out, inputs, [c for _, c in off], 0)
    model = name or (Path(source).stem if source and not source.startswith("<") else "pla")
    return Netlist(model, inputs, outputs, nodes, source).check()


def read_pla(path, name=None):
    """Read an espresso PLA file into a Netlist with one node per output."""
    text = read_text(path, "PLA file")
    return parse_pla(text, source=str(path), name=name)


def pla_text(netlist):
    """The netlist as a type-f PLA: its truth table minimised with espresso (multi-output, shared cubes)."""
    n = len(netlist.inputs)
    if n > MAX_TABLE_INPUTS:
        raise AxnetError(f"a PLA is a two-level cover of the whole function; {n} inputs is too many "
                         f"(at most {MAX_TABLE_INPUTS})", path=netlist.source)
    for label in list(netlist.inputs) + list(netlist.outputs):
        if not label or any(ch.isspace() for ch in label) or "#" in label:
            raise AxnetError(f"name '{label}' cannot be written to a PLA (empty, whitespace or '#')")
    table = truth_table(netlist)
    m = len(netlist.outputs)
    rows = [tuple((word >> k) & 1 for k in range(m)) for word in table]
    cover = [] if m == 0 else espresso_cover(n, rows) if any(table) else []
    lines = [f"# {netlist.name}, written by axnet", f".i {n}", f".o {m}"]
    if n:
        lines.append(".ilb " + " ".join(netlist.inputs))
    if m:
        lines.append(".ob " + " ".join(netlist.outputs))
    lines += [".type f", f".p {len(cover)}"]
    lines += [f"{c_in} {''.join(map(str, c_out))}" if n else "".join(map(str, c_out)) for c_in, c_out in cover]
    lines.append(".e")
    return "\n".join(lines) + "\n"


def write_pla(netlist, path):
    """Write the netlist as a minimised type-f PLA, atomically."""
    netlist.check()
    text = pla_text(netlist)
    with atomic_write(path) as f:
        f.write(text)
