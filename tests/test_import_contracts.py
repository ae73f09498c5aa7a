"""The layering the architecture promises, checked on the source (module-level imports, read with ``ast``):

- ``imaging/`` is pure Python: none of its modules imports Django or an app of the project;
- ``templates_app`` depends on ``datasets`` and never the other way round;
- no cycle of module-level imports between the project's modules (the job subsystem had one: generation ->
  services.jobs -> runner -> generation).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("imaging", "datasets", "templates_app", "legacy", "frontend", "samsite")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" not in path.parts:
                found[_module_name(path)] = path
    return found


def _imports(path: Path, *, module_level_only: bool) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    nodes = tree.body if module_level_only else list(ast.walk(tree))
    if module_level_only:  # also imports under module-level ``if``/``try`` blocks
        nodes = [
            n
            for top in tree.body
            for n in ast.walk(top)
            if not isinstance(top, ast.FunctionDef | ast.ClassDef | ast.AsyncFunctionDef)
        ]
    names = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


MODULES = _modules()


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.split(".")[0] == "imaging"))
def test_imaging_never_imports_django_or_the_apps(module):
    imported = _imports(MODULES[module], module_level_only=False)
    forbidden = {"django", "rest_framework", *PACKAGES[1:]}
    assert not {name for name in imported if name.split(".")[0] in forbidden}, module


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.split(".")[0] == "datasets"))
def test_datasets_never_imports_templates_app(module):
    imported = _imports(MODULES[module], module_level_only=False)
    assert not {name for name in imported if name.split(".")[0] == "templates_app"}, module


def test_no_cycle_of_module_level_imports():
    graph = {
        module: {
            name for name in _imports(path, module_level_only=True) if name in MODULES and name != module
        }
        for module, path in MODULES.items()
    }
    # ``from package import module`` names the package too; a package importing its own submodules is fine.
    graph = {
        m: {d for d in deps if not m.startswith(d + ".") and not d.startswith(m + ".")}
        for m, deps in graph.items()
    }
    done: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str, trail: list[str]) -> None:
        if node in trail:
            cycles.append([*trail[trail.index(node) :], node])
            return
        if node in done:
            return
        for dep in sorted(graph.get(node, ())):
            visit(dep, [*trail, node])
        done.add(node)

    for module in sorted(graph):
        visit(module, [])
    assert cycles == []
