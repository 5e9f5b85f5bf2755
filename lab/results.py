"""Cell results: what one (arch, kernel, testcase) gave, checked when read back,
with expectations applied and repeated attempts combined."""

from __future__ import annotations

import math
import re
import types
import typing
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields

from lab import names
from lab.errors import CODE_PATTERN, RunDataError
from lab.status import SUBTEST_STATUSES, Status, deciding_status, worst_exit_code

if typing.TYPE_CHECKING:
    from lab.schema import Expectation

# What each status means, and how every report classifies it: lab.status.
STATUSES = tuple(Status)

@dataclass
class CellResult:
    arch: str
    kernel: str
    testcase: str
    status: Status  # a plain word is taken and made a Status
    message: str
    # An ERROR's (and XERROR's) stable code (lab.errors.ERROR_CODES): what known-ERROR
    # expectations match. Empty otherwise, and in journals written before codes.
    error_code: str = ""
    exit_code: int | None = None
    duration_s: float = 0.0
    kernel_version: str = ""
    stdout: str = ""
    stderr: str = ""
    console: str = ""  # what the console printed while the test ran
    kernel_messages: list[str] = field(default_factory=list)
    kernel_excerpts: list[str] = field(default_factory=list)  # each report, cut-here to end-trace
    logs: dict[str, str] = field(default_factory=dict)  # name -> path relative to the run dir
    timings: dict[str, float] = field(default_factory=dict)  # seconds since QEMU start
    expected: str = ""  # the declared expected status, if any (e.g. "FAIL")
    expected_reason: str = ""
    metrics: dict[str, float] = field(default_factory=dict)  # from the test's "result: k=v ..." line
    attempts: list[dict] = field(default_factory=list)  # with --repeat: one summary per attempt
    rate: str = ""  # with --repeat: e.g. "FAIL 2/10"
    retries: list[str] = field(default_factory=list)  # infrastructure errors that were retried first
    provenance: dict[str, str] = field(default_factory=dict)  # what ran: QEMU, kernel source, hashes
    # A kselftest's subtests, in order: number, name (unique, stable), status, detail, section,
    # expected (the reason the configs expect a FAIL).
    subtests: list[dict] = field(default_factory=list)

    def __setattr__(self, name: str, value) -> None:
        """A status is always a Status: a plain word (a journal's, the ktap parser's) is
        made one when set, and an unknown word is refused there."""
        if name == "status":
            status = Status.parse(value)
            if status is None:
                raise ValueError(f"unknown status {value!r}")
            value = status
        super().__setattr__(name, value)

    @property
    def label(self) -> str:
        """The status as a matrix shows it: with the attempt rate when repeated ("XFAIL 3/3")."""
        return f"{self.status} {self.rate.split()[-1]}" if self.rate else self.status

    @property
    def subtest_counts(self) -> str:
        """A kselftest's subtests counted, as the matrix shows them: "ok 148 · fail 2 · skip 31"."""
        counts = {status: sum(s["status"] == status for s in self.subtests) for status in SUBTEST_STATUSES}
        return " · ".join(f"{'ok' if status is Status.PASS else status.lower()} {n}" for status, n in counts.items() if n)

    def attempts_text(self) -> str:
        """One line per attempt, for reports that cannot show a table."""
        return "\n".join(f"attempt {a['attempt']}: {a['status']} ({a['duration_s']:.1f} s): {a['message']}"
                         for a in self.attempts)

    @property
    def outcome(self) -> Status:
        """The actual result, before an expectation renamed it (XFAIL -> FAIL)."""
        return self.status.outcome

    def apply_expectations(self, expectations: Sequence[Expectation], racy: bool = False) -> None:
        """Apply the cell's [[expect]] entries: an expected ERROR to an ERROR, else the
        expected FAIL; an expected ERROR that did not happen is reported as fixed."""
        errors = [e for e in expectations if e.status == "ERROR"]
        fails = [e for e in expectations if e.status == "FAIL"]
        if self.status == "ERROR" and errors:
            self.apply_expected_error(errors)
        elif fails:
            self.apply_expectation("FAIL", fails[0].reason, racy=racy)
        elif errors:
            self._expected_error_gone(errors[0])

    def apply_expectation(self, status: str, reason: str, racy: bool = False) -> None:
        """Record what the configs expect and rename a matching/contradicting outcome.

        For a racy testcase a PASS only means "not reproduced this time": it cannot
        contradict an expected FAIL, so it stays PASS (with the expectation shown).
        """
        self.expected, self.expected_reason = status, reason
        if status == "FAIL" and self.status == "FAIL":
            self.status = Status.XFAIL
        elif status == "FAIL" and self.status == "PASS" and racy:
            self.message = f"{self.message} (expected FAIL: not reproduced this time)"
        elif status == "FAIL" and self.status == "PASS":
            self.status = Status.XPASS
            self.message = f"expected FAIL ({reason}) but it passed: {self.message}"

    def apply_expected_error(self, expectations: Sequence[Expectation]) -> None:
        """An ERROR with a declared code (and, where one is declared, a message the
        pattern finds) is XERROR (known); any other ERROR stays ERROR, saying why it is
        not the known one."""
        known = next((e for e in expectations if e.matches_error(self.error_code, self.message)), None)
        declared = known or expectations[0]
        self.expected, self.expected_reason = "ERROR", declared.reason
        if known:
            self.status = Status.XERROR
        elif self.error_code != declared.error:
            self.message = (f"{self.message} (not the known ERROR: its code is {self.error_code or 'none'}, "
                            f"[[expect]] \"{declared.reason}\" declares {declared.error})")
        else:
            self.message = (f"{self.message} (not the known ERROR: its message does not match "
                            f"/{declared.message}/ of [[expect]] \"{declared.reason}\")")

    def _expected_error_gone(self, expectation: Expectation) -> None:
        """The cell got an answer where an ERROR is declared: fixed, so the expectation
        is stale (a PASS is XPASS; a FAIL, SKIP or TIMEOUT keeps its status, noted)."""
        self.expected, self.expected_reason = "ERROR", expectation.reason
        note = f"expected ERROR ({expectation.reason}) but the cell ran: fixed, update the expectation"
        if self.status == "PASS":
            self.status = Status.XPASS
            self.message = f"{note}: {self.message}"
        else:
            self.message = f"{self.message} ({note})"

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.arch, self.kernel, self.testcase)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict, where: str = "cell") -> "CellResult":
        """A cell from its JSON record (a journal line, maybe another machine's): every field
        checked, since names become file paths and text becomes reports."""
        problem = _record_problem(data)
        if problem:
            raise RunDataError(f"{where}: {problem}")
        return cls(**data)


