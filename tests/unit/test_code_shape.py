"""The package's shape, as the developers' guide asks for it: short functions, and the
run directory's file names spelled in one module only."""

import ast
import re

from conftest import REPO

PACKAGE = REPO / "lab"
MAX_FUNCTION_LINES = 60
ARGPARSE_DECLARATIONS = {("cli.py", "build_parser")}  # a flat list of options reads best whole


def _functions():
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield path, node


def test_no_function_is_longer_than_60_lines():
    long = [f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for path, node in _functions()
            if node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
            and (path.name, node.name) not in ARGPARSE_DECLARATIONS]
    assert not long, "split these: " + "; ".join(long)


def test_only_rundir_spells_the_run_directorys_file_names():
    names = re.compile(r"""["'](run\.json|journal\.jsonl|results\.json|merge-problems\.txt|lab-traceback\.txt)["']""")
    spelled = [f"{path.relative_to(REPO)}:{n}" for path in sorted(PACKAGE.rglob("*.py")) if path.name != "rundir.py"
               for n, line in enumerate(path.read_text().splitlines(), 1) if names.search(line)]
    assert not spelled, "use lab.rundir's names: " + ", ".join(spelled)


def _module_name(path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports_of(path, known: set[str]) -> set[str]:
    """The lab modules `path` imports, at its top or inside a function alike."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name in known} - {_module_name(path)}


def test_the_import_graph_has_no_circle():
    paths = sorted(PACKAGE.rglob("*.py"))
    known = {_module_name(p) for p in paths}
    graph = {_module_name(p): _imports_of(p, known) for p in paths}
    graph["lab"] = set()  # the package's __init__ is empty: "from lab import x" imports x, not a circle
    state: dict[str, str] = {}

    def circle_from(module: str, trail: list[str]) -> list[str] | None:
        state[module] = "open"
        for imported in sorted(graph[module]):
            if state.get(imported) == "open":
                return trail[trail.index(imported):] + [imported] if imported in trail else [module, imported]
            if imported not in state and (found := circle_from(imported, trail + [imported])):
                return found
        state[module] = "done"
        return None

    for module in sorted(graph):
        if module not in state and (found := circle_from(module, [module])):
            raise AssertionError("an import circle: " + " -> ".join(found))


def test_every_module_imports_alone():
    """Each module in a fresh interpreter of its own (an import that works only after
    another module was imported first is a hidden circle); a few at a time."""
    import subprocess
    import sys
    from concurrent.futures import ThreadPoolExecutor
    modules = sorted(_module_name(p) for p in PACKAGE.rglob("*.py") if p.name not in ("__main__.py", "guardian.py"))

    def problem(module: str) -> str | None:
        done = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True, cwd=REPO,
                              timeout=120)
        return f"{module}: {done.stderr.strip().splitlines()[-1]}" if done.returncode else None

    with ThreadPoolExecutor(max_workers=4) as pool:
        problems = [p for p in pool.map(problem, modules) if p]
    assert problems == []
