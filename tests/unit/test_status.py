"""One status type (lab.status): each report asks it, and they agree with each other."""

import pytest

from lab import history
from lab.exitcodes import FINDING, OK, PROBLEM
from lab.report.compare import _section
from lab.results import CellResult, combine_attempts, run_exit_code
from lab.status import ERRORING, FAILING, GOOD, KNOWN_ERROR, SKIPPED, SUBTEST_STATUSES, Status


def cell(status: str) -> CellResult:
    return CellResult("i386-pae", "6.1", "swp_exclusive", status, "")


@pytest.mark.parametrize("status", list(Status))
def test_the_places_that_classify_a_status_agree(status):
    # A finding is exactly what fails for compare and Jenkins; a problem is exactly an unknown ERROR.
    assert (status.exit_code == FINDING) == (status.trend == FAILING) == (status.junit == "failure")
    assert (status.exit_code == PROBLEM) == (status.trend == ERRORING) == (status.junit == "error")
    assert (status.junit is None) == (status is Status.PASS), "only a pass leaves no element for Jenkins"
    assert status.answered == (status.trend in (GOOD, FAILING) and status is not Status.TIMEOUT)
    assert run_exit_code([cell(status)]) == status.exit_code


def test_letters_and_colours_tell_every_status_apart():
    assert len({s.letter for s in Status}) == len({s.colour for s in Status}) == len({s.ansi for s in Status}) == 8


def test_a_skip_and_a_known_error_are_neither_good_nor_bad():
    assert (Status.SKIP.trend, Status.XERROR.trend) == (SKIPPED, KNOWN_ERROR)
    assert Status.SKIP.exit_code == Status.XERROR.exit_code == OK
    # History used to call both "good"; compare never did: a cell that leaves PASS for
    # either and comes back is flaky now, as compare always reported the move.
    assert history._flaky([cell("PASS"), cell("SKIP"), cell("PASS")])
    assert history._flaky([cell("PASS"), cell("XERROR"), cell("PASS")])
    assert _section(cell("PASS"), cell("SKIP")) == "other" and _section(cell("XERROR"), cell("PASS")) == "newly_pass"


def test_the_failure_rate_counts_answers_only():
    assert [s for s in Status if s.answered] == [Status.PASS, Status.FAIL, Status.XFAIL, Status.XPASS]
    assert [s for s in Status if s.failed] == [Status.FAIL, Status.XFAIL]
    assert history._failure_rate([cell("XFAIL"), cell("SKIP"), cell("XPASS"), cell("ERROR")]) == "FAIL 1/2"


def test_the_worst_attempt_decides_a_repeated_cell():
    order = ["FAIL", "XPASS", "TIMEOUT", "ERROR", "XERROR", "XFAIL", "PASS", "SKIP"]
    for i, status in enumerate(order[:-1]):
        combined = combine_attempts([cell(s) for s in reversed(order[i:])])
        assert combined.status is Status(status) and combined.rate == f"{status} 1/{len(order) - i}"


def test_a_status_is_a_member_whatever_sets_it_and_an_unknown_word_is_refused():
    result = cell("PASS")
    result.status = "XFAIL"
    assert result.status is Status.XFAIL and result.outcome is Status.FAIL
    with pytest.raises(ValueError, match="unknown status 'MAYBE'"):
        result.status = "MAYBE"
    assert set(SUBTEST_STATUSES) == {Status.PASS, Status.FAIL, Status.SKIP, Status.XFAIL, Status.XPASS}
