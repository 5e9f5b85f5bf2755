"""Run build commands with their output in a log file, and explain failures."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from lab import procs
from lab.errors import BuildError, BuildTimeout

# The bound of one build command (make of a kernel: minutes; tens on a slow host).
BUILD_TIMEOUT_S = 7200.0

# A compiler or linker diagnostic: "fs/fcntl.c:1200:9: error: ..." first, then
# any line that says error:, then an undefined reference.
_DIAGNOSTIC_PATTERNS = (
    re.compile(r"^\S+:\d+(:\d+)?: (fatal )?error: .*"),
    re.compile(r".*\berror: .*", re.IGNORECASE),
    re.compile(r".*\bundefined reference to .*"),
)
# make's own "*** ... Error 2" (or "No rule to make target") lines: the build broke,
# but nothing says the compiler judged the sources.
_MAKE_PATTERN = re.compile(r".*\*\*\* .*")


def _first_match(lines: list[str], patterns) -> str | None:
    for pattern in patterns:
        for line in lines:
            if pattern.match(line.strip()):
                return line.strip()
    return None


def compiler_diagnostic(log_text: str) -> str | None:
    """The first line where the compiler or linker rejected the sources, or None: only
    such a failure is deterministic for the inputs (worth caching)."""
    lines = log_text.splitlines()
    found = _first_match(lines, _DIAGNOSTIC_PATTERNS)
    return None if found is None or _MAKE_PATTERN.match(found) else found


def first_error_line(log_text: str) -> str | None:
    """The line that best says why a build failed: a compiler diagnostic, else make's own."""
    return _first_match(log_text.splitlines(), (*_DIAGNOSTIC_PATTERNS, _MAKE_PATTERN))


def run_into_log(argv: list[str], log: Path, *, timeout_s: float, cwd: Path | None = None,
                 env: dict | None = None, stdin_text: str | None = None) -> tuple[int | None, str]:
    """Run argv (see lab.procs), appending "$ argv" and its output to `log`.

    Returns its exit status (None: killed at the deadline) and what it wrote.
    """
    with log.open("ab") as fh:
        start = fh.tell()
        fh.write(("$ " + " ".join(argv) + "\n").encode())
        fh.flush()
        try:
            status: int | None = procs.run(argv, timeout_s=timeout_s, cwd=cwd, env={**os.environ, **(env or {})},
                                           stdout=fh, stderr=subprocess.STDOUT,
                                           input=stdin_text.encode() if stdin_text is not None else None).returncode
        except procs.CommandTimeout as exc:
            fh.write(f"\nqemu-lab: {exc}\n".encode())
            status = None
    with log.open("rb") as fh:
        fh.seek(start)
        return status, fh.read().decode(errors="replace")


def run_logged(argv: list[str], log: Path, *, cwd: Path | None = None, env: dict | None = None,
               stdin_text: str | None = None, what: str, timeout_s: float = BUILD_TIMEOUT_S) -> None:
    """Run argv, appending its output to `log`; raise BuildError naming log and first error."""
    try:
        status, text = run_into_log(argv, log, timeout_s=timeout_s, cwd=cwd, env=env, stdin_text=stdin_text)
    except FileNotFoundError:
        raise BuildError(f"{what}: command not found: {argv[0]}") from None
    if status is None:
        raise BuildTimeout(f"{what}: no end within {timeout_s:.0f} s, killed (raise [build] timeout_s in "
                         f"configs/lab.toml for a slower host; log: {log})")
    if status != 0:
        line = first_error_line(text) or f"{argv[0]} exited with status {status}"
        raise BuildError(f"{what} failed: {line} (log: {log})")


def jobs() -> str:
    return str(os.cpu_count() or 1)
