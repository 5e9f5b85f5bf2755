"""Sharding a plan across agents, and merging their result directories.

Every agent computes the same assignment from the same plan (and the same
cost hints), so N agents with --shard 1/N .. N/N cover every job exactly once.
The unit is a job (arch, kernel): one boot serves all its testcases.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
from pathlib import Path

from lab import runfile
from lab.errors import UserError
from lab.results import CellResult, Journal


MAX_SHARDS = 1000


def parse_shard(text: str) -> tuple[int, int]:
    """"I/N" with 1 <= I <= N."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise UserError(f"--shard {text!r}: expected I/N, e.g. 2/3") from None
    if not 1 <= count <= MAX_SHARDS:
        raise UserError(f"--shard {text!r}: N must be between 1 and {MAX_SHARDS}")
    if not 1 <= index <= count:
        raise UserError(f"--shard {text!r}: I must be between 1 and N")
    return index, count


def plan_id(plan: dict) -> str:
    """Identifies a plan: shards of one plan share it; runs of different plans never do."""
    keys = ("jobs", "testcases", "params", "repeat")
    return hashlib.sha256(json.dumps({k: plan[k] for k in keys}, sort_keys=True).encode()).hexdigest()[:16]


def job_costs(results_json: Path | None) -> dict[tuple[str, str], float]:
    """Seconds each job took in an earlier run (results.json), to balance shards by."""
    if results_json is None:
        return {}
    if results_json.is_dir():
        results_json = results_json / "results.json"
    costs: dict[tuple[str, str], float] = {}
    try:
        for cell in json.loads(results_json.read_text())["cells"]:
            key = (cell["arch"], cell["kernel"])
            seconds = float(cell.get("duration_s", 0.0)) + float(cell.get("timings", {}).get("ssh_s", 0.0))
            if not (isinstance(key[0], str) and isinstance(key[1], str) and 0 <= seconds < 1e9):
                raise ValueError(f"a cell with arch {key[0]!r}, kernel {key[1]!r}, {seconds} seconds")
            costs[key] = costs.get(key, 0.0) + seconds
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UserError(f"--shard-costs {results_json}: not a results.json ({type(exc).__name__}: {exc})") from None
    return costs


def assign(jobs: list[list[str]], count: int, costs: dict[tuple[str, str], float],
           cells_per_job: int) -> list[list[list[str]]]:
    """Jobs ([arch, kernel]) into `count` shards, largest first onto the least loaded shard.

    A job without a known cost costs the mean of the known ones (or its cell count when
    none is known), so a new arch does not land on a shard by accident of order.
    """
    known = [costs[tuple(j)] for j in jobs if tuple(j) in costs]
    default = sum(known) / len(known) if known else float(cells_per_job)
    weighted = sorted(jobs, key=lambda j: (-costs.get(tuple(j), default), j))
    shards: list[list[list[str]]] = [[] for _ in range(count)]
    loads = [0.0] * count
    for job in weighted:
        target = min(range(count), key=lambda i: (loads[i], i))
        shards[target].append(job)
        loads[target] += costs.get(tuple(job), default)
    order = {tuple(j): n for n, j in enumerate(jobs)}
    return [sorted(shard, key=lambda j: order[tuple(j)]) for shard in shards]


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
            copy = target / path.relative_to(source)
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, copy, follow_symlinks=False)
    return skipped


def merge(dirs: list[Path], out: Path) -> tuple[dict, list[CellResult], list[str]]:
    """Combine shard result directories into `out`: one journal, logs, and the plan.

    Refuses runs of different plans. Returns the merged run meta, the cells, and
    problems: cells missing from every shard or present in more than one, cells
    a shard's journal has that its plan does not, and log entries that are not files.
    """
    metas = [runfile.read(d) for d in dirs]
    ids = {m.get("plan_id") for m in metas}
    if len(ids) != 1 or None in ids:
        which = ", ".join(f"{d}: {m.get('plan_id')}" for d, m in zip(dirs, metas))
        raise UserError(f"lab merge: the directories are runs of different plans ({which})")
    journals = [Journal.read(d / "journal.jsonl") for d in dirs]  # every line checked before anything is written
    seen: dict[tuple[str, str, str], Path] = {}
    cells: list[CellResult] = []
    problems: list[str] = []
    for d, meta, journal_cells in zip(dirs, metas, journals):
        planned = set(_planned_cells(meta))
        for cell in journal_cells:
            if cell.key not in planned:
                problems.append(f"refused: {'/'.join(cell.key)} in {d}/journal.jsonl is not in that run's plan")
                continue
            if cell.key in seen:
                problems.append(f"duplicated: {'/'.join(cell.key)} in {seen[cell.key]} and {d}")
                continue
            seen[cell.key] = d
            cells.append(cell)
    out.mkdir(parents=True, exist_ok=True)
    for d in dirs:
        problems += _copy_logs(d / "logs", out / "logs")
    plan = metas[0]["plan"]
    for arch, kernel, testcase in (key for key in _planned_cells(plan) if key not in seen):
        problems.append(f"missing: {arch}/{kernel}/{testcase} (in no shard's journal)")
    journal = Journal(out / "journal.jsonl")
    journal.path.unlink(missing_ok=True)
    for cell in cells:
        journal.append(cell)
    meta = {**metas[0], **plan, "run_id": out.name, "shard": "", "merged_from": [str(d) for d in dirs],
            "started": min(m.get("started", "") for m in metas),
            "finished": max(m.get("finished", "") for m in metas)}
    runfile.write(out, meta)
    return meta, cells, problems
