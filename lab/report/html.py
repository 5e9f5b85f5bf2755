"""matrix.html and one page per cell, rendered with autoescaping and StrictUndefined."""

from __future__ import annotations

from pathlib import Path

import jinja2

from lab.report.matrix import Matrix

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("lab.report", "templates"),
    autoescape=True,  # test output and kernel messages are untrusted text
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def cell_page(arch: str, kernel: str, testcase: str) -> str:
    return f"cells/{arch}__{kernel}__{testcase}.html"


def write_html(out_dir: Path, matrix: Matrix) -> None:
    (out_dir / "cells").mkdir(parents=True, exist_ok=True)
    page = _ENV.get_template("matrix.html").render(matrix=matrix, meta=matrix.meta, cell_page=cell_page)
    (out_dir / "matrix.html").write_text(page, encoding="utf-8", errors="backslashreplace")
    template = _ENV.get_template("cell.html")
    for cell in matrix.ordered_cells():
        path = out_dir / cell_page(cell.arch, cell.kernel, cell.testcase)
        path.write_text(template.render(cell=cell, meta=matrix.meta), encoding="utf-8", errors="backslashreplace")
