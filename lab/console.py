"""The serial console of a guest: followed into a log, and classified.

A Console owns a thread that reads QEMU's pty for the guest's whole life,
appends every byte to the console log (flushed, so nothing is lost if the lab
dies) and keeps the decoded text for readiness checks and kernel-message
classification. The classification functions are pure, tested on canned logs.
"""

from __future__ import annotations

import codecs
import re
import threading
import time
from enum import Enum
from pathlib import Path

import pexpect

from lab.capture import BoundedOutput

READY_MARKER = "qemu-lab: READY"
_BOOT_FAILED = "qemu-lab: BOOT-FAILED: "
_PANIC = "Kernel panic - not syncing"
# Lines that mean the kernel reported a problem, whatever the test said. Guest output
# is untrusted and lines can be megabytes long: every alternative runs in linear time
# (no unbounded repeat that can fail late and backtrack).
_KERNEL_PROBLEM = re.compile(
    r"Kernel panic - not syncing|\bBUG: |\bOops\b|\bWARNING: |\[ cut here \]|"
    r"Unable to handle kernel|general protection fault|\b(?:KASAN|KFENCE|UBSAN): |"
    r"soft lockup|hard LOCKUP|rcu: INFO: \S+ (?:self-)?detected (?:expedited )?stalls?|"
    r"blocked for more than \d+ seconds"
)


class BootState(Enum):
    BOOTING = "booting"
    READY = "ready"
    PANIC = "panic"
    FAILED = "failed"  # the guest's init reported that it cannot become ready
    EXITED = "exited"  # QEMU ended before the guest was ready


def _complete_line(text: str, start_marker: str, exited: bool) -> str | None:
    """The line from the first `start_marker` on, once that line is complete (or QEMU has
    exited), so that a reason is never cut off mid-line. Linear: two str.find calls."""
    start = text.find(start_marker)
    if start < 0:
        return None
    end = text.find("\n", start)
    if end < 0 and not exited:
        return None
    return text[start:end if end >= 0 else len(text)].strip()


def panic_line(text: str, exited: bool = True) -> str | None:
    """The "Kernel panic - not syncing" line, if the kernel panicked."""
    return _complete_line(text, _PANIC, exited)


def boot_state(text: str, exited: bool) -> tuple[BootState, str]:
    """Where a boot stands, given the console text so far; with the deciding line."""
    panic = panic_line(text, exited)
    if panic:
        return BootState.PANIC, panic
    failed = _complete_line(text, _BOOT_FAILED, exited)
    if failed:
        return BootState.FAILED, failed
    if READY_MARKER in text:
        return BootState.READY, READY_MARKER
    if exited:
        return BootState.EXITED, "QEMU exited before the guest was ready"
    return BootState.BOOTING, ""


def kernel_problems(text: str) -> list[str]:
    """Console lines where the kernel reported a panic, oops, BUG, WARN, lockup or stall."""
    return [line.strip() for line in text.splitlines() if _KERNEL_PROBLEM.search(line)]


_REPORT_END = re.compile(r"\[ end (?:trace|Kernel panic)[^\]\n]{0,200}\]")
EXCERPT_MAX_LINES = 80


def kernel_excerpts(text: str) -> list[str]:
    """Each kernel report on the console, from its first problem line (the cut-here line
    when there is one) to its end-trace line; at most EXCERPT_MAX_LINES lines each."""
    lines = text.splitlines()
    excerpts: list[str] = []
    i = 0
    while i < len(lines):
        if not _KERNEL_PROBLEM.search(lines[i]):
            i += 1
            continue
        end = i
        while end < len(lines) - 1 and not _REPORT_END.search(lines[end]) and end - i < EXCERPT_MAX_LINES - 1:
            end += 1
        excerpts.append("\n".join(lines[i:end + 1]))
        i = end + 1
    return excerpts


def tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def last_line(text: str) -> str:
    """The last non-blank line, for messages ("no console output" if there is none)."""
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1].strip() if lines else "no console output"


# A guest may print without end: the log keeps LOG_CAP_BYTES, memory the last
# MEMORY_KEEP_CHARS (trimmed when it holds twice that). Offsets stay absolute.
MEMORY_KEEP_CHARS = 8 << 20


class Console:
    """Follows a pexpect child's output until EOF."""

    def __init__(self, child: pexpect.spawn, log_path: Path):
        self._child = child
        self._log = BoundedOutput(log_path, excerpt_bytes=0, append=True)
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._chunks: list[str] = []
        self._length = 0  # characters seen
        self._dropped = 0  # characters no longer in memory (the oldest)
        self._eof = False
        self._stopping = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._follow, name=f"console-{child.pid}", daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        try:
            while not self._stopping:
                try:
                    data = self._child.read_nonblocking(65536, timeout=0.2)
                except pexpect.TIMEOUT:
                    continue
                except (pexpect.EOF, OSError, ValueError):
                    break
                self._log.add(data)
                self._log.flush()
                text = self._decoder.decode(data).replace("\r", "")
                with self._cond:
                    self._chunks.append(text)
                    self._length += len(text)
                    if self._length - self._dropped > 2 * MEMORY_KEEP_CHARS:
                        kept = "".join(self._chunks)[-MEMORY_KEEP_CHARS:]
                        self._chunks, self._dropped = [kept], self._length - len(kept)
                    self._cond.notify_all()
        finally:
            with self._cond:
                self._eof = True
                self._cond.notify_all()
            self._log.close()

    def text(self, since: int = 0) -> str:
        return self.text_and_end(since)[0]

    def text_and_end(self, since: int = 0) -> tuple[str, int]:
        """The text from offset `since` (what memory still holds of it) and the offset of its end."""
        with self._cond:
            if len(self._chunks) > 1:
                self._chunks = ["".join(self._chunks)]
            text = self._chunks[0][max(0, since - self._dropped):] if self._chunks else ""
            return text, self._length

    def offset(self) -> int:
        """A position in the text, to slice what the console printed during a test."""
        with self._cond:
            return self._length

    @property
    def eof(self) -> bool:
        return self._eof

    def wait_eof(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while not self._eof:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    def wait_boot(self, timeout_s: float) -> tuple[BootState, str]:
        """Wait until the guest is ready, panicked or gone; BOOTING means the deadline passed."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                text = "".join(self._chunks)
                self._chunks = [text]
                state, line = boot_state(text, self._eof)
                remaining = deadline - time.monotonic()
                if state is not BootState.BOOTING or remaining <= 0:
                    return state, line
                self._cond.wait(min(remaining, 1.0))

    def stop(self) -> None:
        self._stopping = True
        self._thread.join(timeout=2.0)
