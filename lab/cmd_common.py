"""Helpers the subcommands share: the host check, run directories, baselines and reports,
and how an exception becomes an exit code and one line (lab.exitcodes has the table)."""

from __future__ import annotations

import os
import sys
import tempfile
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

from lab import config as cfg
from lab import schema
from lab import exitcodes, rundir
from lab.errors import UserError
from lab.hosttools import compiler_for, qemu_binary
from lab.images import resolved_sources
from lab.qemu import qemu_user
from lab.report import write_reports
from lab.report.compare import compare, render_comparison
from lab.report.terminal import render_text


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def check_host(lab: schema.Lab, arches: list[str]) -> None:
    """Fail before any work if a QEMU or compiler is missing (exit 2, naming the package),
    the user QEMU runs as is (when root), or a pinned guest source package is not in
    apt's lists (naming the pin)."""
    qemu_user()
    for name in arches:
        qemu_binary(lab.arches[name])
        compiler_for(lab.arches[name])
    resolved_sources(lab)


def out_dir(requested: str | None, prefix: str = "") -> Path:
    if requested:
        return Path(requested)
    base = Path("results") / (prefix + time.strftime("%Y%m%d-%H%M%S"))
    out, n = base, 1
    while out.exists():
        n += 1
        out = base.with_name(f"{base.name}-{n}")
    return out


def baseline_of(args) -> list | None:
    """The baseline run's cells (--baseline DIR), read before any work so a bad path fails fast."""
    if not getattr(args, "baseline", None):
        return None
    return rundir.read_run(Path(args.baseline))[1]


def finish_reports(out: Path, cells: list, meta: dict, baseline: list | None, baseline_dir: str | None) -> None:
    """Write the reports and print the matrix (and what changed since the baseline)."""
    comparison = compare(baseline, cells, baseline_dir or "") if baseline is not None else None
    matrix = write_reports(out, cells, meta, comparison)
    print(render_text(matrix, color=_color_wanted()))
    if comparison:
        print()
        print(render_comparison(comparison))


def _color_wanted() -> bool:
    """Colours on a terminal only; NO_COLOR (no-color.org) turns them off."""
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR")


def one_arch(lab: schema.Lab, args, option: str) -> schema.Arch:
    """The single --arch an option needs (an image, a shell): UserError naming the option otherwise."""
    arches = cfg.pick("arch", args.arch, lab.arches, ()) if args.arch else []
    if len(arches) != 1:
        raise UserError(f"{option} needs exactly one --arch (got {', '.join(arches) or 'none'})")
    return lab.arches[arches[0]]


def _save_traceback(directory: Path | None = None) -> tuple[str, Path]:
    """The current exception's one-line summary, and a file with its full traceback
    (in `directory` when given and writable, else a temporary file)."""
    summary = "".join(traceback.format_exception_only(*sys.exc_info()[:2])).strip().splitlines()[-1]
    text = traceback.format_exc()
    try:
        if directory is None:
            raise OSError("no run directory")
        path = directory / rundir.TRACEBACK
        path.write_text(text)
    except OSError:
        fd, name = tempfile.mkstemp(prefix="lab-traceback-", suffix=".txt")
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        path = Path(name)
    return summary, path


def outcome(exc: BaseException, traceback_dir: Path | None = None) -> tuple[int, str]:
    """The exit code lab.exitcodes gives for `exc`, and the line that says why (empty for a
    signal). Anything the table does not name is a lab bug: never a traceback on the terminal,
    and never 1 ("a test failed"): exit 2 and where the traceback was saved."""
    known = exitcodes.for_exception(exc)
    if known is None:
        summary, path = _save_traceback(traceback_dir)
        return exitcodes.PROBLEM, f"lab: internal error: {summary} (traceback: {path})"
    code, label = known
    return code, f"lab: {label}: {exc}" if isinstance(exc, Exception) else ""


def exit_for(exc: BaseException) -> int:
    """One line on stderr (none for a signal) and the exit code lab.exitcodes gives."""
    code, message = outcome(exc)
    if message:
        try:
            print(message, file=sys.stderr)
        except OSError:
            pass  # stderr was a terminal that is gone (SIGHUP): the exit code still says it
    return code
