"""Read and write combinational BLIF (Berkeley Logic Interchange Format) netlists.

Reading accepts what Yosys and ABC write: `.model`, `.inputs`/`.outputs` (repeatable, they accumulate), `.names`
covers with on-set (output column 1) or off-set (output column 0) cubes and `-` don't cares, constant nodes,
`\\` line continuations, `#` comments, `.end`, `.conn a b` (a buffer, as Yosys writes with -conn), and hierarchies of
`.subckt` instances, which are flattened: internal nets of an instance become `<model>_<k>/<net>` (made unique).
Yosys's `$true`, `$false` and `$undef` nets are global constants (1, 0, 0) whenever nothing drives them.

Refused with an AxnetError naming `path:line`: `.latch`, `.mlatch`, `.gate` (sequential or library-mapped
circuits are not simulated), `.exdc`, `.search`, unknown directives, malformed covers, doubly driven nets, nets
that are both a primary input and driven, unknown or recursive `.subckt` models, and cycles.

Ignored on purpose (they carry no logic): timing and load directives (`.default_input_arrival`, `.input_arrival`,
`.output_required`, `.area`, `.delay`, `.wire_load_slope` and relatives), `.clock`, and the Yosys attribute
directives `.attr`, `.param`, `.cname`.

Undriven nets that reach no output (Yosys leaves buffers reading them when a design is not purged) are dead logic:
it is dropped, with one `BlifWarning` saying how many nets. An undriven net inside an output's cone is an error by
default; with `undriven="zero"` it is tied to constant 0 and a `BlifWarning` is issued (one per net). The CLI
catches the warnings and prints them.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

from circuits.blif_write import blif_text, write_blif  # the writer, re-exported beside the reader
from circuits.errors import AxnetError
from circuits.files import read_text
from circuits.netlist import Netlist, Node

__all__ = ["BlifWarning", "parse_blif", "read_blif", "write_blif", "blif_text"]


class BlifWarning(UserWarning):
    """A BLIF oddity that reading worked around (an undriven net tied to 0 with undriven="zero")."""


# A flattened netlist larger than this is refused: a small file whose models each instantiate the next twice would
# otherwise expand to 2^depth instances (real approximate arithmetic circuits have thousands of nodes, not millions).
MAX_FLAT_NODES = 2_000_000
MAX_INSTANCES = 2_000_000

# Nets Yosys uses for constants; they are global (never renamed inside .subckt instances).
YOSYS_CONSTANTS = {"$true": 1, "$false": 0, "$undef": 0}

IGNORED_DIRECTIVES = {
    ".default_input_arrival", ".default_output_required", ".default_input_drive", ".default_output_load",
    ".default_max_input_load", ".input_arrival", ".output_required", ".input_drive", ".output_load",
    ".max_input_load", ".wire_load_slope", ".wire", ".area", ".delay", ".clock", ".attr", ".param", ".cname",
}
REFUSED_DIRECTIVES = {
    ".latch": "sequential element .latch: axnet simulates combinational circuits only",
    ".mlatch": "sequential element .mlatch: axnet simulates combinational circuits only",
    ".gate": ".gate (library-mapped cell): map the circuit to .names covers first (e.g. ABC 'write_blif' "
             "after 'strash' or Yosys 'write_blif' without -gates)",
    ".exdc": ".exdc (external don't-care network) is not supported",
    ".search": ".search (include another file) is not supported; pass one self-contained file",
    ".start_kiss": ".start_kiss (state machine) is not supported: combinational circuits only",
    ".fsm": ".fsm (state machine) is not supported: combinational circuits only",
}


@dataclass
class _Cover:
    """A `.names` block while it is being read."""

    fanins: list[str]
    output: str
    line: int
    cubes: list[str] = field(default_factory=list)
    polarity: int | None = None


@dataclass
class _Model:
    """One `.model` as written in the file, before flattening."""

    name: str
    line: int
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    covers: list[_Cover] = field(default_factory=list)
    subckts: list[tuple[str, list[tuple[str, str]], int]] = field(default_factory=list)
    ended: bool = False
    port_lines: dict = field(default_factory=dict)  # (".inputs" or ".outputs", net) -> line of its declaration


# -- lexing ---------------------------------------------------------------------------------------------------------

def _logical_lines(text):
    """Yield (line number, tokens) per logical line: comments removed, `\\` continuations joined, blanks skipped."""
    pending, start = [], None
    for number, raw in enumerate(text.splitlines(), 1):
        body = raw.split("#", 1)[0].rstrip()
        if start is None:
            start = number
        if body.endswith("\\"):
            pending.append(body[:-1])
            continue
        pending.append(body)
        tokens = " ".join(pending).split()
        if tokens:
            yield start, tokens
        pending, start = [], None
    if pending:
        tokens = " ".join(pending).split()
        if tokens:
            yield start, tokens


# -- parsing one file into models -----------------------------------------------------------------------------------

class _Parser:
    """Turns BLIF text into a list of _Model objects, checking everything that is local to one model."""

    def __init__(self, text, source):
        self.text = text
        self.source = source
        self.models: list[_Model] = []
        self.model_lines: dict[str, int] = {}  # model name -> line of its .model
        self.model: _Model | None = None
        self.cover: _Cover | None = None

    def error(self, message, line):
        return AxnetError(message, path=self.source, line=line)

    def parse(self):
        for line, tokens in _logical_lines(self.text):
            head = tokens[0]
            if head.startswith("."):
                self.finish_cover()
                self.directive(head.lower(), tokens[1:], line)
            else:
                self.cube(tokens, line)
        self.finish_cover()
        if not self.models:
            raise AxnetError("empty BLIF file: no .model and no logic", path=self.source)
        return self.models

    def directive(self, head, args, line):
        if head in REFUSED_DIRECTIVES:
            raise self.error(REFUSED_DIRECTIVES[head], line)
        if head == ".model":
            self.start_model(args[0] if args else None, line)
            return
        if head == ".end":
            if self.model is None:
                raise self.error(".end outside a .model", line)
            self.model.ended = True
            self.model = None
            return
        if head in IGNORED_DIRECTIVES:
            self.current(head, line)
            return
        model = self.current(head, line)
        if head in (".inputs", ".outputs"):
            ports = model.inputs if head == ".inputs" else model.outputs
            for net in args:
                if (head, net) in model.port_lines:
                    raise self.error(f"'{net}' listed twice in {head} of model '{model.name}' (first at line "
                                     f"{model.port_lines[head, net]})", line)
                model.port_lines[head, net] = line
                ports.append(net)
        elif head == ".names":
            if not args:
                raise self.error(".names needs at least an output net", line)
            self.cover = _Cover(list(args[:-1]), args[-1], line)
        elif head == ".conn":
            if len(args) != 2:
                raise self.error(f".conn needs exactly two nets, got {len(args)}", line)
            model.covers.append(_Cover([args[0]], args[1], line, ["1"], 1))
        elif head == ".subckt":
            self.subckt(model, args, line)
        else:
            raise self.error(f"unknown directive '{head}'", line)

    def current(self, head, line):
        """The model a directive belongs to; a file without `.model` gets one implicit model named after the file."""
        if self.model is None:
            if self.models:
                raise self.error(f"{head} after .end: start a new .model first", line)
            self.start_model(None, line)
        return self.model

    def start_model(self, name, line):
        if name is None:
            name = Path(self.source).stem if self.source and not self.source.startswith("<") else "top"
        first = self.model_lines.setdefault(name, line)  # a dict, so thousands of models stay linear
        if first != line:
            raise self.error(f"model '{name}' is defined twice (first at line {first})", line)
        self.model = _Model(name, line)
        self.models.append(self.model)

    def subckt(self, model, args, line):
        if not args:
            raise self.error(".subckt needs a model name", line)
        pairs = []
        for item in args[1:]:
            formal, eq, actual = item.partition("=")
            if not eq or not formal or not actual:
                raise self.error(f".subckt connection '{item}' is not formal=actual", line)
            pairs.append((formal, actual))
        model.subckts.append((args[0], pairs, line))

    def cube(self, tokens, line):
        cover = self.cover
        if cover is None:
            raise self.error(f"cover line '{' '.join(tokens)}' outside a .names block", line)
        n = len(cover.fanins)
        if n == 0:
            if len(tokens) != 1:
                raise self.error(f"constant node '{cover.output}' takes a single output value, got "
                                 f"'{' '.join(tokens)}'", line)
            plane, value = "", tokens[0]
        else:
            if len(tokens) != 2:
                raise self.error(f"cover line '{' '.join(tokens)}' of '{cover.output}' must be "
                                 f"<{n} input chars> <output value>", line)
            plane, value = tokens
            if len(plane) != n:
                raise self.error(f"cube '{plane}' has {len(plane)} input columns but '{cover.output}' has "
                                 f"{n} fanins", line)
            bad = set(plane) - set("01-")
            if bad:
                raise self.error(f"cube '{plane}' contains '{sorted(bad)[0]}'; only 0, 1 and - are allowed", line)
        if value not in ("0", "1"):
            raise self.error(f"output value '{value}' of '{cover.output}' must be 0 or 1", line)
        polarity = int(value)
        if cover.polarity is None:
            cover.polarity = polarity
        elif cover.polarity != polarity:
            raise self.error(f"'{cover.output}' mixes on-set (1) and off-set (0) cubes; a .names block must use "
                             "one output value", line)
        cover.cubes.append(plane)

    def finish_cover(self):
        if self.cover is not None:
            self.model.covers.append(self.cover)
            self.cover = None


# -- per-model checks -----------------------------------------------------------------------------------------------

def _check_model(model, source):
    """Doubly driven nets and driven inputs inside one model."""
    inputs = set(model.inputs)
    driver = {}
    for cover in model.covers:
        if cover.output in inputs:
            raise AxnetError(f"net '{cover.output}' is a primary input of model '{model.name}' and also driven "
                             "by .names", path=source, line=cover.line)
        if cover.output in driver and cover.output not in YOSYS_CONSTANTS:
            raise AxnetError(f"net '{cover.output}' is driven twice (first at line {driver[cover.output]})",
                             path=source, line=cover.line)
        driver[cover.output] = cover.line


def _node_from_cover(name, cover):
    """A Node in canonical form: constants without fanins become the ARCHITECTURE constants."""
    polarity = 1 if cover.polarity is None else cover.polarity
    cubes = tuple(cover.cubes)
    if not cover.fanins:
        value = int(bool(cubes)) if polarity else int(not cubes)
        return Node(name, (), ("",) if value else (), 1)
    return Node(name, tuple(cover.fanins), cubes, polarity)


# -- flattening -----------------------------------------------------------------------------------------------------

class _Flattener:
    """Instantiates the top model and every `.subckt` below it (at any depth) into one flat set of nodes."""

    def __init__(self, models, source):
        self.models = {m.name: m for m in models}
        self.source = source
        self.nodes: dict[str, Node] = {}
        self.lines: dict[str, int] = {}
        self.used_names: set[str] = set()
        self.instances = 0

    def unique(self, candidate):
        name, k = candidate, 1
        while name in self.used_names:
            k += 1
            name = f"{candidate}~{k}"
        self.used_names.add(name)
        return name

    def add(self, node, line, primary_inputs):
        name = node.name
        if name in primary_inputs:
            raise AxnetError(f"net '{name}' is a primary input and also driven", path=self.source, line=line)
        if name in self.nodes:
            if name in YOSYS_CONSTANTS and self.nodes[name] == node:
                return  # the same constant defined in several models
            raise AxnetError(f"net '{name}' is driven twice (first at line {self.lines[name]})", path=self.source,
                             line=line)
        if len(self.nodes) >= MAX_FLAT_NODES:
            raise AxnetError(f"the flattened netlist would have more than {MAX_FLAT_NODES} nodes; refusing to "
                             "flatten it", path=self.source, line=line)
        self.nodes[name] = node
        self.lines[name] = line

    def flatten(self, top, primary_inputs):
        """Add all nodes of `top`, whose nets keep their own names.

        Depth first with an explicit stack rather than recursion, so a hierarchy thousands of levels deep works.
        """
        self.used_names.update(primary_inputs)  # top-level nets keep their names, so reserve them first
        self.used_names.update(top.outputs)
        self.used_names.update(c.output for c in top.covers)
        self.used_names.update(f for c in top.covers for f in c.fanins)
        self.used_names.update(a for _, pairs, _ in top.subckts for _, a in pairs)
        self.used_names.update(YOSYS_CONSTANTS)
        primary_inputs = set(primary_inputs)
        chain = [top.name]  # models on the way from the top to the instance being expanded
        on_chain = {top.name}  # the same as a set: a model appears on the chain at most once (no recursion)
        frames = [(self.expand(top, {}, None, primary_inputs), iter(top.subckts))]
        while frames:
            net, subckts = frames[-1]
            item = next(subckts, None)
            if item is None:
                frames.pop()
                on_chain.discard(chain.pop())
                continue
            sub, bound, prefix = self.bind_subckt(*item, net, chain, on_chain, primary_inputs)
            chain.append(sub.name)
            on_chain.add(sub.name)
            frames.append((self.expand(sub, bound, prefix, primary_inputs), iter(sub.subckts)))

    def expand(self, model, bound, prefix, primary_inputs):
        """Add `model`'s own nodes; `bound` maps its port nets to parent nets, other nets get `prefix` names.

        Returns the instance's net-naming function, which its `.subckt` connections are resolved with.
        """
        local = dict(bound)

        def net(name):
            if name in YOSYS_CONSTANTS:
                return name
            if name not in local:
                local[name] = name if prefix is None else self.unique(prefix + name)
            return local[name]

        for cover in model.covers:
            node = _node_from_cover(net(cover.output), cover)
            node = Node(node.name, tuple(net(f) for f in node.fanins), node.cubes, node.polarity)
            self.add(node, cover.line, primary_inputs)
        return net

    def bind_subckt(self, sub_name, pairs, line, net, chain, on_chain, primary_inputs):
        """(model, port bindings, net prefix) of one `.subckt` instance, its connections checked."""
        sub = self.models.get(sub_name)
        if sub is None:
            raise AxnetError(f".subckt refers to unknown model '{sub_name}'", path=self.source, line=line)
        if sub_name in on_chain:
            trail = " -> ".join(chain + [sub_name])
            raise AxnetError(f"recursive .subckt: {trail}", path=self.source, line=line)
        ports_in, ports_out = set(sub.inputs), set(sub.outputs)
        self.instances += 1
        if self.instances > MAX_INSTANCES:
            raise AxnetError(f".subckt {sub_name}: the hierarchy expands to more than {MAX_INSTANCES} instances; "
                             "refusing to flatten it", path=self.source, line=line)
        prefix = f"{sub_name}_{self.instances}/"
        bound, seen = {}, set()
        for formal, actual in pairs:
            if formal in seen:
                raise AxnetError(f".subckt {sub_name}: port '{formal}' connected twice", path=self.source,
                                 line=line)
            seen.add(formal)
            if formal not in ports_in and formal not in ports_out:
                raise AxnetError(f".subckt {sub_name}: model '{sub_name}' has no port '{formal}'",
                                 path=self.source, line=line)
            bound[formal] = net(actual)
            if formal in ports_out and formal not in ports_in and bound[formal] in primary_inputs:
                raise AxnetError(f".subckt {sub_name}: output '{formal}' drives '{actual}', a primary input",
                                 path=self.source, line=line)
        for formal in sub.inputs:
            if formal not in bound:  # an unconnected input reads an undriven net, caught later
                bound[formal] = self.unique(prefix + formal)
        return sub, bound, prefix


def expanded_size(models, top):
    """(instances, nodes) that flattening `top` would produce, counted per model without expanding anything.

    Iterative post-order over the model graph; a model on a recursive path counts as empty here (flattening
    reports the recursion with its chain).
    """
    sizes, open_models, todo = {}, set(), [(top.name, False)]
    while todo:
        name, children_done = todo.pop()
        model = models.get(name)
        if model is None or name in sizes:
            continue
        if children_done:
            subs = [sizes.get(sub, (0, 0)) for sub, _, _ in model.subckts]
            sizes[name] = (sum(1 + i for i, _ in subs), len(model.covers) + sum(n for _, n in subs))
            open_models.discard(name)
            continue
        if name in open_models:
            continue
        open_models.add(name)
        todo.append((name, True))
        todo.extend((sub, False) for sub, _, _ in model.subckts if sub not in sizes and sub not in open_models)
    return sizes.get(top.name, (0, 0))


def _check_expansion(models, top, source):
    """Refuse, before any work, a hierarchy that would flatten to more than MAX_INSTANCES or MAX_FLAT_NODES."""
    instances, nodes = expanded_size({m.name: m for m in models}, top)
    if instances > MAX_INSTANCES or nodes > MAX_FLAT_NODES:
        raise AxnetError(f"the .subckt hierarchy of model '{top.name}' expands to {instances} instances and {nodes} "
                         f"nodes; at most {MAX_INSTANCES} and {MAX_FLAT_NODES} are flattened", path=source,
                         line=top.line)


# -- public API -----------------------------------------------------------------------------------------------------

def parse_blif(text, source="<string>", top=None, undriven="error"):
    """Parse BLIF text into one flat, checked Netlist.

    `top` names the top model (default: the first one). `undriven` is "error" (default) or "zero" (tie nets that
    are read but never driven to 0, with a BlifWarning). `source` names the text in error messages.
    """
    if undriven not in ("error", "zero"):
        raise AxnetError(f"undriven must be 'error' or 'zero', got {undriven!r}")
    models = _Parser(text, source).parse()
    for model in models:
        _check_model(model, source)
    if top is None:
        top_model = models[0]
    else:
        top_model = next((m for m in models if m.name == top), None)
        if top_model is None:
            names = ", ".join(m.name for m in models)
            raise AxnetError(f"no model named '{top}' (models: {names})", path=source)
    _check_expansion(models, top_model, source)
    flat = _Flattener(models, source)
    flat.flatten(top_model, top_model.inputs)
    netlist = Netlist(top_model.name, list(top_model.inputs), list(top_model.outputs), flat.nodes, source)
    _tie_undriven(netlist, undriven, source, flat.lines, top_model.port_lines)
    return netlist.check()


def _tie_undriven(netlist, undriven, source, lines, output_lines):
    """Drive Yosys constant nets by constants, drop dead logic hanging off undriven nets, and with undriven="zero"
    tie every other undriven net to 0; otherwise an undriven net inside an output's cone is an AxnetError."""
    for name in netlist.undriven():
        if name in YOSYS_CONSTANTS:
            value = YOSYS_CONSTANTS[name]
            netlist.nodes[name] = Node(name, (), ("",) if value else (), 1)
    _drop_dead_undriven(netlist, source)
    for name in netlist.undriven():
        if undriven == "zero":
            warnings.warn(f"{source}: net '{name}' is used but never driven; tied to constant 0", BlifWarning,
                          stacklevel=3)
            netlist.nodes[name] = Node(name, (), (), 1)
        else:
            reader = _first_reader(netlist, name, lines) or output_lines.get((".outputs", name))
            raise AxnetError(f"net '{name}' is used but never driven (pass undriven='zero', or --undriven zero "
                             "on the command line, to tie undriven nets to 0)", path=source, line=reader)


