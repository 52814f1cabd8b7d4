"""The project's layout contracts (docs/ARCHITECTURE.md): one-way data flow, no import cycle, short modules."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("circuits", "simulator", "lutgen", "dnn")
MAX_LINES = 500
C_FUNCTION = re.compile(r"\b(void|int|float|double|static inline)\s+\w+\s*\([^)]*\)\s*\{")  # a C function body


def project_modules():
    """module name -> path for every Python module of the four packages."""
    modules = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def imported_modules(path, known):
    """Project modules imported anywhere in `path` (top level or inside functions), resolved to known names."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


def import_graph():
    modules = project_modules()
    graph = nx.DiGraph()
    for name, path in modules.items():
        graph.add_node(name)
        for target in imported_modules(path, modules):
            if target != name and not name.startswith(target + "."):  # a package's own __init__ is not a cycle
                graph.add_edge(name, target)
    return graph


def test_data_flows_one_way_between_packages():
    rank = {package: i for i, package in enumerate(PACKAGES)}
    wrong = [(a, b) for a, b in import_graph().edges if rank[b.split(".")[0]] > rank[a.split(".")[0]]]
    assert not wrong, f"imports against circuits -> simulator -> lutgen -> dnn: {wrong}"


def test_no_import_cycle_between_modules():
    graph = import_graph()
    # re-exporting package __init__ files point down into their own rooms; a cycle through one of them is only a
    # re-export, so they are left out
    inits = [n for n in graph if (project_modules()[n].name == "__init__.py")]
    cycles = list(nx.simple_cycles(graph.subgraph(set(graph) - set(inits))))
    assert not cycles, f"import cycles: {cycles[:5]}"


def test_dnn_rooms_depend_in_pipeline_order():
    order = ["dnn.kernels", "dnn.arith", "dnn.layers", "dnn.workflow"]
    room = {r: i for i, r in enumerate(order)}

    def room_of(name):
        return next((r for r in order if name == r or name.startswith(r + ".")), None)

    wrong = []
    for a, b in import_graph().edges:
        ra, rb = room_of(a), room_of(b)
        if ra and rb and room[rb] > room[ra]:
            wrong.append((a, b))
    assert not wrong, f"a dnn room imports one later in kernels -> arith -> layers -> workflow: {wrong}"


def test_modules_stay_under_500_lines():
    long = {name: n for name, path in project_modules().items()
            if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_c_kernels_live_in_source_files():
    """No C translation unit inside a Python string (a code generator's per-circuit snippets are fine): kernels are
    .c files shipped as package data."""
    offenders = []
    for name, path in project_modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and "#include" in node.value \
                    and C_FUNCTION.search(node.value):
                offenders.append(name)
    assert not offenders, f"C source inside Python strings: {offenders}"
    assert sorted(p.name for p in (ROOT / "dnn" / "kernels" / "csrc").glob("*.c"))
