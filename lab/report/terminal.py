"""The matrix as plain text for the terminal, with a line per cell that needs a look."""

from __future__ import annotations

from lab.report.matrix import Matrix

NOT_RUN = "-"


def render_text(matrix: Matrix) -> str:
    header = ["testcase"] + [f"{a} / {k}" for a, k in matrix.columns]
    rows = []
    for case in matrix.rows:
        row = [case]
        for arch, kernel in matrix.columns:
            cell = matrix.cell(arch, kernel, case)
            row.append(cell.label if cell else NOT_RUN)
        rows.append(row)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cols: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cols, widths)) + " |"

    out = [line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(r) for r in rows]
    notes = [c for c in matrix.ordered_cells() if c.status != "PASS" or c.expected]
    if notes:
        out.append("")
        out += [f"{c.arch}/{c.kernel} {c.testcase}: {_status_and_message(c)}{_expected(c)}" for c in notes]
    warned = [c for c in matrix.ordered_cells() if c.kernel_messages]
    for c in warned:
        out.append(f"{c.arch}/{c.kernel} {c.testcase}: kernel said: {c.kernel_messages[0]}")
    return "\n".join(out)


def _status_and_message(cell) -> str:
    """"FAIL: message", without repeating a status the test's own line starts with."""
    if cell.message.startswith(f"{cell.status}:"):
        return cell.message
    if cell.status != cell.outcome and cell.message.startswith(f"{cell.outcome}:"):
        return f"{cell.status}: {cell.message[len(cell.outcome) + 1:].strip()}"
    return f"{cell.status}: {cell.message}"


def _expected(cell) -> str:
    """Expected next to actual, wherever the configs declare an expectation."""
    if not cell.expected:
        return ""
    return f" [expected {cell.expected}, actual {cell.outcome}: {cell.expected_reason}]"
