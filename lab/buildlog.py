"""Run build commands with their output in a log file, and explain failures."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from lab.errors import BuildError

# A compiler or linker diagnostic: "fs/fcntl.c:1200:9: error: ..." first, then
# any line that says error:, then make's own "*** ... Error 2" lines.
_ERROR_PATTERNS = (
    re.compile(r"^\S+:\d+(:\d+)?: (fatal )?error: .*"),
    re.compile(r".*\berror: .*", re.IGNORECASE),
    re.compile(r".*\bundefined reference to .*"),
    re.compile(r".*\*\*\* .*"),
)


def first_error_line(log_text: str) -> str | None:
    lines = log_text.splitlines()
    for pattern in _ERROR_PATTERNS:
        for line in lines:
            if pattern.match(line.strip()):
                return line.strip()
    return None


def run_logged(argv: list[str], log: Path, *, cwd: Path | None = None, env: dict | None = None,
               stdin_text: str | None = None, what: str) -> None:
    """Run argv, appending its output to `log`; raise BuildError naming log and first error."""
    with log.open("ab") as fh:
        start = fh.tell()
        fh.write(("$ " + " ".join(argv) + "\n").encode())
        fh.flush()
        try:
            proc = subprocess.run(argv, cwd=cwd, env={**os.environ, **(env or {})}, stdout=fh,
                                  stderr=subprocess.STDOUT,
                                  input=stdin_text.encode() if stdin_text is not None else None,
                                  stdin=None if stdin_text is not None else subprocess.DEVNULL)
        except FileNotFoundError:
            raise BuildError(f"{what}: command not found: {argv[0]}") from None
    if proc.returncode != 0:
        with log.open("rb") as fh:
            fh.seek(start)
            text = fh.read().decode(errors="replace")
        line = first_error_line(text) or f"{argv[0]} exited with status {proc.returncode}"
        raise BuildError(f"{what} failed: {line} (log: {log})")


def jobs() -> str:
    return str(os.cpu_count() or 1)
