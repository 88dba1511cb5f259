"""The package layout rule of ARCHITECTURE.md: imports only point down the layers, and no module imports
itself back through others (no import circle)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "ftlab"
ARCHITECTURE = Path(__file__).resolve().parents[1] / "ARCHITECTURE.md"
# Lowest first. A module imports from its own package or from a lower layer, never from a higher one; packages
# that share a layer are independent of each other (no imports between them either way).
LAYERS = [
    {"errors"},
    {"io"},
    {"config"},
    {"data"},
    {"finetune"},
    {"models"},
    {"features"},
    {"inference", "loggers", "runs", "selection"},
    {"callbacks", "serving"},
    {"benchmark", "training"},
    {"cli"},
]
ALIASES = {"train", "prepare", "predict", "eval", "export", "report", "bench", "audit", "serve", "select"}


def _package(module: str) -> str:
    """`ftlab.x.y` -> `x`: the package (or top-level module) a module belongs to."""
    return module.split(".")[1] if module.count(".") else ""


def _layer(module: str) -> int:
    top = _package(module)
    for i, names in enumerate(LAYERS):
        if top in names:
            return i
    if top in ALIASES:
        return len(LAYERS)
    raise AssertionError(f"ftlab.{top} is not in ARCHITECTURE.md's layers; add it there and here")


def _imports() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in SRC.rglob("*.py"):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ftlab."):
                targets.add(node.module)
            elif isinstance(node, ast.Import):
                targets.update(a.name for a in node.names if a.name.startswith("ftlab."))
        graph[name] = targets
    return graph


def test_imports_only_point_down_the_layers():
    """Up a layer (inference -> training) or across one (inference -> runs): both point up."""
    wrong = [
        f"{module} -> {target}"
        for module, targets in _imports().items()
        if module != "ftlab"
        for target in targets
        if _package(target) != _package(module) and _layer(target) >= _layer(module)
    ]
    assert not wrong, "imports pointing up (or across) a layer:\n" + "\n".join(sorted(wrong))


def test_layers_name_every_package_and_only_those():
    tops = {p.stem for p in SRC.glob("*.py") if p.stem != "__init__"}
    tops |= {p.parent.name for p in SRC.glob("*/__init__.py")}
    named = set().union(*LAYERS)
    assert tops - ALIASES == named, f"not in LAYERS: {tops - ALIASES - named}; gone: {named - tops}"


def test_architecture_md_lists_the_same_packages_and_layers():
    text = ARCHITECTURE.read_text()
    tree = text[text.index("src/ftlab/\n") : text.index("src/hydra_plugins/")]
    listed = set(re.findall(r"^  (\w+)(?:/|\.py) ", tree, flags=re.MULTILINE))
    assert listed == set().union(*LAYERS), f"ARCHITECTURE.md's package list: {sorted(listed)}"
    sentence = text[text.index("Layers, lowest first:") : text.index("A module imports")]
    layers = [set(re.findall(r"`(\w+)`", part)) for part in sentence.split("<")]
    assert layers == LAYERS, f"ARCHITECTURE.md's layers: {layers}"


def test_no_import_circle():
    graph = _imports()
    modules = set(graph)

    def resolve(target: str) -> str | None:
        while target and target not in modules:
            target = target.rpartition(".")[0]
        return target or None

    edges = {m: {t for t in map(resolve, targets) if t and t != m} for m, targets in graph.items()}
    packages = {m for m in modules if (SRC.parent / m.replace(".", "/") / "__init__.py").is_file()}
    state: dict[str, int] = {}
    circles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in edges.get(node, ()):
            if state.get(nxt) == 1:
                circles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for module in sorted(modules):
        if module not in state:
            visit(module, [])
    real = [c for c in circles if not set(c) & packages]  # a package re-exporting its own modules is fine
    assert not real, "import circles:\n" + "\n".join(" -> ".join(c) for c in real)
