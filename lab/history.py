"""lab history: each cell's status over several nights (run directories, in any order).

For every cell: a strip with a letter per night, its status tonight and since when
it has had it, whether it flips back and forth (flaky), and for a racy testcase the
failure rate over the nights. Nights are ordered by when they started.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lab import rundir
from lab.errors import UserError
from lab.results import CellResult
from lab.status import SHOWN_ORDER, Status

# One letter per status in a strip (Status.letter); "." is a night the cell did not run.
LETTERS = {status: status.letter for status in SHOWN_ORDER}
NOT_RUN = "."


@dataclass(frozen=True)
class Night:
    directory: str
    started: str  # ISO time from run.json ("" when unknown)
    cells: dict[tuple[str, str, str], CellResult]

    @property
    def label(self) -> str:
        return self.started[:16].replace("T", " ") if self.started else Path(self.directory).name


@dataclass(frozen=True)
class CellHistory:
    key: tuple[str, str, str]
    cells: tuple[CellResult | None, ...]  # one per night, oldest first
    since: int  # the first night of the current streak (an index into cells)
    flaky: bool
    rate: str  # a racy testcase: failed attempts over attempts run, e.g. "FAIL 3/7"

    @property
    def name(self) -> str:
        arch, kernel, testcase = self.key
        return f"{arch}/{kernel} {testcase}"

    @property
    def statuses(self) -> tuple[str | None, ...]:
        return tuple(c.status if c else None for c in self.cells)

    @property
    def strip(self) -> str:
        return "".join(c.status.letter if c else NOT_RUN for c in self.cells)

    @property
    def current(self) -> str:
        return self.statuses[-1] or "not run"

    @property
    def streak(self) -> int:
        """Nights in the current streak (those the cell ran in, unless it ran in none)."""
        tail = self.cells[self.since:]
        return sum(c is not None for c in tail) or len(tail)


def read_nights(directories: list[Path]) -> list[Night]:
    """The run directories as nights, oldest first (by run.json's start, then path)."""
    resolved = [d.resolve() for d in directories]
    if twice := next((d for d in directories if resolved.count(d.resolve()) > 1), None):
        raise UserError(f"lab history: {twice} is given twice")
    nights = []
    for directory in directories:
        meta, cells = rundir.read_run(directory)
        nights.append(Night(str(directory), str(meta.get("started", "")), {c.key: c for c in cells}))
    return sorted(nights, key=lambda n: (n.started, n.directory))


def _since(statuses: list[str | None]) -> int:
    """The first night of the current streak: the status it has now, nights it did not
    run in between (a narrowed run) not breaking it."""
    since = len(statuses) - 1
    if statuses[since] is None:
        while since > 0 and statuses[since - 1] is None:
            since -= 1
        return since
    for night in range(since - 1, -1, -1):
        if statuses[night] not in (None, statuses[-1]):
            break
        if statuses[night] is not None:
            since = night
    return since


def _flaky(cells: list[CellResult | None]) -> bool:
    """Left a trend (Status.trend: statuses that mean the same to someone reading a
    nightly) and came back to it, nights not run aside: good -> failing -> good is
    flaky; PASS <-> XFAIL of a race is not."""
    runs: list[str] = []
    for cell in cells:
        cls = cell.status.trend if cell else None
        if cls and (not runs or runs[-1] != cls):
            runs.append(cls)
    return len(runs) != len(set(runs))


def _failure_rate(cells: list[CellResult | None]) -> str:
    """Attempts that failed (FAIL or an expected FAIL) over attempts that gave an answer."""
    outcomes = [a["status"] for c in cells if c for a in (c.attempts or [{"status": c.status}])]
    answered = [s for s in map(Status, outcomes) if s.answered]
    failed = sum(s.failed for s in answered)
    return f"FAIL {failed}/{len(answered)}" if answered else ""


def cell_histories(nights: list[Night], racy: frozenset[str] = frozenset()) -> list[CellHistory]:
    """Every cell seen on any night, by arch, kernel and testcase in the order the
    newest nights have them."""
    seen = list(dict.fromkeys(key for night in reversed(nights) for key in night.cells))
    order = [list(dict.fromkeys(key[part] for key in seen)) for part in range(3)]
    keys = sorted(seen, key=lambda key: tuple(order[part].index(key[part]) for part in range(3)))
    histories = []
    for key in keys:
        cells = [night.cells.get(key) for night in nights]
        statuses = [c.status if c else None for c in cells]
        histories.append(CellHistory(key, tuple(cells), _since(statuses), _flaky(cells),
                                     _failure_rate(cells) if key[2] in racy else ""))
    return histories


def render_history(nights: list[Night], histories: list[CellHistory]) -> str:
    """The terminal summary: a line per cell, its strip oldest night first."""
    width = max((len(h.name) for h in histories), default=4)
    out = [f"history of {len(nights)} nights ({nights[0].label} .. {nights[-1].label}), {len(histories)} cells, "
           f"{sum(h.flaky for h in histories)} flaky",
           "strip: " + " ".join(f"{letter} {status}" for status, letter in LETTERS.items()) + f" {NOT_RUN} not run"]
    for h in histories:
        since = f"since {nights[h.since].label} ({h.streak} night{'s' if h.streak > 1 else ''})"
        extras = [x for x in (h.rate, "FLAKY" if h.flaky else "") if x]
        out.append(f"{h.name.ljust(width)}  {h.strip}  {h.current:<7} {since}" +
                   (f"  {', '.join(extras)}" if extras else ""))
    return "\n".join(out)
