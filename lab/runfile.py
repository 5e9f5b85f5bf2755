"""run.json: a run's plan and facts, written first and read back by --resume,
`lab merge`, `lab report` and `lab compare`, maybe from another machine.

What is read back is checked before use: names become paths (lab.names), and
lists and numbers feed the scheduler and the report templates.
"""

from __future__ import annotations

import json
from pathlib import Path

from lab import atomic, names
from lab.errors import RunDataError

RUN_PLAN = "run.json"
_TEXT_FIELDS = ("run_id", "started", "finished", "host", "shard", "plan_id")


def write(directory: Path, meta: dict) -> None:
    atomic.write_text(directory / RUN_PLAN, json.dumps(meta, indent=2) + "\n")


def plan_problem(plan) -> str | None:
    """Why `plan` (a run.json, or its "plan") is not a usable plan, or None."""
    if not isinstance(plan, dict):
        return "not a JSON object"
    jobs = plan.get("jobs")
    if not isinstance(jobs, list) or not all(isinstance(j, list) and len(j) == 2 for j in jobs):
        return "jobs: expected a list of [arch, kernel] pairs"
    for field in ("arches", "kernels", "testcases"):
        if not isinstance(plan.get(field, []), list):
            return f"{field}: expected a list of names"
    listed = [*(n for j in jobs for n in j), *(n for f in ("arches", "kernels", "testcases") for n in plan.get(f, []))]
    bad = [n for n in listed if not names.is_valid(n)]
    if bad:
        return f"{str(bad[0])[:60]!r} is not a valid name ({names.RULE})"
    if "testcases" not in plan:
        return "testcases: missing"
    if not isinstance(plan.get("params", {}), dict) or not all(isinstance(v, dict) for v in plan.get("params", {}).values()):
        return "params: expected an object of testcase -> {parameter: value}"
    repeat = plan.get("repeat", 1)
    if not isinstance(repeat, int) or isinstance(repeat, bool) or not 1 <= repeat <= 10000:
        return "repeat: expected a whole number from 1 to 10000"
    wrong = [f for f in _TEXT_FIELDS if not isinstance(plan.get(f, ""), str)]
    return f"{wrong[0]}: expected a string" if wrong else None


def read(directory: Path, *, required: bool = True) -> dict | None:
    """A run directory's run.json, checked (RunDataError naming the file and field).
    None when it is absent and not required."""
    path = directory / RUN_PLAN
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        if required:
            raise RunDataError(f"{path}: missing (is {directory} a run directory written by `lab run`?)") from None
        return None
    except (OSError, ValueError) as exc:
        raise RunDataError(f"{path}: not readable JSON ({exc})") from None
    problem = plan_problem(meta)
    if problem is None and "plan" in meta:
        problem = plan_problem(meta["plan"])
        problem = problem and f"plan: {problem}"
    if problem:
        raise RunDataError(f"{path}: {problem}")
    return meta
