"""The run directory: the one module that knows its layout.

    run.json          the plan and facts of the run, written first (read back by
                      --resume, `lab merge`, `lab report`, `lab compare`)
    journal.jsonl     one line per finished cell (lab.journal)
    results.json, junit.xml, matrix.html, cells/<arch>~<kernel>~<testcase>.html
                      the reports, written from the journal (lab.report)
    logs/<arch>/<kernel>/console[-N].log (+ .cmdline), logs/.../<testcase>/[attempt-N/]
                      consoles and each cell's stdout, stderr and console
    changes.txt       with --baseline: what changed, its first line the summary
                      ("2 newly failing, 1 fixed, 148 unchanged": a build's description)
    history.html      lab history: each cell over this and earlier nights
    merge-problems.txt, lab-traceback.txt, .lock, .scratch/

What is read back, maybe from another machine, is checked before use: names
become paths (lab.names), and lists and numbers feed the runner and the templates.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import stat
from pathlib import Path
from typing import Iterator

from lab import atomic, names, safe_read
from lab.errors import RunDataError, UserError
from lab.journal import Journal
from lab.results import CellResult

RUN_PLAN = "run.json"
JOURNAL = "journal.jsonl"
RESULTS = "results.json"
JUNIT = "junit.xml"
MATRIX = "matrix.html"
CELLS = "cells"  # one HTML page per cell
LOGS = "logs"
_PAGE_SEPARATOR = "~"
MERGE_PROBLEMS = "merge-problems.txt"
CHANGES = "changes.txt"
HISTORY = "history.html"  # lab history: this night and earlier ones
TRACEBACK = "lab-traceback.txt"
SCRATCH = ".scratch"  # scratch disks of the guests: removed at the end and at a resume
LOCK = ".lock"
RUN_PLAN_MAX_BYTES = 16 * safe_read.MIB  # the default plan's run.json is about 10 KiB
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
        meta = json.loads(safe_read.read_text(path, RUN_PLAN_MAX_BYTES))
    except FileNotFoundError:
        if required:
            raise RunDataError(f"{path}: missing (is {directory} a run directory written by `lab run`?)") from None
        return None
    except (OSError, ValueError, RecursionError) as exc:
        raise RunDataError(f"{path}: not readable JSON ({type(exc).__name__}: {str(exc)[:200]})") from None
    problem = plan_problem(meta)
    if problem is None and "plan" in meta:
        problem = plan_problem(meta["plan"])
        problem = problem and f"plan: {problem}"
    if problem:
        raise RunDataError(f"{path}: {problem}")
    return meta


_GIVEN_KERNEL_FIELDS = {"tree": str, "fragments": list, "kernel_image": str, "kernel_config": str, "arch": str}


def given_kernel(meta: dict, directory: Path) -> dict:
    """run.json's record of a --tree or --kernel-image kernel ({} for a plan's kernels), checked."""
    recorded = meta.get("given_kernel", {})
    wanted = ({"tree", "fragments"}, {"kernel_image", "kernel_config", "arch"}, set())
    ok = (isinstance(recorded, dict) and set(recorded) in wanted
          and all(isinstance(v, _GIVEN_KERNEL_FIELDS[k]) for k, v in recorded.items())
          and all(isinstance(f, str) for f in recorded.get("fragments", [])))
    if not ok:
        raise RunDataError(f"{directory / RUN_PLAN}: given_kernel: expected {{tree, fragments}} or "
                           f"{{kernel_image, kernel_config, arch}}, got {str(recorded)[:80]!r}")
    return recorded


def journal(directory: Path) -> Journal:
    return Journal(directory / JOURNAL)


def cells(directory: Path) -> list[CellResult]:
    """The finished cells in the directory's journal (none if it has none yet)."""
    return Journal.read(directory / JOURNAL)