def _drop_dead_undriven(netlist, source):
    """Remove the logic that reads undriven nets but reaches no output (Yosys leaves such buffers when a design
    is not purged), with one BlifWarning saying how many nets; undriven nets in an output's cone are left alone."""
    cone = netlist.output_cone()
    dead = [n for n in netlist.undriven() if n not in cone]
    if not dead:
        return
    removed = netlist.remove_downstream(dead)  # all dead too: a live node has only live fanins
    nets, feed = ("net", "feeds") if len(dead) == 1 else ("nets", "feed")
    nodes = "node" if len(removed) == 1 else "nodes"
    warnings.warn(f"{source}: {len(dead)} undriven {nets} (e.g. '{dead[0]}') {feed} only logic that reaches no "
                  f"output; dropped that dead logic ({len(removed)} {nodes})", BlifWarning, stacklevel=4)


def _first_reader(netlist, name, lines):
    """Line of the first node that reads `name` (None when only an output reads it)."""
    found = [lines[n.name] for n in netlist.nodes.values() if name in n.fanins and n.name in lines]
    return min(found) if found else None


def read_blif(path, top=None, undriven="error"):
    """Read a BLIF file into one flat, checked Netlist (see parse_blif for `top` and `undriven`)."""
    text = read_text(path, "BLIF file")
    return parse_blif(text, source=str(path), top=top, undriven=undriven)
