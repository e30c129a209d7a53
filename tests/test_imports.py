"""src/ has no import cycle: every import of one of its modules, at a module's top or inside a function, points
one way."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import ROOT

SRC = ROOT / "src"


def modules() -> dict[str, Path]:
    """Every module under src/ by its dotted name (a package by its own)."""
    found = {}
    for path in SRC.rglob("*.py"):
        parts = path.relative_to(SRC).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imported(path: Path, known: dict[str, Path]) -> set[str]:
    """The modules of `known` that the module at `path` imports anywhere in its code (`from package import
    module` imports the module)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            submodules = {f"{node.module}.{alias.name}" for alias in node.names} & known.keys()
            names |= submodules or {node.module}
    return names & known.keys()


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for other in graph[module]:
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            component = []
            while not component or component[-1] != module:
                component.append(stack.pop())
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_in_src_imports_one_that_imports_it_back():
    known = modules()
    assert {"tapelab.engine.batch", "tapelab.driver", "tapelab.cli"} <= known.keys()
    graph = {module: imported(path, known) - {module} for module, path in known.items()}
    assert cycles(graph) == []


def climbs_in_a_run(*overrides: str) -> list[str]:
    """The calls between src modules while `tapelab.run` trains one run, where a module calls into one that
    imports it (directly or not): a climb back up the import layers. Frames of other code (Hydra, TensorFlow)
    between two src frames are looked through."""
    import sys
    import tempfile
    import threading

    import tapelab

    known = modules()
    graph = {module: imported(path, known) - {module} for module, path in known.items()}
    above = {module: {other for other in graph if module in reachable(graph, other)} for module in graph}
    files = {str(path.resolve()): module for module, path in known.items()}
    climbs: list[str] = []

    def profile(frame, event, _):
        callee = files.get(frame.f_code.co_filename)
        if event != "call" or callee is None:
            return
        caller = frame.f_back
        while caller is not None and caller.f_code.co_filename not in files:
            caller = caller.f_back
        if caller is None or callee not in above[files[caller.f_code.co_filename]]:
            return
        climb = f"{files[caller.f_code.co_filename]}.{caller.f_code.co_name} -> {callee}.{frame.f_code.co_name}"
        if climb not in climbs:
            climbs.append(climb)

    with tempfile.TemporaryDirectory() as run_dir:
        sys.setprofile(profile)
        threading.setprofile(profile)
        try:
            tapelab.run(*overrides, run_dir=run_dir)
        finally:
            sys.setprofile(None)
            threading.setprofile(None)
    return climbs


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    """The modules `start` imports, directly or through others."""
    seen, todo = set(), [start]
    while todo:
        for other in graph[todo.pop()] - seen:
            seen.add(other)
            todo.append(other)
    return seen


def test_a_run_from_the_api_climbs_back_up_the_import_layers_only_into_the_objective_s_own_loss():
    # The objective's formula is called by its problem (objectives.base), below the module that defines it.
    climbs = climbs_in_a_run("objective=rosenbrock", "optimizer=adam", "epochs=5", "log.plots=false")
    assert climbs == ["tapelab.objectives.base.value -> tapelab.objectives.benchmarks.formula"]
