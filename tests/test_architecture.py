"""The package's floors only descend: a walk over every import of every module in graphrec_jax.

The layers, bottom up: `kernels` and `data`; `text` and `graph`; `models`; `serving`; `training`;
the edges (`config`, `cli`). Serving never imports training; graph, text and data import
neither; nothing below the edges reads the config module (it imports their choice lists, so
the reverse would be a cycle); and no module imports itself through others.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "graphrec_jax"

# package -> packages (and top-level modules) it may import
ALLOWED = {
    "kernels": set(),
    "data": set(),
    "text": {"data", "optimizers"},
    "graph": {"kernels", "data"},
    "models": {"graph", "text", "kernels", "data"},
    "serving": {"models", "graph", "text", "kernels", "data", "checkpoint", "config", "devices", "files"},
    "training": {
        "serving",
        "models",
        "graph",
        "text",
        "kernels",
        "data",
        "checkpoint",
        "config",
        "devices",
        "files",
        "optimizers",
        "plots",
    },
    "files": set(),
    "optimizers": set(),
    "devices": set(),
    "host_memory": set(),
    "plots": set(),
    "checkpoint": set(),
    "config": {"data", "graph", "kernels", "models", "text"},
    "cli_flags": {"cli"},  # the scripts' flag parsing, beside the top edge: it uses cli's one-line answer
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _resolve(name: str) -> str:
    """The deepest module of `name` that is a file or package of graphrec_jax."""
    parts = name.split(".")
    while parts:
        candidate = PACKAGE.parent.joinpath(*parts)
        if candidate.with_suffix(".py").is_file() or (candidate / "__init__.py").is_file():
            return ".".join(parts)
        parts = parts[:-1]
    return name


def imports_of(path: Path) -> list[tuple[str, int, bool]]:
    """(imported graphrec_jax module, line, at module level) for every import in `path`."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    top_level = {id(node) for node in tree.body}
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from graphrec_jax.x import y`: y may itself be a module
            names = [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            if name == "graphrec_jax" or name.startswith("graphrec_jax."):
                found.append((_resolve(name), node.lineno, id(node) in top_level))
    return found


def floor(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def import_graph() -> dict[str, list[tuple[str, int, bool]]]:
    return {module_name(path): imports_of(path) for path in sorted(PACKAGE.rglob("*.py"))}


def violations(graph: dict) -> list[str]:
    """Every import that goes up a floor, as 'a imports b (file line n)'."""
    found = []
    for module, imports in graph.items():
        imports = sorted(set(imports), key=lambda entry: entry[1])
        source = floor(module)
        if source not in ALLOWED:  # the package root and the edges (cli) may import anything
            continue
        for target, line, _ in imports:
            destination = floor(target)
            if destination and destination != source and destination not in ALLOWED[source]:
                found.append(f"{module} imports {target} (line {line}): {source}/ may not import {destination}")
    return found


def cycles(graph: dict) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), counting every import."""
    edges = {
        module: sorted({target for target, _, _ in imports if target in graph}) for module, imports in graph.items()
    }
    # a package's __init__ importing its own submodules is how packages work, not a cycle
    edges = {m: [t for t in targets if not t.startswith(m + ".")] for m, targets in edges.items()}
    index, low, stack, on_stack, result, counter = {}, {}, [], set(), [], [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in edges[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                result.append(sorted(component))

    for node in edges:
        if node not in index:
            visit(node)
    return result


def test_floors_only_descend():
    found = violations(import_graph())
    assert not found, "imports that go up a floor:\n  " + "\n  ".join(found)


def test_no_import_cycles():
    found = cycles(import_graph())
    assert not found, "import cycles:\n  " + "\n  ".join(" <-> ".join(component) for component in found)


def test_every_package_has_a_floor():
    packages = {floor(module_name(path)) for path in PACKAGE.rglob("*.py")} - {""}
    unplaced = packages - set(ALLOWED) - {"cli"}  # cli is the top edge: it may import anything
    assert not unplaced, f"give these a floor in ALLOWED: {unplaced}"


def test_the_walk_catches_a_serving_module_importing_training(tmp_path):
    graph = import_graph()
    graph["graphrec_jax.serving.recommender"] = graph["graphrec_jax.serving.recommender"] + [
        ("graphrec_jax.training.run", 1, True)
    ]
    found = violations(graph)
    assert any("graphrec_jax.serving.recommender imports graphrec_jax.training.run" in line for line in found)
    with pytest.raises(AssertionError):
        assert not found
