"""Nights for `lab history` tests: five synthetic run directories, written out of
order, plus two real runs of i386-pae (tests/unit/data/history) that come after them."""

import json
import shutil
from pathlib import Path

from lab.journal import Journal
from lab.results import CellResult

REAL = Path(__file__).parent / "unit" / "data" / "history"
REAL_NIGHTS = ("real-2026-11-22-0305", "real-2026-11-22-2121")

# Per cell, the five synthetic nights (2026-11-17 .. 21) oldest first; None: not run.
SYNTHETIC = {
    ("i386-pae", "6.1", "swp_exclusive"): ["XFAIL"] * 5,
    ("i386-pae", "6.12", "swp_exclusive"): ["PASS", "FAIL", "PASS", "PASS", "PASS"],
    ("i386-pae", "6.1", "odirect_swapout"): ["PASS", "XFAIL", "XFAIL", "PASS", "XFAIL"],
    ("i386-pae", "6.12", "odirect_swapout"): [None, None, "ERROR", "PASS", "PASS"],
    ("sparc64", "6.12", "swp_exclusive"): ["ERROR", "XERROR", "XERROR", "XERROR", "XERROR"],
}
_OUTCOME = {"XFAIL": "FAIL", "XERROR": "ERROR"}


def _cell(key, status: str, day: int) -> CellResult:
    cell = CellResult(*key, _OUTCOME.get(status, status), f"{status} on night {day} <b>not bold</b>")
    if status == "XFAIL":
        cell.apply_expectation("FAIL", "marker landed in 6.3")
    elif status == "XERROR":
        cell.status, cell.expected, cell.expected_reason = "XERROR", "ERROR", "known build failure"
    return cell


def write_nights(base: Path) -> list[Path]:
    """The seven run directories, in an order that is not their nights' order."""
    dirs = []
    for night in range(5):
        path = base / f"night-{'edcba'[night]}"  # names sort the other way round
        journal = Journal(path / "journal.jsonl")
        for key, statuses in SYNTHETIC.items():
            if statuses[night]:
                journal.append(_cell(key, statuses[night], night))
        jobs = sorted({key[:2] for key in SYNTHETIC})
        (path / "run.json").write_text(json.dumps({
            "run_id": path.name, "started": f"2026-11-{17 + night}T01:00:00Z", "finished": "",
            "arches": sorted({a for a, _ in jobs}), "kernels": sorted({k for _, k in jobs}),
            "testcases": sorted({key[2] for key in SYNTHETIC}), "jobs": [list(j) for j in jobs]}))
        dirs.append(path)
    for name in REAL_NIGHTS:
        dirs.append(Path(shutil.copytree(REAL / name, base / name)))
    return [dirs[i] for i in (5, 2, 0, 6, 4, 1, 3)]
