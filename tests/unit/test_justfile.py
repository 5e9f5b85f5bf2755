"""The Justfile hands recipe arguments to the lab exactly as given, never to a shell parser."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO

JUST = REPO / ".venv" / "bin" / "just"

RECORD_ARGV = f"""#!{sys.executable}
import json, os, sys
with open(os.environ["ARGV_LOG"], "a") as fh:
    fh.write(json.dumps(sys.argv[1:]) + "\\n")
"""


@pytest.fixture
def workspace(tmp_path):
    """A copy of the Justfile whose setup does nothing and whose tools record their argv."""
    if not JUST.exists():
        pytest.skip("no .venv/bin/just (./just installs it)")
    shutil.copy(REPO / "Justfile", tmp_path / "Justfile")
    for tool in ("scripts/setup-host", ".venv/bin/lab", ".venv/bin/python"):
        path = tmp_path / tool
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(RECORD_ARGV)
        path.chmod(0o755)
    return tmp_path


def _just(workspace, *args):
    log = workspace / "argv.jsonl"
    log.unlink(missing_ok=True)
    done = subprocess.run([str(JUST), "--justfile", str(workspace / "Justfile"), *args], cwd=workspace,
                          env={**os.environ, "ARGV_LOG": str(log)}, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in log.read_text().splitlines()]


@pytest.mark.parametrize("recipe, tool_argv", [
    ("run", ["run"]),
    ("test", ["-m", "pytest", "-v", "-ra", "tests"]),
    ("bench", ["-m", "lab.bench"]),
    ("unit", ["-m", "pytest", "-q", "tests/unit"]),
])
def test_arguments_reach_the_lab_exactly_as_given(workspace, recipe, tool_argv):
    hostile = ["x;touch pwned", "--param", "s=a b", "$(touch pwned2)", "'", "*"]
    calls = _just(workspace, recipe, *hostile)
    assert calls[-1] == tool_argv + hostile
    assert not (workspace / "pwned").exists() and not (workspace / "pwned2").exists()


def test_screenshot_paths_with_spaces_stay_one_argument(workspace):
    calls = _just(workspace, "screenshot", "my run", "out dir/m.png")
    assert calls[-1] == ["-m", "lab.report.browser", "my run/matrix.html", "out dir/m.png", "--size", "2250x950"]
