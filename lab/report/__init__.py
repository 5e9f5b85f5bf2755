"""Reports of a run: terminal matrix, results.json, junit.xml, matrix.html."""

from __future__ import annotations

import json
from pathlib import Path

from lab import atomic, rundir
from lab.report.compare import Comparison, render_comparison
from lab.report.html import write_html
from lab.report.junit import write_junit
from lab.report.matrix import Matrix
from lab.results import CellResult, run_exit_code


def write_reports(out_dir: Path, cells: list[CellResult], meta: dict,
                  comparison: Comparison | None = None) -> Matrix:
    """Write every report file of a run from its cells; returns the matrix for printing.

    With a comparison (--baseline), matrix.html opens with what changed, and
    changes.txt has it as text.
    """
    matrix = Matrix.from_cells(cells, meta)
    data = {"run": meta, "exit_code": run_exit_code(cells), "cells": [c.to_dict() for c in matrix.ordered_cells()]}
    atomic.write_text(out_dir / rundir.RESULTS, json.dumps(data, indent=2) + "\n")
    write_junit(out_dir / rundir.JUNIT, matrix)
    write_html(out_dir, matrix, comparison)
    if comparison:
        rundir.write_changes(out_dir, comparison.summary(), render_comparison(comparison))
    else:
        rundir.write_changes(out_dir, None)
    return matrix
