"""Sharding a plan across agents, and merging their result directories.

Every agent computes the same assignment from the same plan (and the same
cost hints), so N agents with --shard 1/N .. N/N cover every job exactly once.
The unit is a job (arch, kernel): one boot serves all its testcases.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from lab.errors import UserError
from lab.results import CellResult, Journal


def parse_shard(text: str) -> tuple[int, int]:
    """"I/N" with 1 <= I <= N."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise UserError(f"--shard {text!r}: expected I/N, e.g. 2/3") from None
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
    try:
        cells = json.loads(results_json.read_text())["cells"]
    except (OSError, ValueError, KeyError) as exc:
        raise UserError(f"--shard-costs {results_json}: not a results.json ({exc})") from None
    costs: dict[tuple[str, str], float] = {}
    for cell in cells:
        key = (cell["arch"], cell["kernel"])
        costs[key] = costs.get(key, 0.0) + float(cell.get("duration_s", 0.0)) + float(
            cell.get("timings", {}).get("ssh_s", 0.0))
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


def merge(dirs: list[Path], out: Path) -> tuple[dict, list[CellResult], list[str]]:
    """Combine shard result directories into `out`: one journal, logs, and the plan.

    Refuses runs of different plans. Returns the merged run meta, the cells, and
    problems (cells missing from every shard, or present in more than one).
    """
    metas = []
    for d in dirs:
        try:
            metas.append(json.loads((d / "run.json").read_text()))
        except (OSError, ValueError) as exc:
            raise UserError(f"lab merge: {d} is not a run directory (no readable run.json: {exc})") from None
    ids = {m.get("plan_id") for m in metas}
    if len(ids) != 1 or None in ids:
        which = ", ".join(f"{d}: {m.get('plan_id')}" for d, m in zip(dirs, metas))
        raise UserError(f"lab merge: the directories are runs of different plans ({which})")
    out.mkdir(parents=True, exist_ok=True)
    seen: dict[tuple[str, str, str], Path] = {}
    cells: list[CellResult] = []
    problems: list[str] = []
    for d in dirs:
        for cell in Journal.read(d / "journal.jsonl"):
            if cell.key in seen:
                problems.append(f"duplicated: {'/'.join(cell.key)} in {seen[cell.key]} and {d}")
                continue
            seen[cell.key] = d
            cells.append(cell)
        if (d / "logs").is_dir():
            shutil.copytree(d / "logs", out / "logs", dirs_exist_ok=True)
    plan = metas[0]["plan"]
    for arch, kernel in plan["jobs"]:
        for testcase in plan["testcases"]:
            if (arch, kernel, testcase) not in seen:
                problems.append(f"missing: {arch}/{kernel}/{testcase} (in no shard's journal)")
    journal = Journal(out / "journal.jsonl")
    journal.path.unlink(missing_ok=True)
    for cell in cells:
        journal.append(cell)
    meta = {**metas[0], **plan, "run_id": out.name, "shard": "", "merged_from": [str(d) for d in dirs],
            "started": min(m.get("started", "") for m in metas),
            "finished": max(m.get("finished", "") for m in metas)}
    (out / "run.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta, cells, problems
