"""matrix.html and one page per cell, rendered with autoescaping and StrictUndefined.

Everything a page needs is inline (style and the small status filter script):
reports are opened from Jenkins artifacts, mail and file://, with no network.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import jinja2

from lab import atomic, rundir
from lab.rundir import CELLS, HISTORY, MATRIX, cell_page
from lab.history import LETTERS, NOT_RUN
from lab.report.compare import Comparison
from lab.report.matrix import Matrix
from lab.results import SUBTEST_STATUSES

# One colour per status (background, text stays dark): the matrix, the legend and
# the browser test all read this table. Status text is always shown as well.
STATUS_COLORS = {
    "PASS": "#b7e4b0",
    "FAIL": "#f08080",
    "XFAIL": "#c9dff2",
    "XPASS": "#f2a2d4",
    "SKIP": "#d9d9d9",
    "ERROR": "#f7c873",
    "XERROR": "#f3e3c3",
    "TIMEOUT": "#d6b4f0",
    "NOTRUN": "#ffffff",
}

LEGEND = (
    ("PASS", "the test passed"),
    ("FAIL", "the test found the bug, and no FAIL is expected here"),
    ("XFAIL", "failed as configs/lab.toml expects (a known-bad kernel); not counted as a failure"),
    ("XPASS", "passed where a FAIL or an ERROR is expected: look at it (fixed? update the expectation)"),
    ("SKIP", "the test does not apply here (it exited 4)"),
    ("ERROR", "the lab got no answer: build, boot, SSH or a guest crash; never a test verdict"),
    ("XERROR", "a known ERROR, with the message and reason configs/lab.toml declares; not counted as a failure"),
    ("TIMEOUT", "the test ran past its deadline"),
    ("NOTRUN", "planned, but no result (an interrupted run or a missing shard)"),
)

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("lab.report", "templates"),
    autoescape=True,  # test output and kernel messages are untrusted text
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_ENV.globals.update(status_colors=STATUS_COLORS, legend=LEGEND, subtest_statuses=SUBTEST_STATUSES)


def _subtest_sections(subtests: list[dict]) -> list[tuple[str, list[dict]]]:
    """A kselftest's subtests under the headings they were printed under, in order."""
    return [(section, list(group)) for section, group in itertools.groupby(subtests, key=lambda s: s["section"])]


_ENV.globals["subtest_sections"] = _subtest_sections


def write_html(out_dir: Path, matrix: Matrix, comparison: Comparison | None = None) -> None:
    rundir.real_dir(out_dir, CELLS)
    changed = comparison.changed_keys() if comparison else {}
    page = _ENV.get_template("matrix.html").render(matrix=matrix, meta=matrix.meta, cell_page=cell_page,
                                                   comparison=comparison, changed=changed)
    atomic.write_text(out_dir / MATRIX, page, errors="backslashreplace")
    template = _ENV.get_template("cell.html")
    for cell in matrix.ordered_cells():
        path = out_dir / cell_page(cell.arch, cell.kernel, cell.testcase)
        atomic.write_text(path, template.render(cell=cell, meta=matrix.meta), errors="backslashreplace")


def write_history(out_dir: Path, nights: list, histories: list) -> Path:
    """history.html: a row per cell, a coloured letter per night (lab.history)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    page = _ENV.get_template("history.html").render(nights=nights, histories=histories, letters=LETTERS,
                                                    not_run=NOT_RUN)
    atomic.write_text(out_dir / HISTORY, page, errors="backslashreplace")
    return out_dir / HISTORY
