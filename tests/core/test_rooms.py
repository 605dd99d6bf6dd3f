"""The core's shape, checked so that a change which breaks it fails CI: no import circle anywhere
(including imports inside functions and under ``TYPE_CHECKING``), small modules, and rooms whose
callers use the package's public surface."""

from __future__ import annotations

import ast
import importlib
import sys
from pathlib import Path

import grimp
import pytest

from citadel.workflows.graph import strongly_connected

pytestmark = pytest.mark.system  # its tests start processes of their own (see tests/conftest.py)

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("citadel", "tasks", "flows", "blocks", "deployments", "orchestration", "cli", "api")
ROOMS = ("documents", "embedders", "store", "registry", "indexing", "search", "ops", "workflows")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph(*PACKAGES, include_external_packages=False, cache_dir=None)


def import_circles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Every strongly connected set of more than one module, by the workflow graph's own search."""
    modules = sorted(graph.modules)
    imports = {module: sorted(graph.find_modules_directly_imported_by(module)) for module in modules}
    return [sorted(circle) for circle in strongly_connected(modules, imports) if len(circle) > 1]


def test_the_circle_finder_finds_a_circle_hidden_in_a_function() -> None:
    class Graph:
        modules = {"a", "b", "c"}

        @staticmethod
        def find_modules_directly_imported_by(module: str) -> set[str]:
            return {"a": {"b"}, "b": {"c"}, "c": {"a"}}[module]

    assert import_circles(Graph()) == [["a", "b", "c"]]  # type: ignore[arg-type]


def test_no_module_imports_itself_back_through_others(graph: grimp.ImportGraph) -> None:
    assert import_circles(graph) == []


def test_no_module_is_over_400_lines() -> None:
    long = {
        str(path.relative_to(ROOT)): lines
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
        if (lines := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}, f"split these by concern: {long}"


def test_no_function_is_over_60_lines() -> None:
    long = {
        f"{path.relative_to(ROOT)}:{node.lineno} {node.name}": lines
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and (lines := (node.end_lineno or node.lineno) - node.lineno + 1) > MAX_FUNCTION_LINES
    }
    assert long == {}, f"split these into named steps: {long}"


@pytest.mark.parametrize("room", ROOMS)
def test_each_room_says_what_it_holds_and_exports_what_it_names(room: str) -> None:
    package = importlib.import_module(f"citadel.{room}")
    assert package.__doc__ and package.__doc__.strip(), f"citadel/{room}/__init__.py needs a docstring saying what belongs there"
    assert package.__all__, f"citadel.{room} names no public surface"
    for name in package.__all__:
        assert getattr(package, name) is not None, f"citadel.{room}.{name}"


def test_callers_outside_a_room_import_its_package_or_a_submodule_it_makes_public(graph: grimp.ImportGraph) -> None:
    private = []
    for room in ROOMS:
        package = importlib.import_module(f"citadel.{room}")
        public = {f"citadel.{room}.{name}" for name in package.__all__ if f"citadel.{room}.{name}" in graph.modules}
        for module in graph.find_children(f"citadel.{room}"):
            if module in public:
                continue
            for importer in graph.find_modules_that_directly_import(module):
                if not importer.startswith(f"citadel.{room}"):
                    private.append(f"{importer} -> {module}")
    assert sorted(private) == []


def test_a_room_reaches_its_own_modules_directly_never_through_its_package() -> None:
    """A room's package imports its modules; a module importing the package back would depend on
    the order they load in (grimp records ``from citadel.store import probe`` as an import of
    ``citadel.store.probe``, so this reads the source)."""
    through_package = []
    for room in ROOMS:
        for path in (ROOT / "citadel" / room).rglob("*.py"):
            if path.name == "__init__.py":
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module == f"citadel.{room}":
                    through_package.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert through_package == []


def test_importing_the_registry_or_the_store_probe_does_not_load_the_store_client() -> None:
    code = "import sys, citadel.registry, citadel.store, citadel.indexing, citadel.ops; print('qdrant_client' in sys.modules)"
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "False"


def test_the_distribution_claims_only_the_known_top_level_names() -> None:
    import tomllib

    include = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    assert sorted(name.removesuffix("*") for name in include) == sorted(PACKAGES), (
        "a new top-level package claims a name in site-packages: see 'Why the layers keep their top-level names' in docs/design.md"
    )
