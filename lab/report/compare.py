"""What changed between two runs: the morning question "what broke last night?".

Cells are matched by (arch, kernel, testcase) and sorted into sections, in the
order a developer reads them: newly failing, newly passing, newly erroring,
changed expectations, then anything else that moved (skips, cells added or gone).
A kselftest's subtests are compared one by one as well, matched by their names
("riscv64/6.12 cow / R/O longterm GUP pin ... with memfd").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lab import rundir
from lab.results import CellResult
from lab.report.terminal import plain
from lab.status import ERRORING, FAILING, GOOD

SECTIONS = (
    ("newly_fail", "Newly failing"),
    ("newly_pass", "Newly passing"),
    ("newly_error", "Newly erroring"),
    ("changed_expectations", "Changed expectations"),
    ("other", "Other changes"),
)
# How the one-line summary (a Jenkins build's description) counts each section,
# in the order it names them.
SUMMARY_WORDS = (
    ("newly_fail", "newly failing"),
    ("newly_error", "newly erroring"),
    ("newly_pass", "fixed"),
    ("changed_expectations", "expectations changed"),
    ("other", "other changes"),
)


@dataclass(frozen=True)
class Change:
    key: tuple[str, str, str]
    old: CellResult | None
    new: CellResult | None

    @property
    def name(self) -> str:
        arch, kernel, testcase = self.key
        return f"{arch}/{kernel} {testcase}"

    @property
    def old_label(self) -> str:
        return self.old.label if self.old else "not run"

    @property
    def new_label(self) -> str:
        return self.new.label if self.new else "not run"

    @property
    def detail(self) -> str:
        """The newer side's message, or why the expectation moved."""
        if self.old and self.new and self.old.expected != self.new.expected:
            return (f"expected {self.old.expected or 'no declared result'} -> "
                    f"{self.new.expected or 'no declared result'}")
        cell = self.new or self.old
        return cell.message if cell else ""


@dataclass(frozen=True)
class Comparison:
    baseline: str  # how to name the older run (its directory)
    newly_fail: tuple[Change, ...]
    newly_pass: tuple[Change, ...]
    newly_error: tuple[Change, ...]
    changed_expectations: tuple[Change, ...]
    other: tuple[Change, ...]
    cell_keys: frozenset = frozenset()  # every cell of either run (subtests aside)

    def sections(self) -> list[tuple[str, tuple[Change, ...]]]:
        return [(title, getattr(self, attr)) for attr, title in SECTIONS]

    @property
    def regressed(self) -> bool:
        """A cell (or subtest) newly fails or errors, whatever else moved with it (an
        expectation edited into an XPASS is news too)."""
        return any(_newly_bad(c.old, c.new) for _, changes in self.sections() for c in changes)

    def changed_keys(self) -> dict[tuple[str, str, str], Change]:
        return {c.key: c for _, changes in self.sections() for c in changes}

    def summary(self) -> str:
        """One line: "2 newly failing, 1 fixed, 148 unchanged", cells first, then the
        subtests that changed inside cells ("; subtests: 3 newly failing")."""
        def counted(subtests: bool) -> list[str]:
            counts = [(sum((c.key in self.cell_keys) != subtests for c in getattr(self, attr)), words)
                      for attr, words in SUMMARY_WORDS]
            return [f"{n} {words}" for n, words in counts if n]
        changed = sum(key in self.cell_keys for key in self.changed_keys())
        line = ", ".join([*counted(subtests=False), f"{len(self.cell_keys) - changed} unchanged"])
        subtests = counted(subtests=True)
        return f"{line}; subtests: {', '.join(subtests)}" if subtests else line


def _newly_bad(old: CellResult | None, new: CellResult | None) -> bool:
    return any(_entered(old, new, bad) for bad in (FAILING, ERRORING))


def _trend(cell: CellResult | None) -> str | None:
    return cell.status.trend if cell else None


def _entered(old: CellResult | None, new: CellResult | None, trend: str) -> bool:
    """`new` has the trend (Status.trend) and `old` had not (or did not run)."""
    return _trend(new) == trend and _trend(old) != trend


def _section(old: CellResult | None, new: CellResult | None) -> str | None:
    if old and new and old.status == new.status and old.expected == new.expected:
        return None
    if old and new and old.expected != new.expected:
        return "changed_expectations"
    if _entered(old, new, FAILING):
        return "newly_fail"
    if _entered(old, new, ERRORING):
        return "newly_error"
    if old and _entered(old, new, GOOD):
        return "newly_pass"
    return "other"


def _subtest_unit(cell: CellResult, sub: dict) -> CellResult:
    """One subtest of a kselftest cell, in the shape compare() sorts."""
    return CellResult(cell.arch, cell.kernel, f"{cell.testcase} / {sub['name']}", sub["status"], sub["detail"],
                      expected="FAIL" if sub.get("expected") else "", expected_reason=sub.get("expected", ""))


def _with_subtests(cells: list[CellResult], other: dict) -> dict:
    """The cells by key, each followed by its subtests where the other run's cell has
    subtests too: a cell that never got to its subtests is one change, not hundreds."""
    units: dict = {}
    for cell in cells:
        units[cell.key] = cell
        twin = other.get(cell.key)
        if cell.subtests and twin is not None and twin.subtests:
            units.update((unit.key, unit) for unit in (_subtest_unit(cell, s) for s in cell.subtests))
    return units


def compare(old_cells: list[CellResult], new_cells: list[CellResult], baseline: str) -> Comparison:
    old = _with_subtests(old_cells, {c.key: c for c in new_cells})
    new = _with_subtests(new_cells, {c.key: c for c in old_cells})
    found: dict[str, list[Change]] = {attr: [] for attr, _ in SECTIONS}
    for key in list(dict.fromkeys([*new, *old])):
        section = _section(old.get(key), new.get(key))
        if section:
            found[section].append(Change(key, old.get(key), new.get(key)))
    return Comparison(baseline=baseline, cell_keys=frozenset(c.key for c in [*old_cells, *new_cells]),
                      **{attr: tuple(changes) for attr, changes in found.items()})


def compare_dirs(old_dir: Path, new_dir: Path) -> Comparison:
    _, old_cells = rundir.read_run(old_dir)
    _, new_cells = rundir.read_run(new_dir)
    return compare(old_cells, new_cells, baseline=str(old_dir))


def render_comparison(comparison: Comparison) -> str:
    """The sections as text; an empty section says so, so "nothing changed" is explicit."""
    out = [f"compared with {comparison.baseline}: {comparison.summary()}"]
    for title, changes in comparison.sections():
        out.append(f"{title}: {len(changes)}")
        out += [f"  {c.name}: {c.old_label} -> {c.new_label}: {plain(c.detail)}" for c in changes]
    return "\n".join(out)
