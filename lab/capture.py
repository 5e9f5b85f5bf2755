"""Guest output, bounded.

A test or a guest console may print without end. The full stream goes to a
log file up to LOG_CAP_BYTES (then one marker line says how much more came);
only an excerpt, the first and the last EXCERPT_BYTES, is kept in memory for
the journal and the reports, with a line saying what was cut and where the
rest is. Nothing downstream ever holds or parses more than that.
"""

from __future__ import annotations

import os
from pathlib import Path

from lab import rundir

LOG_CAP_BYTES = 64 << 20
EXCERPT_BYTES = 32 << 10  # of the head, and again of the tail


def cut_marker(cut: int, where: str) -> str:
    return f"\n[qemu-lab: {cut} bytes cut here; {where}]\n"


class BoundedOutput:
    """One output stream: appended in chunks, logged up to a cap, excerpted in memory."""

    def __init__(self, log_path: Path | None = None, *, log_cap: int | None = None,
                 excerpt_bytes: int | None = None, append: bool = False):
        self.log_path = log_path
        # Never through a link at the log's name: logs go into run directories.
        self._log = os.fdopen(rundir.open_new(log_path, append), "ab" if append else "wb") if log_path else None
        self._log_cap = LOG_CAP_BYTES if log_cap is None else log_cap
        self._excerpt = EXCERPT_BYTES if excerpt_bytes is None else excerpt_bytes
        self._head = bytearray()
        self._tail = bytearray()
        self.total = 0  # bytes seen

    def add(self, data: bytes) -> None:
        if self._log and self.total < self._log_cap:
            self._log.write(data[:self._log_cap - self.total])
        self.total += len(data)
        room = self._excerpt - len(self._head)
        if room > 0:
            self._head += data[:room]
            data = data[room:]
        if data and self._excerpt:
            self._tail += data
            if len(self._tail) > 2 * self._excerpt:  # trimmed now and then, not per chunk
                del self._tail[:len(self._tail) - self._excerpt]

    def flush(self) -> None:
        if self._log:
            self._log.flush()

    def close(self) -> None:
        if self._log:
            if self.total > self._log_cap:
                self._log.write(f"\n[qemu-lab: output cut at {self._log_cap} bytes; "
                                f"{self.total - self._log_cap} more bytes were not kept]\n".encode())
            self._log.close()
            self._log = None

    def text(self) -> str:
        """The excerpt: all of it when short, else head, a marker, and tail."""
        tail = bytes(self._tail[-self._excerpt:])
        cut = self.total - len(self._head) - len(tail)
        if cut <= 0:
            return (bytes(self._head) + tail).decode(errors="replace")
        where = f"the full output is in {self.log_path.name}" if self.log_path else "not kept"
        if self.log_path and self.total > self._log_cap:
            where += f" (its first {self._log_cap >> 20} MiB)"
        return (self._head.decode(errors="replace") + cut_marker(cut, where) + tail.decode(errors="replace"))


def excerpt(text: str, where: str, keep: int = EXCERPT_BYTES) -> str:
    """A str cut the same way (head, marker, tail) when longer than twice `keep` characters."""
    if len(text) <= 2 * keep:
        return text
    return text[:keep] + cut_marker(len(text) - 2 * keep, where) + text[-keep:]
