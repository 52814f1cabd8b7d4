"""The combinational netlist model every part of axnet shares.

A netlist is a set of primary inputs and single-output logic nodes, each node a sum-of-products cover over its fanin
nets (the BLIF `.names` model). The graph view is a networkx DiGraph, which gives topological order, depth, fanout
and cycle detection.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import networkx as nx

from circuits.errors import AxnetError


@dataclass(frozen=True)
class Node:
    """One logic node: `out = OR(cubes)` when `polarity` is 1, `out = NOT OR(cubes)` when it is 0.

    Each cube is a string over '0', '1', '-' with one character per fanin. A node with no cubes is the constant
    NOT polarity (so `Node(name, (), (), 1)` is constant 0); a node with no fanins and the single empty cube is the
    constant `polarity`.
    """

    name: str
    fanins: tuple[str, ...]
    cubes: tuple[str, ...]
    polarity: int = 1

    def value(self, fanin_values):
        """Evaluate the node for one input pattern (a sequence of 0/1 in fanin order). Slow and obvious."""
        hit = any(all(c == "-" or int(c) == v for c, v in zip(cube, fanin_values)) for cube in self.cubes)
        return int(hit) if self.polarity else int(not hit)


@dataclass
class Netlist:
    """A flat combinational circuit. `nodes` maps each driven net to its Node; inputs are not in `nodes`."""

    name: str
    inputs: list[str]
    outputs: list[str]
    nodes: dict[str, Node] = field(default_factory=dict)
    source: str | None = None  # file it was read from, for error messages and provenance

    # -- graph view -------------------------------------------------------------------------------------------------
    def graph(self):
        """DiGraph with an edge fanin -> node for every node; primary inputs are nodes with no predecessors."""
        g = nx.DiGraph()
        g.add_nodes_from(self.inputs)
        for node in self.nodes.values():
            g.add_node(node.name)
            g.add_edges_from((f, node.name) for f in node.fanins)
        return g

    def topological_order(self):
        """Driven nets in an order where every node comes after its fanins. A cycle is an AxnetError naming its nets."""
        g = self.graph()
        try:
            order = list(nx.topological_sort(g))
        except nx.NetworkXUnfeasible:
            cycle = [u for u, _ in nx.find_cycle(g)]
            raise AxnetError("combinational cycle through nets " + " -> ".join(cycle + cycle[:1]),
                             path=self.source) from None
        return [n for n in order if n in self.nodes]

    def depth(self):
        """Logic depth: the longest path, counted in nodes, from a primary input or constant to an output."""
        level = {name: 0 for name in self.inputs}
        for name in self.topological_order():
            fanins = self.nodes[name].fanins
            level[name] = 1 + max((level[f] for f in fanins), default=0)
        return max((level.get(o, 0) for o in self.outputs), default=0)

    def fanout(self):
        """Number of node fanins plus primary outputs that read each net."""
        count = {name: 0 for name in list(self.inputs) + list(self.nodes)}
        for node in self.nodes.values():
            for f in node.fanins:
                count[f] = count.get(f, 0) + 1
        for o in self.outputs:
            count[o] = count.get(o, 0) + 1
        return count

    def undriven(self):
        """Nets that are read (by a node or as an output) but are neither inputs nor driven by a node."""
        known = set(self.inputs) | set(self.nodes)
        read = [f for node in self.nodes.values() for f in node.fanins] + list(self.outputs)
        return sorted({n for n in read if n not in known})

    def output_cone(self):
        """Every net some output depends on: the outputs and, transitively, the fanins of their drivers."""
        seen, todo = set(self.outputs), list(self.outputs)
        while todo:
            node = self.nodes.get(todo.pop())
            for f in node.fanins if node else ():
                if f not in seen:
                    seen.add(f)
                    todo.append(f)
        return seen

    def remove_downstream(self, nets):
        """Delete every node that reads any of `nets`, directly or through other nodes; returns their names."""
        readers = {}
        for node in self.nodes.values():
            for f in node.fanins:
                readers.setdefault(f, []).append(node.name)
        doomed, todo = set(), list(nets)
        while todo:
            for r in readers.get(todo.pop(), ()):
                if r not in doomed:
                    doomed.add(r)
                    todo.append(r)
        for name in doomed:
            del self.nodes[name]
        return sorted(doomed)

    def check(self):
        """Raise AxnetError for undriven nets or cycles; return self so calls chain."""
        missing = self.undriven()
        if missing:
            raise AxnetError(f"net '{missing[0]}' is used but never driven"
                             + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""), path=self.source)
        self.topological_order()
        return self

    def gate_count(self):
        return len(self.nodes)

    # -- slow reference evaluation ------------------------------------------------------------------------------------
    def evaluate(self, input_values):
        """Outputs (list of 0/1) for one pattern given as {input: 0/1} or a sequence in `.inputs` order.

        The plain per-pattern evaluator that every fast simulator is tested against.
        """
        if not isinstance(input_values, dict):
            input_values = dict(zip(self.inputs, input_values))
        values = {name: int(input_values[name]) for name in self.inputs}
        for name in self.topological_order():
            node = self.nodes[name]
            values[name] = node.value([values[f] for f in node.fanins])
        return [values[o] for o in self.outputs]

    def evaluate_int(self, pattern):
        """Output word sum(out_k << k) for an input pattern given as the integer sum(in_i << i) in `.inputs` order."""
        bits = [(pattern >> i) & 1 for i in range(len(self.inputs))]
        return sum(v << k for k, v in enumerate(self.evaluate(bits)))
