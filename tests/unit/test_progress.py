"""The progress output: timestamped lines, and the status (done/total, guests, elapsed, ETA)."""

import io
import time

from lab.progress import CLEAR_LINE, Progress, duration


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_duration_text():
    assert [duration(s) for s in (0, 59.4, 61, 3599, 3725)] == ["0s", "59s", "1m01s", "59m59s", "1h02m"]


def test_status_counts_cells_guests_and_estimates_the_rest():
    clock, guests = Clock(), [0]
    progress = Progress(io.StringIO(), live=False, guests=lambda: guests[0], clock=clock)
    clock.now += 300  # builds took five minutes
    progress.start_cells(10)
    assert progress.status() == "0/10 cells done, 0 guests running, 5m00s elapsed, ETA after the first cell"
    guests[0] = 2
    clock.now += 40
    progress.cell_done()
    progress.cell_done()
    # 2 cells in 40 s since the cells started: 8 left take 160 s (the build time does not count).
    assert progress.status() == "2/10 cells done, 2 guests running, 5m40s elapsed, ETA 2m40s"
    for _ in range(8):
        progress.cell_done()
    assert progress.status() == "10/10 cells done, 2 guests running, 5m40s elapsed"


def test_not_a_terminal_gets_plain_lines_with_the_status_after_each_cell():
    out, clock = io.StringIO(), Clock()
    progress = Progress(out, live=False, clock=clock)
    progress.start_cells(2)
    progress("i386/6.1 swp_exclusive: PASS (1.0 s)")
    progress.cell_done()
    progress.close()
    text = out.getvalue()
    assert "\x1b" not in text and "\r" not in text
    assert text.splitlines() == ["[    0.0s] i386/6.1 swp_exclusive: PASS (1.0 s)",
                                 "[    0.0s] 1/2 cells done, 0 guests running, 0s elapsed, ETA 0s"]


def test_a_terminal_gets_a_live_line_that_is_redrawn_and_cleared():
    out = io.StringIO()
    progress = Progress(out, live=True, guests=lambda: 1)
    progress.start_cells(3)
    progress("a message")
    deadline = time.monotonic() + 5
    while out.getvalue().count("0/3 cells done") < 2 and time.monotonic() < deadline:
        time.sleep(0.05)  # the ticker redraws once a second
    progress.close()
    text = out.getvalue()
    assert f"{CLEAR_LINE}[" in text and "a message\n" in text
    assert text.count("0/3 cells done, 1 guest running") >= 2, "redrawn by the ticker"
    assert text.endswith(CLEAR_LINE), "the terminal is left on a clean line"
