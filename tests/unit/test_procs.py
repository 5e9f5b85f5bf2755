"""Host commands: bounded by a deadline, and never outliving the lab (even a SIGKILLed one)."""

import os
import signal
import subprocess
import sys
import time

import pytest

from lab.buildlog import run_logged
from lab.errors import BuildError
from lab.procs import CommandTimeout, probe, run


def _alive(marker: str) -> list[str]:
    """Processes whose command line starts with `marker`."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if cmdline.startswith(marker):
            found.append(cmdline)
    return found


def _gone(marker: str, within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while _alive(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not _alive(marker)


def test_a_build_step_past_its_deadline_is_killed_with_its_children(tmp_path):
    log = tmp_path / "build.log"
    started = time.monotonic()
    # A child in the background and one in the foreground: the whole tree must go.
    with pytest.raises(BuildError, match=r"make-ish: no end within 1 s, killed .*log: "):
        run_logged(["sh", "-c", "sleep 977.1 & exec sleep 977.2"], log, what="make-ish", timeout_s=1)
    assert time.monotonic() - started < 10
    assert _gone("sleep 977.", 5), _alive("sleep 977.")
    assert "no end within 1 s; killed it and its children" in log.read_text()


def test_a_probe_past_its_deadline_is_an_infrastructure_error():
    with pytest.raises(CommandTimeout, match="sleep 978: no end within 1 s"):
        probe(["sleep", "978"], timeout_s=1)
    assert _gone("sleep 978", 5)


def test_a_missing_program_is_file_not_found_and_a_failure_keeps_its_status(tmp_path):
    with pytest.raises(FileNotFoundError):
        probe(["no-such-program-here"])
    assert probe(["sh", "-c", "echo out; echo err >&2; exit 3"]).returncode == 3
    with pytest.raises(BuildError, match="command not found: no-such-program-here"):
        run_logged(["no-such-program-here"], tmp_path / "log", what="x")


LAB_THAT_BUILDS = """
import sys
from pathlib import Path
from lab.buildlog import run_logged
print("building", flush=True)
run_logged(["sh", "-c", "sleep 979.1 & sleep 979.2 & wait"], Path(sys.argv[1]), what="build")
"""


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_a_build_dies_with_the_lab_even_when_the_lab_is_killed(tmp_path, sig):
    lab = subprocess.Popen([sys.executable, "-c", LAB_THAT_BUILDS, str(tmp_path / "log")], stdout=subprocess.PIPE,
                           text=True)
    assert lab.stdout.readline() == "building\n"
    deadline = time.monotonic() + 10
    while len(_alive("sleep 979.")) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(_alive("sleep 979.")) == 2
    lab.send_signal(sig)
    lab.wait(10)
    assert _gone("sleep 979.", 5), _alive("sleep 979.")


def test_a_program_named_by_a_path_is_found_relative_to_the_commands_directory(tmp_path):
    (tmp_path / "configure").write_text("#!/bin/sh\necho configured\n")
    (tmp_path / "configure").chmod(0o755)
    assert run(["./configure"], timeout_s=10, cwd=tmp_path, capture_output=True, text=True).stdout == "configured\n"
    with pytest.raises(FileNotFoundError):
        run(["./configure"], timeout_s=10, cwd=tmp_path.parent, capture_output=True)
