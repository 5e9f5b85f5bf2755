"""A cell's (or a subtest's) status, and everything each report needs to know about it.

Every place that classifies statuses asks a member of `Status`: the run's exit code,
combining repeated attempts, the failure rate over attempts, compare, history, JUnit,
the terminal's and the HTML page's colours. A new status is one row of `_TRAITS`.

A Status is a str (StrEnum): journals and results.json hold the plain word, and old
ones read back unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from lab.exitcodes import FINDING, OK, PROBLEM


class Status(StrEnum):
    PASS = "PASS"
    FAIL = "FAIL"
    XFAIL = "XFAIL"  # a FAIL the configs expect
    XPASS = "XPASS"  # a PASS where the configs expect a FAIL or an ERROR
    SKIP = "SKIP"  # the test does not apply here
    ERROR = "ERROR"  # the lab got no answer (build, boot, SSH, push, guest crash)
    XERROR = "XERROR"  # an ERROR the configs expect (a known build or boot failure)
    TIMEOUT = "TIMEOUT"  # the test ran past its deadline

    @property
    def traits(self) -> Traits:
        return _TRAITS[self]

    @property
    def outcome(self) -> Status:
        """What the test itself said, before an expectation renamed it (XFAIL -> FAIL)."""
        return self.traits.outcome or self

    @property
    def answered(self) -> bool:
        """The test gave a verdict (pass or fail): a failure rate counts these."""
        return self.outcome in (Status.PASS, Status.FAIL)

    @property
    def failed(self) -> bool:
        """A verdict of failure, expected or not: a racy test's failure rate counts these."""
        return self.outcome is Status.FAIL

    @property
    def exit_code(self) -> int:
        return self.traits.exit_code

    @property
    def trend(self) -> str:
        """What the status means to someone reading two runs (compare) or many (history)."""
        return self.traits.trend

    @property
    def junit(self) -> str | None:
        return self.traits.junit

    @property
    def letter(self) -> str:
        return self.traits.letter

    @property
    def ansi(self) -> str:
        return self.traits.ansi

    @property
    def colour(self) -> str:
        return self.traits.colour

    @property
    def legend(self) -> str:
        return self.traits.legend

    @classmethod
    def parse(cls, word: str) -> Status | None:
        """The member named `word`, or None for anything else (a journal's, another machine's)."""
        return cls.__members__.get(word) if isinstance(word, str) else None


# Trends, in the order compare's sections name them.
GOOD = "good"  # the answer the configs call right
FAILING = "failing"  # a finding: the exit code says 1
ERRORING = "erroring"  # no answer, and none was expected
KNOWN_ERROR = "known error"  # no answer, as the configs declare
SKIPPED = "skipped"  # the test does not apply: neither good nor bad


@dataclass(frozen=True)
class Traits:
    exit_code: int  # the run's exit code is its worst cell's
    trend: str
    junit: str | None  # the JUnit child element: failure, error, skipped; None for a pass
    decides: int  # in combining repeated attempts, the lowest rank among them decides the cell
    letter: str  # a night in a history strip
    ansi: str  # SGR code for a terminal
    colour: str  # background in the HTML pages (text stays dark)
    legend: str
    outcome: Status | None = None  # the status before an expectation renamed it


_TRAITS: dict[Status, Traits] = {
    # A FAIL decides a repeated cell even if other attempts passed; an infrastructure
    # ERROR never becomes a FAIL.
    Status.FAIL: Traits(FINDING, FAILING, "failure", 0, "F", "1;31", "#f08080",
                        "the test found the bug, and no FAIL is expected here"),
    Status.XPASS: Traits(FINDING, FAILING, "failure", 1, "X", "1;35", "#f2a2d4",
                         "passed where a FAIL or an ERROR is expected: look at it (fixed? update the expectation)",
                         outcome=Status.PASS),
    Status.TIMEOUT: Traits(FINDING, FAILING, "failure", 2, "T", "35", "#d6b4f0", "the test ran past its deadline"),
    Status.ERROR: Traits(PROBLEM, ERRORING, "error", 3, "E", "1;33", "#f7c873",
                         "the lab got no answer: build, boot, SSH or a guest crash; never a test verdict"),
    # Known and declared: not an error for Jenkins, but what broke and why stays visible.
    Status.XERROR: Traits(OK, KNOWN_ERROR, "skipped", 4, "e", "33", "#f3e3c3",
                          "a known ERROR, with the message and reason configs/lab.toml declares; "
                          "not counted as a failure", outcome=Status.ERROR),
    # Not a failure for Jenkins, but the expectation and its reason stay visible.
    Status.XFAIL: Traits(OK, GOOD, "skipped", 5, "x", "36", "#c9dff2",
                         "failed as configs/lab.toml expects (a known-bad kernel); not counted as a failure",
                         outcome=Status.FAIL),
    Status.PASS: Traits(OK, GOOD, None, 6, "P", "32", "#b7e4b0", "the test passed"),
    Status.SKIP: Traits(OK, SKIPPED, "skipped", 7, "S", "2", "#d9d9d9",
                        "the test does not apply here (it exited 4)"),
}

# The order reports list statuses in (legends, counts).
SHOWN_ORDER = (Status.PASS, Status.FAIL, Status.XFAIL, Status.XPASS, Status.SKIP, Status.ERROR, Status.XERROR,
               Status.TIMEOUT)
# A kselftest's subtest has one of these (TAP gives no ERROR or TIMEOUT), in the order its counts are shown.
SUBTEST_STATUSES = (Status.PASS, Status.FAIL, Status.SKIP, Status.XFAIL, Status.XPASS)


def deciding_status(statuses: list[Status]) -> Status:
    """The status that decides a cell repeated with these attempt statuses."""
    return min(statuses, key=lambda s: s.traits.decides)


def worst_exit_code(statuses: set[Status]) -> int:
    """0: nothing unexpected; 1: an unexpected FAIL, an XPASS or a TIMEOUT; 2: an ERROR."""
    return max((s.exit_code for s in statuses), default=OK)
