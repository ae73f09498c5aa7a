"""The layering the architecture promises, checked on the source (every import statement, read with ``ast``,
relative ones resolved, ``importlib.import_module("...")`` and ``__import__("...")`` with a literal name
counted) and, for ``imaging``, by importing it:

- ``imaging/`` is pure Python: none of its modules imports Django, DRF or an app of the project, anywhere in
  the module (function-level imports included), nor through a library it imports;
- the apps depend one way: ``templates_app`` -> ``datasets``; ``datasets`` imports none of ``templates_app``,
  ``legacy``, ``frontend``; ``templates_app`` imports neither ``legacy`` nor ``frontend``; nothing outside
  ``frontend`` imports it but the URL configuration, ``samsite.urls``;
- no cycle of module-level imports between the project's modules (the job subsystem had one: generation ->
  services.jobs -> runner -> generation).
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("imaging", "datasets", "templates_app", "legacy", "frontend", "samsite")
#: What no module of ``imaging`` may reach: a web framework, or any app of the project.
NOT_FOR_IMAGING = {"django", "rest_framework", *PACKAGES[1:]}
#: Apps each app must never import (the direction of the arrows in ARCHITECTURE.md).
FORBIDDEN_APPS = {
    "datasets": {"templates_app", "legacy", "frontend"},
    "templates_app": {"legacy", "frontend"},
}
#: The one module outside ``frontend`` allowed to import it: the URL configuration that mounts its pages.
FRONTEND_IMPORTERS = {"samsite.urls"}


def _module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
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


def _absolute(module: str, path: Path, node: ast.ImportFrom) -> str | None:
    """The absolute module a ``from ... import`` names (``from .forms import x`` in frontend.presenters ->
    frontend.forms)."""
    if node.level == 0:
        return node.module
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base) or None


def _dynamic_import(node: ast.AST) -> str | None:
    """The literal module name of ``importlib.import_module("x")`` / ``import_module("x")`` / ``__import__("x")``."""
    if not isinstance(node, ast.Call) or not node.args:
        return None
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
    first = node.args[0]
    if (
        name in ("import_module", "__import__")
        and isinstance(first, ast.Constant)
        and isinstance(first.value, str)
    ):
        return first.value
    return None


def _imports(path: Path, *, module_level_only: bool, root: Path = ROOT) -> set[str]:
    module = _module_name(path, root)
    tree = ast.parse(path.read_text(), filename=str(path))
    if module_level_only:  # also imports under module-level ``if``/``try`` blocks
        nodes = [
            n
            for top in tree.body
            for n in ast.walk(top)
            if not isinstance(top, ast.FunctionDef | ast.ClassDef | ast.AsyncFunctionDef)
        ]
    else:
        nodes = list(ast.walk(tree))
    names = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(module, path, node)
            if source:
                names.add(source)
                names.update(f"{source}.{alias.name}" for alias in node.names)
        elif dynamic := _dynamic_import(node):
            names.add(dynamic)
    return names


MODULES = _modules()


def _apps(names: set[str]) -> set[str]:
    return {name.split(".")[0] for name in names}


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.split(".")[0] == "imaging"))
def test_imaging_never_imports_django_or_the_apps(module):
    imported = _imports(MODULES[module], module_level_only=False)
    assert not {name for name in imported if name.split(".")[0] in NOT_FOR_IMAGING}, module


def test_imaging_and_every_library_it_imports_load_without_django():
    """Import every imaging module, and every library any of them names (at module or function level), in a
    fresh interpreter where importing Django, DRF or an app fails: a library that pulls Django in is caught
    too. A library that is not installed is skipped (it cannot bring Django along)."""
    imaging = sorted(m for m in MODULES if m.split(".")[0] == "imaging")
    libraries = sorted(
        {
            name
            for module in imaging
            for name in _imports(MODULES[module], module_level_only=False)
            if name.split(".")[0] not in ("imaging", "__future__")
        }
    )
    script = textwrap.dedent(
        """
        import importlib, importlib.abc, json, sys

        FORBIDDEN = set(json.loads(sys.argv[1]))

        class Reached(ImportError):
            pass

        class Refuse(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in FORBIDDEN:
                    raise Reached(name)
                return None

        sys.meta_path.insert(0, Refuse())
        reached = {}
        for name in json.loads(sys.argv[2]):
            try:
                importlib.import_module(name)
            except Reached as exc:
                reached[name] = str(exc)
            except ImportError:
                pass  # ``from x import attr`` names an attribute, or an optional library is not installed
        print(json.dumps(reached))
        """
    )
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            script,
            json.dumps(sorted(NOT_FOR_IMAGING)),
            json.dumps([*imaging, *libraries]),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    reached = json.loads(done.stdout.strip().splitlines()[-1])
    assert reached == {}, f"importing these reached {sorted(NOT_FOR_IMAGING)}: {reached}"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.split(".")[0] in FORBIDDEN_APPS))
def test_apps_depend_one_way(module):
    forbidden = FORBIDDEN_APPS[module.split(".")[0]]
    imported = _imports(MODULES[module], module_level_only=False)
    assert not _apps(imported) & forbidden, module


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith("samsite.common")))
def test_the_shared_layer_imports_no_app(module):
    """``samsite/common`` is what every app uses, so it may use only imaging (pure) and the frameworks."""
    imported = _imports(MODULES[module], module_level_only=False)
    assert not _apps(imported) & {"datasets", "templates_app", "legacy", "frontend"}, module


def test_only_the_url_conf_imports_frontend():
    importers = {
        module
        for module, path in MODULES.items()
        if module.split(".")[0] != "frontend" and "frontend" in _apps(_imports(path, module_level_only=False))
    }
    assert importers <= FRONTEND_IMPORTERS


def test_the_contract_reads_relative_and_dynamic_imports(tmp_path):
    """The reader itself: a contract that missed an import form would pass on code that breaks it."""
    package = tmp_path / "frontend"
    package.mkdir()
    (package / "__init__.py").write_text("from . import views\n")
    (package / "views.py").write_text(
        "import importlib\nfrom .forms import Form\n\n\ndef f():\n    importlib.import_module('legacy.views')\n"
    )
    assert _imports(package / "__init__.py", module_level_only=True, root=tmp_path) >= {"frontend.views"}
    views = _imports(package / "views.py", module_level_only=False, root=tmp_path)
    assert {"frontend.forms", "frontend.forms.Form", "legacy.views"} <= views
    assert "legacy.views" not in _imports(package / "views.py", module_level_only=True, root=tmp_path)


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
