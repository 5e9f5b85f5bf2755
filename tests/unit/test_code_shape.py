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