def real_dir(root: Path, *parts: str) -> Path:
    """root/parts..., each level made if missing and checked to be a real directory: no
    writer follows a link inside a run directory (a `cells -> /etc` or `logs -> elsewhere`
    planted in a directory from another machine would send the lab's files there)."""
    path = root
    for part in parts:
        path = path / part
        try:
            os.mkdir(path)
        except FileExistsError:
            pass
        if not stat.S_ISDIR(os.lstat(path).st_mode):
            raise RunDataError(f"{path}: a symbolic link or not a directory inside the run directory; "
                               "the lab writes only into real directories there")
    return path


def open_new(path: Path, append: bool = False) -> int:
    """A file descriptor to write `path` in a run directory, never through a link at its
    name (O_NOFOLLOW): a planted link is RunDataError, naming it."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_APPEND if append else os.O_TRUNC)
    try:
        return os.open(path, flags, 0o644)
    except OSError as exc:
        raise RunDataError(f"{path}: cannot be written ({exc.strerror}); the lab writes only regular "
                           "files inside a run directory, never through a link") from None


def job_logs(directory: Path, arch: str, kernel: str) -> Path:
    """Where a job's consoles and its cells' logs go (made if missing)."""
    return real_dir(directory, LOGS, arch, kernel)


def console_log(job_logs_dir: Path, boot: int) -> Path:
    """The console of a job's boot number `boot` (1, 2, ... as guests are replaced)."""
    return job_logs_dir / ("console.log" if boot == 1 else f"console-{boot}.log")


def cell_logs(job_logs_dir: Path, testcase: str, attempt: int | None) -> Path:
    """Where one cell's stdout, stderr and console go (made); `attempt` only with --repeat."""
    return real_dir(job_logs_dir, testcase, *([f"attempt-{attempt}"] if attempt else []))


def cell_page(arch: str, kernel: str, testcase: str) -> str:
    """A cell's HTML page, relative to the run directory (and to matrix.html).

    '~' is no name's character (lab.names), so no two cells share a page: with '__'
    a__b/c/t and a/b__c/t did."""
    return f"{CELLS}/{arch}{_PAGE_SEPARATOR}{kernel}{_PAGE_SEPARATOR}{testcase}.html"


def read_run(directory: Path) -> tuple[dict, list[CellResult]]:
    """A run directory's meta (run.json; without one, defaults) and cells (journal.jsonl), checked."""
    path = directory / JOURNAL
    if not os.path.lexists(path):  # anything else there is checked by Journal.read
        raise UserError(f"{path}: no journal here (expected a run directory written by `lab run`)")
    meta = read(directory, required=False) or {}
    return {"run_id": directory.name, "started": "", "finished": "", **meta}, Journal.read(path)


@contextlib.contextmanager
def hold(out: Path, resume: bool) -> Iterator[None]:
    """Hold `out` for one run: a directory that holds a run already is refused unless
    resumed, and a second lab writing into it at the same time is refused."""
    if not resume and (out / RUN_PLAN).exists():
        raise UserError(f"--out {out}: already holds a run ({RUN_PLAN}); continue it with "
                        f"--resume {out}, or give another --out")
    out.mkdir(parents=True, exist_ok=True)
    with open(out / LOCK, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "?"
            raise UserError(f"{out}: another lab run (pid {holder}) is writing this directory") from None
        lock.truncate(0)
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        yield


def write_merge_problems(directory: Path, problems: list[str]) -> None:
    """Kept next to the reports, so a pipeline (and a reader of its artifacts) sees the gap;
    removed when a merge into the same directory has none."""
    path = directory / MERGE_PROBLEMS
    path.unlink(missing_ok=True)
    if problems:
        atomic.write_text(path, "".join(f"{p}\n" for p in problems))


def write_changes(directory: Path, summary: str | None, text: str = "") -> None:
    """changes.txt: the summary line, then the comparison; removed when the reports are
    written without a baseline, so it never describes another comparison."""
    path = directory / CHANGES
    path.unlink(missing_ok=True)
    if summary is not None:
        atomic.write_text(path, f"{summary}\n\n{text}\n")
