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
from lab.status import SHOWN_ORDER, SUBTEST_STATUSES

# One colour per status (Status.colour; background, text stays dark): the matrix, the
# legend and the browser test all read this table. Status text is always shown as well.
NOTRUN = "NOTRUN"
STATUS_COLORS = {**{str(s): s.colour for s in SHOWN_ORDER}, NOTRUN: "#ffffff"}
LEGEND = (*((str(s), s.legend) for s in SHOWN_ORDER),
          (NOTRUN, "planned, but no result (an interrupted run or a missing shard)"))

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
