"""Every module imports on its own, and the package's import graph has no cycle.

An import cycle can hide: it only breaks when the cycle is entered from a particular
module, so importing the package or running the tests (which import modules in one order)
does not catch it. Here each module is imported first, in an interpreter that has loaded
no protomatch module, and the static import graph (every ``import`` statement, also those
under ``if TYPE_CHECKING:`` and inside functions) is checked for cycles.
"""

from __future__ import annotations

import ast
import json
import os
import pkgutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import protomatch

ROOT = "protomatch"
#: Entry points run with ``python -m``; importing them runs the CLI (tests/test_package.py).
ENTRY_POINTS = frozenset({f"{ROOT}.__main__"})


def _modules() -> dict[str, Path]:
    """Every module of the package (packages included) -> its source file."""
    found = {ROOT: Path(protomatch.__file__)}
    for info in pkgutil.walk_packages(protomatch.__path__, f"{ROOT}."):
        folder = Path(info.module_finder.path)  # a FileFinder: the package is on disk
        leaf = info.name.rsplit(".", 1)[-1]
        found[info.name] = folder / leaf / "__init__.py" if info.ispkg else folder / f"{leaf}.py"
    return found


MODULES = _modules()
IMPORTABLE = sorted(name for name in MODULES if name not in ENTRY_POINTS)


def _module_level(tree: ast.Module) -> list[ast.stmt]:
    """Statements run on import: the module body and the bodies of its if/try blocks."""
    todo, found = list(tree.body), []
    while todo:
        node = todo.pop()
        found.append(node)
        if isinstance(node, ast.If | ast.Try | ast.With):
            for field in ("body", "orelse", "finalbody", "handlers"):
                todo.extend(getattr(node, field, []))
        elif isinstance(node, ast.ExceptHandler):
            todo.extend(node.body)
    return found


def _third_party_imports() -> list[str]:
    """Modules outside the package imported when the package's modules are (not lazily)."""
    names = set()
    for path in MODULES.values():
        for node in _module_level(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module)
    return sorted(n for n in names if n.split(".")[0] != ROOT and n != "__future__")


#: Run as ``python -c``: load the third-party modules once, then import each protomatch
#: module in a forked child that has no protomatch module loaded (as ``python -c "import
#: NAME"`` would, without paying for torch, faiss and astropy 50 times). Prints, as JSON,
#: the traceback of every module that failed ("" when it imported).
_IMPORT_EACH = textwrap.dedent(
    """
    import importlib, json, os, sys, traceback

    preload, names, workers = json.loads(sys.argv[1])
    for name in preload:
        try:
            importlib.import_module(name)
        except Exception:
            pass  # the module that needs it fails below, as it would alone
    assert not [m for m in sys.modules if m == "protomatch" or m.startswith("protomatch.")]
    sys.stdout.flush()
    sys.stderr.flush()
    running, results = {}, {}
    todo = list(names)
    while todo or running:
        while todo and len(running) < workers:
            name = todo.pop()
            read, write = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.close(read)
                code, message = 0, b""
                try:
                    importlib.import_module(name)
                except BaseException:
                    code, message = 1, traceback.format_exc()[-6000:].encode()
                os.write(write, message)
                os._exit(code)
            os.close(write)
            running[pid] = (name, read)
        pid, status = os.wait()
        name, read = running.pop(pid)
        message = os.read(read, 1 << 16).decode(errors="replace")
        os.close(read)
        if os.waitstatus_to_exitcode(status) != 0 and not message:
            message = f"exit status {os.waitstatus_to_exitcode(status)}"
        results[name] = message
    print(json.dumps(results))
    """
)


@pytest.fixture(scope="module")
def import_failures() -> dict[str, str]:
    """Traceback per module that cannot be imported alone ("" for those that can)."""
    if not hasattr(os, "fork"):  # pragma: no cover - the package targets Linux and macOS
        pytest.skip("needs os.fork")
    workers = max(2, os.cpu_count() or 1)
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            _IMPORT_EACH,
            json.dumps([_third_party_imports(), IMPORTABLE, workers]),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", IMPORTABLE)
def test_module_imports_alone(name: str, import_failures: dict[str, str]) -> None:
    assert import_failures[name] == "", f"import {name} fails on its own:\n{import_failures[name]}"


def test_a_module_that_fails_to_import_is_reported() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _IMPORT_EACH, json.dumps([[], ["json", "no_such_module_x"], 2])],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    results = json.loads(done.stdout)
    assert results["json"] == ""
    assert "ModuleNotFoundError" in results["no_such_module_x"]


# --------------------------------------------------------------------------- static graph


def _targets(module: str, path: Path, known: set[str]) -> set[str]:
    """Package modules ``module`` imports anywhere in its source (TYPE_CHECKING too)."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    targets = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                source = f"{base}.{node.module}" if node.module else base
            else:
                source = node.module or ""
            for alias in node.names:  # ``from package import submodule`` imports the submodule
                child = f"{source}.{alias.name}"
                targets.add(child if child in known else source)
    return {t for t in targets if t == ROOT or t.startswith(f"{ROOT}.")}


def _import_graph() -> dict[str, set[str]]:
    """Module -> the package modules importing it runs: its targets and their packages.

    Importing ``a.b.c`` first runs ``a/__init__`` and ``a/b/__init__``; packages that
    contain the importer are already being imported, so they add no edge.
    """
    known = set(MODULES)
    graph: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        own = {module.rsplit(".", k)[0] for k in range(1, module.count(".") + 1)}
        edges = set()
        for target in _targets(module, path, known):
            parts = target.split(".")
            edges.add(target)
            edges.update({".".join(parts[:k]) for k in range(1, len(parts))} - own)
        graph[module] = {e for e in edges if e in known and e != module}
    return graph


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as [a, b, ..., a], or None if it is acyclic."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_import_graph_has_no_cycle() -> None:
    cycle = _find_cycle(_import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_cycle_finder_finds_a_cycle_through_type_checking_imports(tmp_path: Path) -> None:
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("from protomatch.b import X\n")
    b.write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from protomatch import a\n"
    )
    known = {ROOT, f"{ROOT}.a", f"{ROOT}.b"}
    graph = {
        f"{ROOT}.a": _targets(f"{ROOT}.a", a, known),
        f"{ROOT}.b": _targets(f"{ROOT}.b", b, known),
    }
    assert graph == {f"{ROOT}.a": {f"{ROOT}.b"}, f"{ROOT}.b": {f"{ROOT}.a"}}
    assert _find_cycle(graph) == [f"{ROOT}.a", f"{ROOT}.b", f"{ROOT}.a"]
    assert _find_cycle({"x": {"y"}, "y": set()}) is None
