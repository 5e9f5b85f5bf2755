"""Progress on stderr while a run works: timestamped lines, and a live status line.

stdout stays the matrix. On a terminal the last line of stderr is a status line
redrawn every second (cells done/total, guests running, elapsed, ETA); elsewhere
(Jenkins logs, pipes) the same status is printed as a line after each cell.
"""

from __future__ import annotations

import shutil
import sys
import threading
import time
from typing import Callable, TextIO

# What a long step is given to say what it is doing: a Progress, print, or nothing.
Notify = Callable[[str], None]

REDRAW_S = 1.0
CLEAR_LINE = "\r\x1b[K"


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Progress:
    def __init__(self, stream: TextIO | None = None, live: bool | None = None,
                 guests: Callable[[], int] = lambda: 0, clock: Callable[[], float] = time.monotonic):
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self.guests = guests  # how many guests are running now
        self.clock = clock
        self.started = clock()
        self.total = 0
        self.done = 0
        self.cells_started = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    def __call__(self, message: str) -> None:
        """A timestamped line; on a terminal the status line is drawn again below it."""
        with self._lock:
            self._write(f"{CLEAR_LINE if self._ticker else ''}[{self.clock() - self.started:7.1f}s] {message}\n")
            self._draw()

    def start_cells(self, total: int) -> None:
        """Builds are done; `total` cells are about to run. Starts the live line on a terminal."""
        self.total, self.done, self.cells_started = total, 0, self.clock()
        if self.live and total and not self._ticker:
            self._ticker = threading.Thread(target=self._tick, name="progress", daemon=True)
            self._ticker.start()

    def cell_done(self) -> None:
        with self._lock:
            self.done += 1
            if not self.live:
                self._write(f"[{self.clock() - self.started:7.1f}s] {self.status()}\n")
            self._draw()

    def status(self) -> str:
        elapsed = self.clock() - self.started
        guests = self.guests()
        parts = [f"{self.done}/{self.total} cells done", f"{guests} guest{'' if guests == 1 else 's'} running",
                 f"{duration(elapsed)} elapsed"]
        if 0 < self.done < self.total:
            per_cell = (self.clock() - self.cells_started) / self.done
            parts.append(f"ETA {duration(per_cell * (self.total - self.done))}")
        elif self.total and self.done < self.total:
            parts.append("ETA after the first cell")
        return ", ".join(parts)

    def close(self) -> None:
        """Stop the live line and leave the terminal on a clean line."""
        self._stop.set()
        if self._ticker:
            self._ticker.join()
            with self._lock:
                self._write(CLEAR_LINE)
            self._ticker = None

    def _tick(self) -> None:
        while not self._stop.wait(REDRAW_S):
            with self._lock:
                self._draw()

    def _draw(self) -> None:
        if self._ticker and not self._stop.is_set():
            width = shutil.get_terminal_size().columns - 1
            self._write(f"{CLEAR_LINE}{self.status()[:width]}")

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()
