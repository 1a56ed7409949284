"""The package's layout rules, checked on its source: data flows one way.

- no module imports another module's private names (or private modules);
- the import graph between irli's modules has no cycle, counting imports
  inside functions too (a lazy import is still a dependency);
- the library never imports its front ends (cli, demo, bars, the serving
  sub-package) or the package face, so it never prints and loads without them.
Sub-packages count: "serving.app" is a module like any other.
"""

import ast
from pathlib import Path

import irli

PACKAGE = Path(irli.__file__).resolve().parent


def _name(path: Path) -> str:
    """A module's dotted name inside irli: "index", "serving.app"; a
    sub-package's __init__ is the sub-package ("serving"), irli's own is
    "__init__"."""
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


MODULES = {_name(p): p for p in PACKAGE.rglob("*.py")}
FRONT_ENDS = {"cli", "serving", "integrations"}


def _front_end(name: str) -> bool:
    return name.split(".")[0] in FRONT_ENDS


def _package(name: str) -> list[str]:
    """The package a module's relative imports start from, as parts."""
    if name == "__init__":
        return []
    parts = name.split(".")
    return parts if MODULES[name].name == "__init__.py" else parts[:-1]


def _resolve(base: str, alias: str) -> str:
    """The module that `from base import alias` reads: base.alias if that
    is a module, else base ("" is the package face)."""
    whole = f"{base}.{alias}" if base else alias
    if whole in MODULES:
        return whole
    return base or "__init__"


def _imports(name: str) -> list[tuple[str, str]]:
    """(module imported, name imported or "") for every irli import in `name`."""
    out = []
    for node in ast.walk(ast.parse(MODULES[name].read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                pkg = _package(name)
                up = pkg[: len(pkg) - (node.level - 1)] if node.level > 1 else pkg
                base = ".".join(up + ([node.module] if node.module else []))
            elif node.module and node.module.split(".")[0] == "irli":
                base = node.module.split(".", 1)[1] if "." in node.module else ""
            else:
                continue
            for alias in node.names:
                out.append((_resolve(base, alias.name), alias.name))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "irli":
                    out.append((".".join(parts[1:]) or "__init__", ""))
    return out


GRAPH = {name: {m for m, _ in _imports(name)} - {name} for name in MODULES}


def test_sub_packages_are_seen():
    assert "serving.app" in MODULES and "serving.protocol" in GRAPH["serving.app"]
    assert "errors" in GRAPH["serving.service"] and "serving" in GRAPH["__init__"]


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
    bad = [f"{name} imports {mod}" for name, deps in GRAPH.items() if not _front_end(name) and name != "__init__"
           for mod in deps if _front_end(mod) or mod == "__init__"]
    assert not bad, bad


# the layers, lowest first: a module may import its own layer and those below
LAYERS = ["top", "kernels", "model", "learn", "io", "index", "labels", "distributed", "front"]
# the faces of the package (irli.load, `import irli`) sit above everything
FACES = {"__init__", "loader"}
# upward imports still to remove (each a lazy import inside a function), and why they are there
EXCEPTIONS = {("index.format", "distributed.layout"): "Index.save(path, shards=S) writes a sharded index"}


def _layer(name: str) -> int:
    head = name.split(".")[0]
    if _front_end(name):
        return LAYERS.index("front")
    return LAYERS.index(head) if head in LAYERS else LAYERS.index("top")


def test_each_layer_imports_only_the_layers_below():
    bad = [f"{name} ({LAYERS[_layer(name)]}) imports {mod} ({LAYERS[_layer(mod)]})"
           for name, deps in GRAPH.items() if name not in FACES for mod in deps
           if mod in MODULES and mod not in FACES and _layer(mod) > _layer(name) and (name, mod) not in EXCEPTIONS]
    assert not bad, bad