def _type_problem(value, hint) -> str | None:
    """Why `value` (from JSON) does not fit a CellResult field's type hint, or None."""
    base = typing.get_origin(hint) or hint
    if base is Status:
        base = str  # checked against the members after the types
    if base in (typing.Union, types.UnionType):
        return None if value is None else _type_problem(value, int)
    if base is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        return None if ok else "a finite number"
    if base is int:
        return None if isinstance(value, int) and not isinstance(value, bool) else "an integer"
    return None if isinstance(value, base) else {str: "a string", list: "a list", dict: "an object"}[base]


def _record_problem(data) -> str | None:
    if not isinstance(data, dict):
        return "not a JSON object"
    hints = typing.get_type_hints(CellResult)
    known = {f.name for f in fields(CellResult)}
    unknown = sorted(set(data) - known)
    if unknown:
        return f"unknown field {unknown[0]!r}"
    missing = [n for n in ("arch", "kernel", "testcase", "status", "message") if n not in data]
    if missing:
        return f"missing field {missing[0]!r}"
    for name, value in data.items():
        wanted = _type_problem(value, hints[name])
        if wanted:
            return f"{name}: expected {wanted}, got {str(value)[:40]!r}"
    for name in ("arch", "kernel", "testcase"):
        if not names.is_valid(data[name]):
            return f"{name}: {data[name]!r} is not a valid name ({names.RULE})"
    if data["status"] not in STATUSES:
        return f"status: {data['status']!r} is not one of {', '.join(STATUSES)}"
    if problem := _subtests_problem(data.get("subtests", [])):
        return problem
    if problem := _inner_problem(data):
        return problem
    logs = [data.get("logs", {})] + [a.get("logs", {}) for a in data.get("attempts", []) if isinstance(a, dict)]
    for path in (p for entry in logs if isinstance(entry, dict) for p in entry.values()):
        if not names.is_safe_relative_path(path):
            return f"logs: {str(path)[:60]!r} is not a path inside the run directory"
    return None


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _strings(value) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _mapping(check):
    return lambda value: isinstance(value, dict) and all(isinstance(k, str) and check(v) for k, v in value.items())


_RATE = re.compile(rf"(?:{'|'.join(STATUSES)}) [0-9]{{1,5}}/[0-9]{{1,5}}")
# The inside of each container field: (check, what is allowed). Reports, history and
# merge index into these, so a record from another machine is checked all the way down.
_INNER_FIELDS = {
    "kernel_messages": (_strings, "a list of strings"),
    "kernel_excerpts": (_strings, "a list of strings"),
    "retries": (_strings, "a list of strings"),
    "logs": (_mapping(lambda v: isinstance(v, str)), "an object of name -> path"),
    "provenance": (_mapping(lambda v: isinstance(v, str)), "an object of name -> string"),
    "timings": (_mapping(_finite), "an object of name -> seconds (a finite number)"),
    "metrics": (_mapping(_finite), "an object of name -> finite number"),
    "rate": (lambda v: v == "" or _RATE.fullmatch(v) is not None, "empty or STATUS N/M, e.g. 'FAIL 2/10'"),
    "error_code": (lambda v: v == "" or CODE_PATTERN.fullmatch(v) is not None,
                   "empty or an error code, e.g. 'boot.no-ssh'"),
}
_ATTEMPT_FIELDS = {
    "attempt": (lambda v: isinstance(v, int) and not isinstance(v, bool) and 0 < v <= 10000, "a number from 1"),
    "status": (lambda v: v in STATUSES, f"one of {', '.join(STATUSES)}"),
    "exit_code": (lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool)), "an integer or null"),
    "duration_s": (_finite, "a finite number"),
    "message": (lambda v: isinstance(v, str), "a string"),
    "metrics": _INNER_FIELDS["metrics"],
    "logs": _INNER_FIELDS["logs"],
}


