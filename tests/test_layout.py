"""The package's layout rules, checked on its source: data flows one way.

- no module imports another module's private names (or private modules);
- the import graph between irli's modules has no cycle, counting imports
  inside functions too (a lazy import is still a dependency);
- the library never imports its front ends (cli, demo, bars, serve) or the package
  face, so it never prints and loads without them.
"""

import ast
from pathlib import Path

import irli

PACKAGE = Path(irli.__file__).resolve().parent
MODULES = {p.stem: p for p in PACKAGE.glob("*.py")}
FRONT_ENDS = {"cli", "demo", "bars", "serve"}


def _imports(name: str) -> list[tuple[str, str]]:
    """(module imported, name imported or "") for every irli import in `name`."""
    out = []
    for node in ast.walk(ast.parse(MODULES[name].read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1:
                base = node.module or ""
            elif node.module and node.module.split(".")[0] == "irli":
                base = node.module.split(".", 1)[1] if "." in node.module else ""
            else:
                continue
            for alias in node.names:
                if not base:  # from . import x: a module, or a name of the package face
                    out.append((alias.name if alias.name in MODULES else "__init__", alias.name))
                else:
                    out.append((base.split(".")[0], alias.name))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "irli":
                    out.append((parts[1] if len(parts) > 1 else "__init__", ""))
    return out


GRAPH = {name: {m for m, _ in _imports(name)} - {name} for name in MODULES}


def test_no_private_names_cross_modules():
    bad = [f"{name} imports {what} from {mod}" for name in MODULES for mod, what in _imports(name)
           if mod != name and (what.startswith("_") and not what.startswith("__") or mod.startswith("_")
                               and mod != "__init__")]
    assert not bad, bad


def test_import_graph_has_no_cycle():
    state: dict[str, int] = {}
    path: list[str] = []
    cycles = []

    def visit(u):
        state[u] = 1
        path.append(u)
        for v in sorted(GRAPH[u]):
            if v not in GRAPH:
                continue
            if state.get(v) == 1:
                cycles.append(" -> ".join(path[path.index(v):] + [v]))
            elif v not in state:
                visit(v)
        path.pop()
        state[u] = 2

    for u in sorted(GRAPH):
        if u not in state:
            visit(u)
    assert not cycles, cycles


def test_library_does_not_import_front_ends_or_the_package_face():
    bad = [f"{name} imports {mod}" for name, deps in GRAPH.items()
           if name not in FRONT_ENDS | {"__init__"} for mod in deps & (FRONT_ENDS | {"__init__"})]
    assert not bad, bad
