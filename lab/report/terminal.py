"""The matrix as plain text for the terminal, with a line per cell that needs a look."""

from __future__ import annotations

import re

from lab.report.matrix import Matrix
from lab.status import Status

NOT_RUN = "-"


# Control characters (escape sequences among them) in text that came from a guest, a
# journal or another machine: shown as \xNN, never sent to the terminal as they are
# (one could retitle the window, move the cursor over a FAIL or hide a line).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def plain(text: str) -> str:
    """`text` with every control character but tab and newline made visible."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group(0)):02x}", text)


def paint(text: str, status: str, color: bool) -> str:
    """`text` in the status's colour (Status.ansi) when `color`; the status text is always there too."""
    known = Status.parse(status)
    return f"\x1b[{known.ansi}m{text}\x1b[0m" if color and known else text


def render_text(matrix: Matrix, color: bool = False, max_width: int = 160) -> str:
    """The matrix as a table; with color, each status in its ANSI colour (for a TTY).

    Rows are testcases and columns arch / kernel, as in matrix.html; a plan too wide
    for `max_width` is printed the other way round (a row per arch / kernel).
    """
    columns = [f"{a} / {k}" for a, k in matrix.columns]
    grid = [[_entry(matrix.cell(a, k, case)) for a, k in matrix.columns] for case in matrix.rows]
    out = _table("testcase", matrix.rows, columns, grid, color)
    if len(out[0]) > max_width:
        transposed = [[grid[r][c] for r in range(len(matrix.rows))] for c in range(len(columns))]
        out = _table("arch / kernel", columns, matrix.rows, transposed, color)
    notes = [c for c in matrix.ordered_cells() if c.status != "PASS" or c.expected]
    if notes:
        out.append("")
        out += [f"{c.arch}/{c.kernel} {c.testcase}: {paint(plain(_status_and_message(c)), c.status, color)}"
                f"{plain(_expected(c))}" for c in notes]
    warned = [c for c in matrix.ordered_cells() if c.kernel_messages]
    for c in warned:
        out.append(f"{c.arch}/{c.kernel} {c.testcase}: kernel said: {plain(c.kernel_messages[0])}")
    return "\n".join(out)


def _entry(cell) -> tuple[str, str]:
    return (cell.label, cell.status) if cell else (NOT_RUN, "")


def _table(corner: str, row_names: list[str], column_names: list[str],
           grid: list[list[tuple[str, str]]], color: bool) -> list[str]:
    """A plain-text table; widths come from the text, colour codes wrap the padded text."""
    rows = [[(name, ""), *entries] for name, entries in zip(row_names, grid)]
    header = [(corner, ""), *((name, "") for name in column_names)]
    widths = [max(len(r[i][0]) for r in [header, *rows]) for i in range(len(header))]

    def line(cols: list[tuple[str, str]]) -> str:
        return "| " + " | ".join(paint(text.ljust(w), status, color)
                                 for (text, status), w in zip(cols, widths)) + " |"

    return [line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *(line(r) for r in rows)]


def _status_and_message(cell) -> str:
    """"FAIL: message" ("ERROR [boot.no-ssh]: message" with an error code), without
    repeating a status the test's own line starts with."""
    status = f"{cell.status} [{cell.error_code}]" if cell.error_code else str(cell.status)
    if cell.message.startswith(f"{cell.status}:"):
        return f"{status}:{cell.message[len(cell.status) + 1:]}"
    if cell.status != cell.outcome and cell.message.startswith(f"{cell.outcome}:"):
        return f"{status}: {cell.message[len(cell.outcome) + 1:].strip()}"
    return f"{status}: {cell.message}"


def _expected(cell) -> str:
    """Expected next to actual, wherever the configs declare an expectation."""
    if not cell.expected:
        return ""
    return f" [expected {cell.expected}, actual {cell.outcome}: {cell.expected_reason}]"