def _inner_problem(data: dict) -> str | None:
    """Why a container field's contents (maybe another machine's) do not fit, or None."""
    for name, (fits, allowed) in _INNER_FIELDS.items():
        if name in data and not fits(data[name]):
            return f"{name}: expected {allowed}, got {str(data[name])[:40]!r}"
    for i, attempt in enumerate(data.get("attempts", [])):
        if not isinstance(attempt, dict):
            return f"attempts[{i}]: expected an object, got {str(attempt)[:40]!r}"
        if unknown := sorted(set(attempt) - set(_ATTEMPT_FIELDS)):
            return f"attempts[{i}]: unknown field {unknown[0]!r}"
        for name, (fits, allowed) in _ATTEMPT_FIELDS.items():
            if name not in attempt:
                return f"attempts[{i}]: missing field {name!r}"
            if not fits(attempt[name]):
                return f"attempts[{i}].{name}: expected {allowed}, got {str(attempt[name])[:40]!r}"
    return None


_SUBTEST_FIELDS = {"number": int, "name": str, "status": str, "detail": str, "section": str, "expected": str}


def _subtests_problem(subtests: list) -> str | None:
    """Why a cell's subtest records (maybe another machine's) do not fit, or None."""
    for i, sub in enumerate(subtests):
        where = f"subtests[{i}]"
        if not isinstance(sub, dict):
            return f"{where}: expected an object"
        if unknown := sorted(set(sub) - set(_SUBTEST_FIELDS)):
            return f"{where}: unknown field {unknown[0]!r}"
        if missing := [name for name in _SUBTEST_FIELDS if name not in sub and name != "expected"]:
            return f"{where}: missing field {missing[0]!r}"
        for name, kind in _SUBTEST_FIELDS.items():
            value = sub.get(name, "")
            if not isinstance(value, kind) or isinstance(value, bool):
                return f"{where}.{name}: expected {'an integer' if kind is int else 'a string'}, got {str(value)[:40]!r}"
        if sub["status"] not in SUBTEST_STATUSES:
            return f"{where}.status: {sub['status']!r} is not one of {', '.join(SUBTEST_STATUSES)}"
    return None


# Digits are bounded: int() of more than 4300 digits raises, and the line is the guest's.
_RESULT_LINE = re.compile(r"^result:((?:\s+[A-Za-z_][\w.]{0,63}=-?[0-9]{1,18}(?:\.[0-9]{1,18})?)+)\s*$")


def parse_metrics(stdout: str) -> dict[str, float]:
    """The numbers of a test's last "result: key=value ..." line (e.g. iterations=1200).

    Only whole lines of numeric key=value pairs count, so stray output cannot forge one.
    """
    for line in reversed(stdout.splitlines()):
        m = _RESULT_LINE.match(line.strip())
        if m:
            pairs = (item.split("=", 1) for item in m.group(1).split())
            return {k: (float(v) if "." in v else int(v)) for k, v in pairs}
    return {}


def _combine_metrics(all_metrics: list[dict[str, float]]) -> dict[str, float]:
    """Counts and durations add up over attempts; a first_* metric (the time of a first
    event, -1 when it never happened) is the earliest one that happened."""
    combined: dict[str, float] = {}
    for metrics in all_metrics:
        for key, value in metrics.items():
            if key.startswith("first_"):
                seen = [v for v in (combined.get(key, -1), value) if v >= 0]
                combined[key] = min(seen) if seen else -1
            else:
                combined[key] = combined.get(key, 0) + value
    return combined


def combine_attempts(attempts: list[CellResult]) -> CellResult:
    """One cell from the attempts of a repeated testcase (a single attempt is returned as is)."""
    if len(attempts) == 1:
        return attempts[0]
    status = deciding_status([a.status for a in attempts])
    deciding = next(a for a in attempts if a.status == status)
    count = sum(a.status == status for a in attempts)
    cell = CellResult(**{**deciding.to_dict(), "attempts": [], "rate": f"{status} {count}/{len(attempts)}"})
    cell.message = f"{deciding.message} ({cell.rate})"
    cell.duration_s = round(sum(a.duration_s for a in attempts), 3)
    cell.kernel_messages = [m for a in attempts for m in a.kernel_messages]
    cell.kernel_excerpts = [e for a in attempts for e in a.kernel_excerpts]
    cell.metrics = _combine_metrics([a.metrics for a in attempts])
    cell.attempts = [{"attempt": n, "status": a.status, "exit_code": a.exit_code, "duration_s": a.duration_s,
                      "message": a.message, "metrics": a.metrics, "logs": a.logs}
                     for n, a in enumerate(attempts, 1)]
    return cell


def run_exit_code(cells: list[CellResult]) -> int:
    """The run's exit code from its cells' statuses (lab.status has the table)."""
    return worst_exit_code({c.status for c in cells})
