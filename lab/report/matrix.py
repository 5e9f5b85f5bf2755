"""The matrix view of a run: rows are testcases, columns are (arch, kernel)."""

from __future__ import annotations

from dataclasses import dataclass

from lab.results import CellResult


@dataclass(frozen=True)
class Matrix:
    columns: list[tuple[str, str]]  # (arch, kernel), grouped by arch
    rows: list[str]  # testcases
    cells: dict[tuple[str, str, str], CellResult]
    meta: dict

    @classmethod
    def from_cells(cls, cells: list[CellResult], meta: dict) -> "Matrix":
        """Order follows the plan in `meta` where given, then first appearance."""
        arches = _ordered(meta.get("arches", []), [c.arch for c in cells])
        kernels = _ordered(meta.get("kernels", []), [c.kernel for c in cells])
        present = {(c.arch, c.kernel) for c in cells}
        planned = {(a, k) for a, k in meta.get("jobs", [])}
        columns = [(a, k) for a in arches for k in kernels if (a, k) in present | planned]
        rows = _ordered(meta.get("testcases", []), [c.testcase for c in cells])
        return cls(columns=columns, rows=rows, cells={c.key: c for c in cells}, meta=meta)

    def cell(self, arch: str, kernel: str, testcase: str) -> CellResult | None:
        return self.cells.get((arch, kernel, testcase))

    def arch_groups(self) -> list[tuple[str, list[str]]]:
        """The columns as (arch, its kernels), for a two-row header."""
        groups: dict[str, list[str]] = {}
        for arch, kernel in self.columns:
            groups.setdefault(arch, []).append(kernel)
        return list(groups.items())

    def status_counts(self) -> dict[str, int]:
        """How many cells have each status; "NOTRUN" counts planned cells with no result."""
        counts: dict[str, int] = {}
        for arch, kernel in self.columns:
            for case in self.rows:
                cell = self.cell(arch, kernel, case)
                status = cell.status if cell else "NOTRUN"
                counts[status] = counts.get(status, 0) + 1
        return counts

    def ordered_cells(self) -> list[CellResult]:
        return [c for a, k in self.columns for t in self.rows if (c := self.cell(a, k, t))]


def _ordered(preferred: list[str], seen: list[str]) -> list[str]:
    out = list(dict.fromkeys(preferred))
    out += [name for name in dict.fromkeys(seen) if name not in out]
    return out
