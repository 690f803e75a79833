"""The package's layers point one way: a module imports only its own layer and the ones below, and no
two modules import each other (directly or round a circle), lazy imports inside functions included.
The layers and the reason for each are in docs/ARCHITECTURE.md."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "fastadv"
# lowest first; a module belongs to the first layer one of whose prefixes it starts with
LAYERS = [
    ("errors, io", ("fastadv.errors", "fastadv.io", "fastadv.stats", "fastadv._version")),
    ("config", ("fastadv.config", "fastadv.specs", "fastadv.presets", "fastadv.naming", "fastadv.threat")),
    ("data, models", ("fastadv.data", "fastadv.models")),
    ("core", ("fastadv.core",)),
    ("evaluation", ("fastadv.evaluation",)),
    ("training", ("fastadv.training",)),
    ("experiments", ("fastadv.experiments",)),
    ("cli", ("fastadv.cli",)),
    ("the package's face", ("fastadv",)),  # fastadv/__init__.py (lazy public names) and __main__.py
]
MAX_FUNCTION_LINES = 80
MAX_MODULE_LINES = 400


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(name: str) -> int:
    for i, (_, prefixes) in enumerate(LAYERS):
        if any(name == p or name.startswith(p + ".") for p in prefixes):
            return i
    raise AssertionError(f"{name} is in no layer")


def imports() -> dict[str, set[str]]:
    """Module -> the fastadv modules it imports anywhere (``from fastadv.x import y`` counts as fastadv.x.y
    when that is a module, else fastadv.x)."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    out = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                           for a in node.names]
            found |= {t for t in targets if t == "fastadv" or t.startswith("fastadv.")}
        out[name] = {t for t in found if t != name}
    return out


def test_no_module_imports_a_layer_above_its_own():
    upward = [f"{m} ({LAYERS[layer(m)][0]}) imports {t} ({LAYERS[layer(t)][0]})"
              for m, targets in imports().items() for t in targets
              if layer(t) > layer(m) and not (t == "fastadv" and m.startswith("fastadv."))]
    assert not upward, "\n".join(upward)


def test_no_import_cycles():
    graph = imports()
    # a package's __init__ importing its own submodules is how a package shows its face: not an edge back
    edges = {m: {t for t in ts if not (t.startswith(m + ".")) and t in graph and t != "fastadv"}
             for m, ts in graph.items()}
    cycles, state = [], {}

    def visit(node, stack):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [])
    assert not cycles, "\n".join(cycles)


def test_the_layers_are_the_ones_the_architecture_doc_names():
    doc = (PACKAGE.parent / "docs" / "ARCHITECTURE.md").read_text()
    assert all(title in doc for title, _ in LAYERS)


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_functions_and_modules_are_short(path):
    tree = ast.parse(path.read_text())
    long = [f"{n.name}: {n.end_lineno - n.lineno + 1} lines" for n in ast.walk(tree)
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, long
    assert len(path.read_text().splitlines()) <= MAX_MODULE_LINES
