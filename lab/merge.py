"""`lab merge`: the result directories of shards (lab.plan) combined into one run."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

from lab import rundir
from lab.errors import UserError
from lab.results import CellResult


def _planned_cells(plan: dict) -> list[tuple[str, str, str]]:
    """The plan's cells, in plan order."""
    return [(arch, kernel, testcase) for arch, kernel in plan["jobs"] for testcase in plan["testcases"]]


def _copy_logs(source: Path, target: Path) -> list[str]:
    """Copy the regular files under `source` (a shard's logs/) into `target`; anything else
    (a symlink, a device, a FIFO) is left behind and named, so it is never published."""
    skipped = []
    if source.is_symlink() or not source.is_dir():
        return [f"not copied: {source} (not a directory): merge copies regular files only"] if os.path.lexists(
            source) else []
    for folder, dirs, files in os.walk(source):
        for name in list(dirs):
            if os.path.islink(os.path.join(folder, name)):
                dirs.remove(name)
                files.append(name)
        for name in files:
            path = Path(folder) / name
            if not stat.S_ISREG(path.lstat().st_mode):
                skipped.append(f"not copied: {path} (not a regular file): merge copies regular files only")
                continue
            relative = path.relative_to(source)
            folder_copy = rundir.real_dir(target.parent, target.name, *relative.parent.parts)
            _copy_regular(path, folder_copy / relative.name)
    return skipped


def _copy_regular(source: Path, copy: Path) -> None:
    """source's bytes into a new regular file `copy`, never through a link at its name."""
    with open(source, "rb") as src, os.fdopen(rundir.open_new(copy), "wb") as dst:
        shutil.copyfileobj(src, dst)


def merge(dirs: list[Path], out: Path) -> tuple[dict, list[CellResult], list[str]]:
    """Combine shard result directories into `out`: one journal, logs, and the plan.

    Refuses runs of different plans, and an `out` that holds a run already (one of the
    inputs, or an earlier merge: nothing is overwritten), as `lab run` does. Returns the
    merged run meta, the cells, and problems: cells missing from every shard or present
    in more than one, cells a shard's journal has that its plan does not, and log entries
    that are not files.
    """
    metas = [rundir.read(d) for d in dirs]
    ids = {m.get("plan_id") for m in metas}
    if len(ids) != 1 or None in ids:
        which = ", ".join(f"{d}: {m.get('plan_id')}" for d, m in zip(dirs, metas))
        raise UserError(f"lab merge: the directories are runs of different plans ({which})")
    journals = [rundir.cells(d) for d in dirs]  # every line checked before anything is written
    with rundir.hold(out, resume=False):
        return _write_merged(dirs, out, metas, journals)


def _write_merged(dirs: list[Path], out: Path, metas: list[dict],
                  journals: list[list[CellResult]]) -> tuple[dict, list[CellResult], list[str]]:
    seen: dict[tuple[str, str, str], Path] = {}
    cells: list[CellResult] = []
    problems: list[str] = []
    for d, meta, journal_cells in zip(dirs, metas, journals):
        planned = set(_planned_cells(meta))
        for cell in journal_cells:
            if cell.key not in planned:
                problems.append(f"refused: {'/'.join(cell.key)} in {d / rundir.JOURNAL} is not in that run's plan")
                continue
            if cell.key in seen:
                problems.append(f"duplicated: {'/'.join(cell.key)} in {seen[cell.key]} and {d}")
                continue
            seen[cell.key] = d
            cells.append(cell)
    for d in dirs:
        problems += _copy_logs(d / rundir.LOGS, out / rundir.LOGS)
    plan = metas[0]["plan"]
    for arch, kernel, testcase in (key for key in _planned_cells(plan) if key not in seen):
        problems.append(f"missing: {arch}/{kernel}/{testcase} (in no shard's journal)")
    journal = rundir.journal(out)
    journal.path.unlink(missing_ok=True)
    for cell in cells:
        journal.append(cell)
    meta = {**metas[0], **plan, "run_id": out.name, "shard": "", "merged_from": [str(d) for d in dirs],
            "started": min(m.get("started", "") for m in metas),
            "finished": max(m.get("finished", "") for m in metas)}
    rundir.write(out, meta)
    rundir.write_merge_problems(out, problems)
    return meta, cells, problems
