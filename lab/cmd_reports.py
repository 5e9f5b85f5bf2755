"""`lab merge`, `lab report`, `lab compare`, `lab history`: reports from run directories."""

from __future__ import annotations

import sys
from pathlib import Path

from lab import config as cfg
from lab import exitcodes, history, merge, rundir
from lab.report.html import write_history
from lab.report.compare import compare_dirs, render_comparison
from lab.results import run_exit_code
from lab.cmd_common import baseline_of, finish_reports


def cmd_merge(args) -> int:
    out = Path(args.out)
    baseline = baseline_of(args)
    meta, cells, problems = merge.merge([Path(d) for d in args.dirs], out)
    finish_reports(out, cells, meta, baseline, args.baseline)
    for problem in problems:
        print(f"lab merge: {problem}", file=sys.stderr)
    print(f"\nmerged {len(args.dirs)} runs into {out}/: {len(cells)} cells, {len(problems)} problems")
    return exitcodes.PROBLEM if problems else run_exit_code(cells)


def cmd_report(args) -> int:
    out = Path(args.dir)
    baseline = baseline_of(args)
    meta, cells = rundir.read_run(out)
    finish_reports(out, cells, meta, baseline, args.baseline)
    return run_exit_code(cells)


def cmd_compare(args) -> int:
    """Exit 1 when a cell newly fails or errors, so a nightly job can flag regressions."""
    comparison = compare_dirs(Path(args.old), Path(args.new))
    print(render_comparison(comparison))
    return exitcodes.FINDING if comparison.regressed else exitcodes.OK


def cmd_history(args) -> int:
    """history.html and a line per cell over the nights given (the newest night's
    directory unless --out); racy testcases (kind = "race") get their failure rate."""
    lab = cfg.load_lab()
    racy = frozenset(name for name, case in lab.testcases.items() if case.kind == "race")
    nights = history.read_nights([Path(d) for d in args.dirs])
    histories = history.cell_histories(nights, racy)
    page = write_history(Path(args.out) if args.out else Path(nights[-1].directory), nights, histories)
    print(history.render_history(nights, histories))
    print(f"\nhistory: {page}")
    return exitcodes.OK
