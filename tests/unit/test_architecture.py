"""The shape of the code, held by tests (DESIGN.md, STYLE.md): folders that show the data flow, a
pure core, small modules and classes, no import cycles, names defined once, and tests that use
public APIs only."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "linkwatch"
MAX_MODULE_LINES = 600  # outside lab/ (the lab is a test bed, not the router's software)
MAX_METHODS = 30

# The core decides; it must not touch the world. Nothing that does I/O or reads a clock.
CORE_FORBIDDEN = {"asyncio", "socket", "time", "os", "threading", "subprocess", "select", "selectors",
                  "pyroute2", "icmplib", "dns", "pysnmp", "flask", "sqlite3", "sqlite_utils", "logging"}
CORE_MAY_IMPORT = ("linkwatch.core", "linkwatch.config")


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = modules()


def imports_of(name: str, path: Path) -> set[str]:
    """Every module this one imports, at the top or inside a function (a lazy import still ties
    the two modules together)."""
    found: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            submodules = {f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in MODULES}
            found.update(submodules)
            if len(submodules) < len(node.names):  # names defined in the module itself
                found.add(base)
    return found


def graph() -> dict[str, set[str]]:
    g = {}
    for name, path in MODULES.items():
        g[name] = {m for m in imports_of(name, path) if m in MODULES and m != name}
    return g


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    counter = [0]
    sys.setrecursionlimit(10000)

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in g[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in g:
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles_not_even_through_lazy_imports():
    assert cycles(graph()) == []


def test_the_folders_show_the_data_flow():
    for folder in ("core", "kernel", "probes", "sinks", "daemon", "report", "commands", "config", "history",
                   "webui", "snmp", "lab"):
        assert (PACKAGE / folder / "__init__.py").exists(), folder
    assert sorted(p.name for p in PACKAGE.glob("*.py")) == ["__init__.py", "__main__.py"], \
        "every module lives in the folder of its job"


def test_the_core_is_pure():
    for name, path in MODULES.items():
        if not name.startswith("linkwatch.core"):
            continue
        for imported in imports_of(name, path):
            top = imported.split(".")[0]
            assert top not in CORE_FORBIDDEN, f"{name} imports {imported}: the core does no I/O and reads no clock"
            if top == "linkwatch":
                assert imported.startswith(CORE_MAY_IMPORT), f"{name} imports {imported}: outside the core"


def test_nothing_below_the_commands_imports_them():
    for name, path in MODULES.items():
        if name.startswith("linkwatch.commands") or name == "linkwatch.__main__":
            continue
        bad = [m for m in imports_of(name, path) if m.startswith("linkwatch.commands")]
        assert bad == [], f"{name} imports the CLI ({bad}): the library never depends on its commands"


@pytest.mark.parametrize("name", [n for n in MODULES if not n.startswith("linkwatch.lab")])
def test_modules_stay_small(name):
    lines = len(MODULES[name].read_text().splitlines())
    assert lines <= MAX_MODULE_LINES, f"{name}: {lines} lines (at most {MAX_MODULE_LINES}); split it by job"


def test_classes_stay_small():
    big = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                methods = [n for n in node.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
                if len(methods) > MAX_METHODS:
                    big.append(f"{name}.{node.name}: {len(methods)} methods")
    assert big == []


def test_one_class_per_name():
    seen: dict[str, str] = {}
    twice = []
    for name, path in MODULES.items():
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                if node.name in seen:
                    twice.append(f"{node.name}: {seen[node.name]} and {name}")
                seen[node.name] = name
    assert twice == [], "two classes with one name confuse readers"


def _string_constants(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    return [n.value for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings]


def test_state_names_and_admin_actions_are_defined_once():
    from linkwatch.core.states import ADMIN_ACTIONS, STATE_NAMES

    for name, path in MODULES.items():
        if name in ("linkwatch.core.states",) or name.startswith("linkwatch.lab"):
            continue
        consts = _string_constants(path)
        states = sorted({c for c in consts if c in STATE_NAMES})
        assert states == [], f"{name} spells out state names {states}: use linkwatch.core.states.State"
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
                listed = {e.value for e in node.elts if isinstance(e, ast.Constant)} & set(ADMIN_ACTIONS)
                assert len(listed) < 3, f"{name} lists the admin actions again: use ADMIN_ACTIONS"


def test_tests_use_the_engines_public_api():
    """Scenario and shell tests drive the core and the shell through their APIs: no test patches or
    reads private members of the engine."""
    private = re.compile(r"\b(engine|Engine|s\.engine|self\.engine)\._[a-z]")
    patched = re.compile(r"monkeypatch\.setattr\((engine_mod|[\"']linkwatch\.(daemon|core))")
    offenders = []
    for path in (ROOT / "tests").rglob("*.py"):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if private.search(line) or patched.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert offenders == []
