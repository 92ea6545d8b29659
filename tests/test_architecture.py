"""The shape of the package, kept true (docs/architecture.md): no import circles, the core
imports no wing (daemon.py alone wires them), a wing imports only the wings its
``DEPENDS_ON`` names and only the modules their ``__all__`` exports, no module over 400 lines.

Every import counts, also those inside functions and under ``TYPE_CHECKING``: a lazy import
in a circle is still a circle.
"""

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

import dokuen

PACKAGE = Path(dokuen.__file__).parent
MAX_LINES = 400
WIRING = {"dokuen.daemon"}  # the core module that builds the daemon out of the wings


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}
WINGS = sorted(
    path.parent.name for path in PACKAGE.glob("*/__init__.py") if path.parent.name != "__pycache__"
)


def imports_of(name: str, path: Path) -> set[str]:
    """The package's modules that ``name`` imports, anywhere in its text."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from pkg import mod` imports the module pkg.mod; `from mod import name` mod.
            subs = {f"{base}.{alias.name}" for alias in node.names}
            found.update(subs & MODULES.keys() or {base})
    return {module for module in found if module in MODULES and module != name}


GRAPH = {name: imports_of(name, path) for name, path in MODULES.items()}


def wing_of(module: str) -> str | None:
    """``dokuen.supervise.process`` -> ``supervise``; None for the core."""
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in WINGS) else None


def find_cycle(graph: Mapping[str, Iterable[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path that ends where it starts, or None."""
    done: set[str] = set()
    path: list[str] = []
    on_path: set[str] = set()

    def visit(node: str) -> list[str] | None:
        if node in on_path:
            return [*path[path.index(node) :], node]
        if node in done:
            return None
        path.append(node)
        on_path.add(node)
        for target in sorted(graph.get(node, ())):
            if cycle := visit(target):
                return cycle
        path.pop()
        on_path.discard(node)
        done.add(node)
        return None

    for start in sorted(graph):
        if cycle := visit(start):
            return cycle
    return None


def wing_declaration(wing: str) -> tuple[list[str], tuple[str, ...]]:
    """The wing's ``__all__`` (its public modules) and ``DEPENDS_ON`` (the wings it uses)."""
    exports: list[str] = []
    depends: tuple[str, ...] = ()
    tree = ast.parse((PACKAGE / wing / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names = {t.id for t in targets if isinstance(t, ast.Name)}
            if "__all__" in names:
                exports = ast.literal_eval(node.value)
            if "DEPENDS_ON" in names:
                depends = ast.literal_eval(node.value)
    return exports, depends


def test_the_cycle_finder_finds_a_cycle_and_only_a_cycle() -> None:
    assert find_cycle({"a": ["b"], "b": ["c"], "c": ["a"]}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": ["b", "c"], "b": ["c"], "c": []}) is None


def test_the_import_graph_is_read() -> None:
    # The scan must see what is really there, or every check below passes vacuously.
    assert "dokuen.supervise.process" in GRAPH["dokuen.apps.app"]
    assert "dokuen.errors" in GRAPH["dokuen.names"]
    assert {"supervise", "proxy", "deploy", "apps", "data", "backup", "ssh", "cli"} <= set(WINGS)


def test_no_module_imports_in_a_circle() -> None:
    assert find_cycle(GRAPH) is None


def test_no_wing_imports_in_a_circle() -> None:
    wings: dict[str, set[str]] = {wing: set() for wing in WINGS}
    for module, targets in GRAPH.items():
        source = wing_of(module)
        if source is not None:
            wings[source] |= {w for t in targets if (w := wing_of(t)) not in (None, source)}
    assert find_cycle(wings) is None


@pytest.mark.parametrize("module", sorted(m for m in MODULES if wing_of(m) is None))
def test_the_core_imports_no_wing(module: str) -> None:
    if module in WIRING:
        return
    wings = sorted({w for t in GRAPH[module] if (w := wing_of(t)) is not None})
    assert wings == [], f"{module} (core) imports the wings {wings}"


@pytest.mark.parametrize("wing", WINGS)
def test_a_wing_declares_what_it_owns_and_uses(wing: str) -> None:
    init = PACKAGE / wing / "__init__.py"
    assert ast.get_docstring(ast.parse(init.read_text())), f"{init} has no docstring"
    exports, depends = wing_declaration(wing)
    modules = {p.stem for p in (PACKAGE / wing).glob("*.py")} - {"__init__"}
    assert set(exports) <= modules, f"{wing}.__all__ names modules that do not exist"
    assert set(depends) <= set(WINGS) - {wing}
    assert GRAPH[f"dokuen.{wing}"] == set(), f"{init} must import nothing (it is read first)"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_a_module_uses_other_wings_only_through_their_exports(module: str) -> None:
    source = wing_of(module)
    for target in sorted(GRAPH[module]):
        wing = wing_of(target)
        if wing is None or wing == source:
            continue
        exports, _ = wing_declaration(wing)
        assert target.split(".")[2] in exports, f"{module} imports {target}, not in {wing}.__all__"
        if source is not None:
            _, depends = wing_declaration(source)
            assert wing in depends, f"{module} imports {target}: add {wing!r} to DEPENDS_ON"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_is_over_400_lines(module: str) -> None:
    lines = len(MODULES[module].read_text().splitlines())
    assert lines <= MAX_LINES, f"{MODULES[module]} has {lines} lines"
