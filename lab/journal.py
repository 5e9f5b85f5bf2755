"""The journal: append-only JSON lines, one finished cell each.

Each finished cell is appended, flushed and fsynced before the next one is
reported: a run killed at any point keeps every cell it finished.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path

from lab import safe_read
from lab.errors import RunDataError
from lab.results import CellResult

# A full default plan's journal, cow subtests included, is a few MiB.
MAX_BYTES = 256 * safe_read.MIB


def _open_for_append(path: Path) -> int:
    """Never through a link at the journal's name (a run directory may come from elsewhere)."""
    try:
        return os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise RunDataError(f"{path}: cannot be written ({exc.strerror}); a journal is a regular file, "
                           "never a link") from None


class Journal:
    """Append-only JSON lines, one finished cell each."""

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)

    def append(self, cell: CellResult) -> None:
        line = (json.dumps(cell.to_dict(), sort_keys=True) + "\n").encode()
        with self._lock, os.fdopen(_open_for_append(self.path), "a+b") as fh:
            # A line cut off by a crash mid-write must not swallow this one.
            if fh.seek(0, os.SEEK_END) > 0 and os.pread(fh.fileno(), 1, fh.tell() - 1) != b"\n":
                line = b"\n" + line
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())

    @staticmethod
    def read(path: Path) -> list[CellResult]:
        """All complete records; a truncated last line (a crash mid-write) is skipped with a warning."""
        cells: list[CellResult] = []
        try:
            lines = safe_read.read_text(path, MAX_BYTES).splitlines()
        except FileNotFoundError:
            return cells
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except RecursionError:
                raise RunDataError(f"{path}:{number}: nested too deeply to be a cell record") from None
            except ValueError as exc:
                print(f"warning: {path}:{number}: ignoring a cut-off journal line ({exc})", file=sys.stderr)
                continue
            cells.append(CellResult.from_dict(record, where=f"{path}:{number}"))
        return cells
