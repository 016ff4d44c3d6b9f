"""The package's layout rules, checked on the source: the daemon never loads dev and lab code
(vatel_edge.devkit), and no two modules of vatel_edge import each other at import time (no cycle).

These tests read the code (ast) or import it in a fresh interpreter; they start no daemon and no device.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

PACKAGE = "vatel_edge"
DEVKIT = f"{PACKAGE}.devkit"
ROOT = Path(__file__).resolve().parent.parent / PACKAGE
#: The only places outside the devkit allowed to import it: the dev commands, lazily inside their functions.
DEVKIT_ENTRY_POINTS = {(f"{PACKAGE}.cli", "_cmd_simulate"), (f"{PACKAGE}.cli", "_cmd_demo")}


def _modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package is its __init__)."""
    out: dict[str, Path] = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_time_statements(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """The statements run when the module is imported: not function bodies, not `if TYPE_CHECKING:`."""
    for node in body:
        yield node
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from _import_time_statements(node.orelse)
            continue
        # class bodies, if/else, try/except/finally, with, for, while: all run at import
        for field in ("body", "orelse", "finalbody"):
            yield from _import_time_statements(getattr(node, field, []))
        for handler in getattr(node, "handlers", []):
            yield from _import_time_statements(handler.body)


def _targets(node: ast.stmt, module: str) -> Iterator[str]:
    """The vatel_edge modules an import statement loads: `from a.b import c` is `a.b.c` if that is a
    module, else `a.b`; relative imports are resolved against `module`."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            if alias.name in MODULES:
                yield alias.name
    elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
            for _ in range(node.level - 1):
                package = package.rpartition(".")[0]
            base = f"{package}.{base}" if base else package
        if base not in MODULES:
            return
        for alias in node.names:
            sub = f"{base}.{alias.name}"
            yield sub if sub in MODULES else base


def _tree(module: str) -> ast.Module:
    return ast.parse(MODULES[module].read_text(encoding="utf-8"), filename=str(MODULES[module]))


def import_graph() -> dict[str, set[str]]:
    """Module -> the vatel_edge modules it imports at import time."""
    graph: dict[str, set[str]] = {}
    for module in MODULES:
        graph[module] = {
            target
            for node in _import_time_statements(_tree(module).body)
            for target in _targets(node, module)
            if target != module
        }
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (a -> b -> ... -> a) per strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(component)

    for v in sorted(graph):
        if v not in index:
            connect(v)

    cycles = []
    for component in components:
        start = min(component)
        # shortest way back to `start` inside the component (breadth first)
        paths = {start: [start]}
        frontier = [start]
        cycle: list[str] | None = None
        while frontier and cycle is None:
            nxt = []
            for v in frontier:
                for w in sorted(graph[v] & component):
                    if w == start:
                        cycle = [*paths[v], start]
                        break
                    if w not in paths:
                        paths[w] = [*paths[v], w]
                        nxt.append(w)
                if cycle:
                    break
            frontier = nxt
        assert cycle is not None
        cycles.append(cycle)
    return sorted(cycles)


def _loaded_devkit_modules(code: str) -> list[str]:
    """Run `code` in a fresh interpreter; the vatel_edge.devkit modules in sys.modules afterwards."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(m for m in sys.modules if m.startswith({DEVKIT!r}))))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60,
                            cwd=ROOT.parent)
    assert result.returncode == 0, result.stderr
    loaded: list[str] = json.loads(result.stdout.strip().splitlines()[-1])
    return loaded


def _function_imports(module: str, function: str) -> list[str]:
    """The vatel_edge modules imported inside `module.function` (the lazy imports of a CLI command)."""
    for node in ast.walk(_tree(module)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == function:
            return sorted({t for inner in ast.walk(node) if isinstance(inner, ast.stmt)
                           for t in _targets(inner, module)})
    raise AssertionError(f"{module}.{function} not found")


def test_importing_the_daemon_loads_no_devkit_module() -> None:
    """`import vatel_edge.daemon` in a fresh interpreter leaves no vatel_edge.devkit module in sys.modules."""
    assert _loaded_devkit_modules(f"import {PACKAGE}.daemon") == []


def test_the_run_command_loads_no_devkit_module() -> None:
    """What `vatel-edge run` imports (the CLI, the modules its run command imports lazily, the echo engines it
    probes) loads no vatel_edge.devkit module."""
    run_imports = _function_imports(f"{PACKAGE}.cli", "_cmd_run")
    assert f"{PACKAGE}.daemon" in run_imports
    code = "\n".join(
        [f"import {PACKAGE}.cli", *(f"import {m}" for m in run_imports),
         f"import {PACKAGE}.audio.aec as aec", "aec.available_engines()"]
    )
    assert _loaded_devkit_modules(code) == []


def test_only_the_dev_commands_import_the_devkit() -> None:
    """Outside vatel_edge.devkit, only `vatel-edge simulate` and `vatel-edge demo` import it, lazily inside
    their command functions (any import anywhere else, even inside a function, fails)."""
    offenders = []
    for module in MODULES:
        if module == DEVKIT or module.startswith(f"{DEVKIT}."):
            continue
        tree = _tree(module)
        allowed: set[int] = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and (module, node.name) in DEVKIT_ENTRY_POINTS:
                allowed |= {id(inner) for inner in ast.walk(node)}
        for node in ast.walk(tree):
            if isinstance(node, ast.stmt) and id(node) not in allowed:
                offenders += [f"{module}:{node.lineno} imports {t}" for t in _targets(node, module)
                              if t == DEVKIT or t.startswith(f"{DEVKIT}.")]
    assert offenders == []


def test_find_cycles_reports_a_cycle_and_accepts_a_tree() -> None:
    """The cycle finder itself: a -> b -> c -> a is reported once, from its smallest module; a tree is clean."""
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set()}) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []


def test_the_package_has_no_import_cycle() -> None:
    """No cycle among the module-level imports of vatel_edge (function-level and TYPE_CHECKING imports do not
    count; a package counts as its __init__). Each cycle is listed as a -> b -> ... -> a."""
    cycles = find_cycles(import_graph())
    assert cycles == [], "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)
