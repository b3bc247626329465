"""The import layers, read from the source with ``ast`` (nothing is imported): no import circle among auditor_rt's
modules, counting imports inside functions too, and a runtime that needs neither the export side nor torch, timm
or onnx (the edge install has numpy, onnxruntime and OpenCV only)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = {"export": "auditor_rt.export", "runtime": "auditor_rt.runtime", "cli": "auditor_rt.cli"}
NOT_IN_RUNTIME = ("auditor_rt.export", "torch", "timm", "onnx")


def modules() -> dict[str, Path]:
    """Every module of the package by its import name (a package by its own name: its ``__init__.py``)."""
    found = {}
    for folder, package in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


def imported_names(path: Path, name: str) -> set[str]:
    """Every module that ``path`` imports, wherever the import statement is. ``from a import b`` imports ``a.b``
    where that is a module, else ``a``."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}".rstrip(".")
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def import_graph() -> dict[str, set[str]]:
    known = modules()
    return {name: {target for target in imported_names(path, name) if target in known and target != name}
            for name, path in known.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
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
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_circle_among_auditor_rt_modules():
    assert cycles(import_graph()) == []


def test_the_cycle_finder_sees_a_circle_through_a_function_level_import():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]


def test_the_runtime_imports_no_export_module_nor_torch_timm_or_onnx():
    offending = []
    for name, path in modules().items():
        if not name.startswith("auditor_rt.runtime"):
            continue
        for target in imported_names(path, name):
            if any(target == banned or target.startswith(banned + ".") for banned in NOT_IN_RUNTIME):
                offending.append(f"{path.relative_to(ROOT)} imports {target}")
    assert offending == []
