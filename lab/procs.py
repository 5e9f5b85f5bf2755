"""Host commands with a deadline, that never outlive the lab.

Every command the lab runs on the host (make, apt-get, git, tar, dpkg, version
probes) runs under lab.guardian in a process group of its own: past its
deadline the whole group is killed and CommandTimeout raised; if the lab is
interrupted the group is killed before the exception goes on; and if the lab
dies outright, the kernel's parent-death signal makes the guardian kill it.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from lab.errors import InfraError

PROBE_TIMEOUT_S = 60.0  # --version, dpkg-query, git rev-parse: instant when healthy
_PR_SET_PDEATHSIG = 1
# -I -S: stdlib only, no site or environment: starts in milliseconds, whatever the build's env.
GUARDIAN = [sys.executable, "-I", "-S", str(Path(__file__).with_name("guardian.py"))]


class CommandTimeout(InfraError):
    """A host command ran past its deadline; its process group was killed."""

    code = "lab.timeout"

    def __init__(self, argv: list[str], timeout_s: float):
        super().__init__(f"{' '.join(argv)[:200]}: no end within {timeout_s:.0f} s; killed it and its children")
        self.timeout_s = timeout_s


def guard(parent: int) -> None:
    """In the child before exec: SIGTERM when the lab's thread dies, and no race with that."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)  # the lab died before the signal was armed


def _runnable(program: str, cwd, path: str | None) -> bool:
    """Whether exec would find `program`: a path (./configure) relative to the command's cwd."""
    if os.sep in program:
        return os.access(Path(cwd or ".") / program, os.X_OK)
    return shutil.which(program, path=path) is not None


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def run(argv: list[str], *, timeout_s: float, input: bytes | str | None = None,
        **popen_kwargs) -> subprocess.CompletedProcess:
    """subprocess.run(argv, ...) with a deadline and the guarantees above.

    A program that is not installed raises FileNotFoundError, as subprocess does.
    """
    if not _runnable(argv[0], popen_kwargs.get("cwd"), (popen_kwargs.get("env") or os.environ).get("PATH")):
        raise FileNotFoundError(argv[0])
    if popen_kwargs.pop("capture_output", False):
        popen_kwargs.update(stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if input is None:
        popen_kwargs.setdefault("stdin", subprocess.DEVNULL)
    else:
        popen_kwargs["stdin"] = subprocess.PIPE
    parent = os.getpid()
    proc = subprocess.Popen([*GUARDIAN, *argv], start_new_session=True,
                            preexec_fn=lambda: guard(parent), **popen_kwargs)
    try:
        stdout, stderr = proc.communicate(input, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        proc.communicate()
        raise CommandTimeout(argv, timeout_s) from None
    except BaseException:
        _kill_group(proc)
        proc.wait()
        raise
    return subprocess.CompletedProcess(argv, proc.returncode, stdout, stderr)


def probe(argv: list[str], timeout_s: float = PROBE_TIMEOUT_S, env: dict | None = None) -> subprocess.CompletedProcess:
    """A short query (a --version, dpkg-query, git rev-parse): its text output, bounded."""
    return run(argv, timeout_s=timeout_s, capture_output=True, text=True, env=env)
