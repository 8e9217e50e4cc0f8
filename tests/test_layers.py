"""The arrows between folders point down: scripts -> utils -> model / dataset; no cycles, no hidden imports.

Parses every project module's imports with `ast` (nothing is imported or run).
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("model", "dataset", "utils", "scripts")
# Which top-level folders each folder may import from. model/ reads dataset/'s category vocabulary (object
# nouns, texture list) for prompts and its image decoding for `AnomalyDetector.detect`; dataset/ never
# imports model/, so the two stay acyclic.
ALLOWED = {
    "dataset": {"dataset"},
    "model": {"model", "dataset"},
    "utils": {"utils", "model", "dataset"},
    "scripts": {"scripts", "utils", "model", "dataset"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_imports(path: Path) -> list[tuple[str, bool]]:
    """(imported project module, imported inside a function or class?) for every import in `path`."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, nested: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = nested or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
            if isinstance(child, ast.Import):
                found.extend((a.name, nested) for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                found.append((child.module, nested))
            visit(child, inner)

    visit(tree, False)
    return [(name, nested) for name, nested in found if name.split(".")[0] in PACKAGES]


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((REPO / pkg).rglob("*.py"))}


def test_folders_import_only_lower_layers():
    wrong = []
    for name, path in all_modules().items():
        layer = name.split(".")[0]
        for target, _ in project_imports(path):
            if target.split(".")[0] not in ALLOWED[layer]:
                wrong.append(f"{name} imports {target}")
    assert not wrong, "imports against the layering: " + "; ".join(wrong)


def test_no_project_import_hides_inside_a_function():
    hidden = [
        f"{name} imports {target} inside a function"
        for name, path in all_modules().items()
        for target, nested in project_imports(path)
        if nested
    ]
    assert not hidden, "; ".join(hidden)


def test_no_import_cycles():
    modules = all_modules()

    def resolve(target: str) -> str | None:
        while target and target not in modules:  # `from pkg.mod import name` -> pkg.mod
            target = target.rpartition(".")[0]
        return target or None

    graph = {
        name: {t for t in (resolve(m) for m, _ in project_imports(p)) if t and t != name}
        for name, p in modules.items()
    }
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    cycle: list[str] = []

    def walk(node: str, path: list[str]) -> bool:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle.extend(path[path.index(nxt) :] + [node, nxt] if nxt in path else [node, nxt])
                return True
            if nxt not in state and walk(nxt, path + [node]):
                return True
        state[node] = 2
        return False

    for name in sorted(graph):
        if name not in state and walk(name, []):
            break
    assert not cycle, "import cycle: " + " -> ".join(cycle)


def test_the_checks_see_real_imports():
    """Guard against a parser that finds nothing: known edges must be present."""
    modules = all_modules()
    detector = {t for t, _ in project_imports(modules["model.detector"])}
    assert "model.fusion" in detector and "model.map_ops" in detector
    assert any(t.startswith("utils.") for t, _ in project_imports(modules["scripts.test"]))


def test_config_sits_below_evaluation_and_training_below_both():
    """utils/evaluation reads settings (imports utils/config), never the other way round; training imports
    neither evaluation nor its pictures (shared plots live in utils/plots.py)."""
    modules = all_modules()
    forbidden = {"utils.config": ("utils.evaluation",), "utils.training": ("utils.evaluation",)}
    wrong = [
        f"{name} imports {target}"
        for name, path in modules.items()
        for below, above in forbidden.items()
        if name == below or name.startswith(below + ".")
        for target, _ in project_imports(path)
        if target.startswith(above)
    ]
    assert not wrong, "; ".join(wrong)
    fingerprint = {t for t, _ in project_imports(modules["utils.evaluation.fingerprint"])}
    assert "utils.config.schema" in fingerprint  # the allowed arrow is real, so the check sees imports
