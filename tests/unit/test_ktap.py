"""kselftest TAP, subtest by subtest: statuses, unique stable names, sections, verdicts."""

import html
import re
from pathlib import Path

import pytest

from lab import ktap

COW = (Path(__file__).parent / "data" / "cow-excerpt.tap").read_text()


def test_each_subtest_is_named_by_its_run_line_and_gets_its_status():
    report = ktap.parse(COW)
    assert report.planned == 7 and report.totals["skip"] == 2 and report.bail_out is None
    assert [(s.number, s.name, s.status) for s in report.subtests] == [
        (1, "Basic COW after fork() ... with base page", "PASS"),
        (2, "Basic COW after fork() ... with swapped out base page", "PASS"),
        (3, "vmsplice() + unmap in child ... with base page", "XFAIL"),
        (4, "R/O-mapping a page registered as iouring fixed buffer ... with base page", "SKIP"),
        (5, "Basic COW ... with shared zeropage", "FAIL"),
        # two results after one [RUN]: the description tells them apart
        (6, "Basic COW ... with swapped out base page / MADV_PAGEOUT did not work, is swap enabled?", "SKIP"),
        (7, "Basic COW ... with swapped out base page / No leak from parent into child", "PASS"),
    ]
    assert report.subtests[3].detail == "io_uring_queue_init() failed"
    assert len({s.name for s in report.subtests}) == len(report.subtests)


def test_sections_come_from_context_lines_that_head_a_run():
    sections = [s.section for s in ktap.parse(COW).subtests]
    assert sections[:4] == ["Anonymous memory tests in private mappings"] * 4
    assert sections[4:] == ["Non-anonymous memory tests in private mappings"] * 3


def test_a_name_does_not_change_when_the_result_does():
    passing = ktap.parse("1..1\n# [RUN] Basic COW ... with THP\nok 1 No leak from parent into child\n")
    skipped = ktap.parse("1..1\n# [RUN] Basic COW ... with THP\nok 1 # SKIP MADV_PAGEOUT did not work\n")
    assert passing.subtests[0].name == skipped.subtests[0].name == "Basic COW ... with THP"


def test_names_without_context_get_a_counter_only_where_they_repeat():
    report = ktap.parse("1..3\nok 1 first\nok 2 first\nok 3 other\n")
    assert [s.name for s in report.subtests] == ["first", "first #2", "other"]


def test_the_verdict_follows_the_subtests():
    assert ktap.parse(COW).verdict() == (
        "FAIL", "fail 1 · pass 3 · skip 2 · xfail 1; first: Basic COW ... with shared zeropage: "
                "No leak from parent into child")
    assert ktap.parse("1..2\nok 1 a\nok 2 # XFAIL b\n").verdict() == ("PASS", "pass 1 · xfail 1")
    assert ktap.parse("1..2\nok 1 # SKIP x\nok 2 # SKIP y\n").verdict() == ("SKIP", "skip 2; first: x")
    assert ktap.parse("1..1\nok 1 # XPASS z\n").verdict()[0] == "XPASS"
    assert ktap.parse("no tap here\n").verdict() is None


def test_a_run_cut_short_is_never_pass_and_keeps_what_it_saw():
    cut = ktap.parse("TAP version 13\n1..5\n# [RUN] a\nok 1 x\n# [RUN] b\nok 2 y\n")
    assert [s.name for s in cut.subtests] == ["a", "b"]
    assert cut.verdict() == ("FAIL", "pass 2; only 2 of 5 planned subtests reported")
    bailed = ktap.parse("1..3\nok 1 x\nBail out! could not write /sys/kernel/mm/transparent_hugepage/enabled\n")
    assert bailed.verdict() == ("FAIL", "pass 1; Bail out! could not write /sys/kernel/mm/transparent_hugepage/enabled")


def _cell(exit_code, status):
    from lab.results import CellResult
    return CellResult("i386-pae", "6.12", "cow", status, "", exit_code=exit_code)


def test_a_kselftest_cell_takes_its_status_from_the_subtests(tmp_path):
    from lab.cell import _judge_subtests
    log = tmp_path / "stdout.txt"
    log.write_text(COW)
    cell = _cell(1, "FAIL")
    _judge_subtests(cell, log, ())
    assert cell.status == "FAIL" and len(cell.subtests) == 7 and cell.subtests[4]["status"] == "FAIL"
    log.write_text("1..2\nok 1 a\nok 2 # SKIP b\n")
    cell = _cell(1, "FAIL")
    _judge_subtests(cell, log, ())
    assert cell.status == "FAIL" and cell.message.startswith("exit code 1 although the subtests say PASS")
    log.write_text("1..3\n# [RUN] a\nok 1 x\n")
    cell = _cell(None, "TIMEOUT")
    cell.message = "no result within 60 s"
    _judge_subtests(cell, log, ())
    assert cell.status == "TIMEOUT" and cell.message == "no result within 60 s (after 1 subtests)"
    assert [s["name"] for s in cell.subtests] == ["a"]


PANIC = "[  12.3] Kernel panic - not syncing: Aiee, killing interrupt handler!\n"


def _crashed_cell(log, exit_code, crash_is_failure=False):
    """A kselftest cell judged as run_cell judges it when the guest panicked under the test."""
    import dataclasses
    from lab.cell import _judge_crash, _judge_subtests
    from lab.config import load_lab
    case = dataclasses.replace(load_lab().testcases["cow"], crash_is_failure=crash_is_failure)
    cell = _cell(exit_code, "PASS" if exit_code == 0 else "FAIL")
    assert _judge_crash(cell, "booted\n" + PANIC, False, case)
    _judge_subtests(cell, log, (), final=True)
    return cell


def test_a_crash_keeps_the_subtests_seen_and_the_crash_decides_the_cell(tmp_path):
    log = tmp_path / "stdout.txt"
    log.write_text("1..108\n# [RUN] a\nok 1 x\n# [RUN] b\nnot ok 2 y\n# [RUN] c\n")
    cell = _crashed_cell(log, exit_code=1)  # the subtests alone would make it FAIL
    assert (cell.status, cell.error_code) == ("ERROR", "guest.crash")
    assert cell.message == ("guest crashed during the test: Kernel panic - not syncing: Aiee, killing interrupt "
                            "handler! (after 2 subtests)")
    assert [(s["name"], s["status"]) for s in cell.subtests] == [("a", "PASS"), ("b", "FAIL")]
    # Real: cow on ppc32 (e500) Linux 6.12.117, whose guest panicked in the 9th subtest.
    log.write_text((DATA / "cow-ppc32-6.12-crash.tap").read_text())
    cell = _crashed_cell(log, exit_code=None)
    assert cell.status == "ERROR" and cell.message.endswith("(after 8 subtests)")
    assert [s["status"] for s in cell.subtests].count("FAIL") == 1
    assert cell.subtests[6]["name"].startswith("Basic COW after fork() ... with hugetlb (4096 kB)")
    # A testcase for which a crash is the finding: FAIL stays FAIL, whatever the subtests say.
    log.write_text("1..1\n# [RUN] a\nok 1 x\n")
    cell = _crashed_cell(log, exit_code=0, crash_is_failure=True)  # the subtests alone would make it PASS
    assert (cell.status, cell.error_code) == ("FAIL", "")


def test_a_kselftest_cell_whose_only_failures_are_expected_is_xfail_with_the_reason(tmp_path):
    from lab.cell import _judge_subtests
    from lab.schema import Expectation
    log = tmp_path / "stdout.txt"
    log.write_text(COW)
    cell = _cell(1, "FAIL")
    expected = Expectation("cow", "zeropage on 6.1", subtests=("Basic COW ... with shared zeropage",))
    _judge_subtests(cell, log, (expected,))
    assert (cell.status, cell.expected, cell.expected_reason) == ("XFAIL", "FAIL", "zeropage on 6.1")
    assert cell.subtests[4]["status"] == "XFAIL" and cell.subtests[4]["expected"] == "zeropage on 6.1"


def test_the_matrix_cell_shows_the_subtest_counts(tmp_path):
    from lab.report import write_reports
    from lab.results import CellResult
    subtests = [{"number": n, "name": f"s{n}", "status": s, "detail": "", "section": ""}
                for n, s in enumerate(["PASS", "PASS", "FAIL", "SKIP"], 1)]
    cell = CellResult("i386-pae", "6.12", "cow", "FAIL", "fail 1", subtests=subtests)
    assert cell.subtest_counts == "ok 2 · fail 1 · skip 1"
    meta = {"run_id": "r", "started": "", "finished": "", "arches": ["i386-pae"], "kernels": ["6.12"],
            "testcases": ["cow"], "jobs": [["i386-pae", "6.12"]]}
    write_reports(tmp_path, [cell], meta)
    assert "ok 2 · fail 1 · skip 1" in (tmp_path / "matrix.html").read_text()


def test_the_cell_page_lists_every_subtest_under_its_section_with_filters(tmp_path):
    from lab.cell import _judge_subtests
    from lab.schema import Expectation
    from lab.report import write_reports
    from lab.rundir import cell_page
    log = tmp_path / "stdout.txt"
    log.write_text(COW)
    cell = _cell(1, "FAIL")
    _judge_subtests(cell, log, (Expectation("cow", "<known>", subtests=("*zeropage",)),))
    meta = {"run_id": "r", "started": "", "finished": "", "arches": ["i386-pae"], "kernels": ["6.12"],
            "testcases": ["cow"], "jobs": [["i386-pae", "6.12"]]}
    write_reports(tmp_path, [cell], meta)
    page = (tmp_path / cell_page("i386-pae", "6.12", "cow")).read_text()
    headings = re.findall(r'<h3 class="section">(.*?)</h3>', page)
    assert headings == [html.escape(s["section"], quote=False) for s in cell.subtests
                        if s["number"] == 1 or s["section"] != cell.subtests[s["number"] - 2]["section"]]
    assert page.count('<tr class="subtest"') == len(cell.subtests) == 7
    assert "expected FAIL: &lt;known&gt;" in page and 'value="XFAIL"' in page and 'value="XPASS"' not in page


def test_expected_subtests_are_xfail_and_a_cell_failing_only_those_is_xfail():
    report = ktap.parse(COW)
    report.expect(("Basic COW * with shared zeropage",), "no zeropage pin on 6.1")
    status, message = report.verdict()
    assert status == "XFAIL" and "(no zeropage pin on 6.1)" in message
    marked = [s for s in report.subtests if s.expected]
    assert [(s.name, s.status) for s in marked] == [("Basic COW ... with shared zeropage", "XFAIL")]


def test_an_expected_subtest_that_passes_is_xpass_and_an_unexpected_failure_still_fails():
    report = ktap.parse("1..3\n# [RUN] a\nok 1 x\n# [RUN] b\nnot ok 2 y\n# [RUN] c\nok 3 z # SKIP n\n")
    report.expect(("a", "c"), "known")
    assert [s.status for s in report.subtests] == ["XPASS", "FAIL", "SKIP"]
    assert report.verdict()[0] == "FAIL"
    passing = ktap.parse("1..1\n# [RUN] a\nok 1 x\n")
    passing.expect(("a",), "known")
    assert passing.verdict() == ("XPASS", "xpass 1; first: a passed (expected FAIL: known)")


def test_the_first_expectation_that_matches_a_subtest_decides_it():
    report = ktap.parse("1..1\n# [RUN] a b\nnot ok 1 x\n")
    report.expect(("a*",), "first")
    report.expect(("a b",), "second")
    assert report.subtests[0].expected == "first" and report.subtests[0].status == "XFAIL"


DATA = Path(__file__).parent / "data"
# Captured from real guests (lab run --test cow,mkdirty, Linux 6.12.117, binaries built from 6.12).
CAPTURES = ["cow-i386-pae-6.12.tap", "cow-arm64-6.12.tap", "mkdirty-i386-pae-6.12.tap"]


@pytest.mark.parametrize("capture", CAPTURES)
def test_real_captures_give_every_planned_subtest_a_unique_name_and_agree_with_the_totals(capture):
    report = ktap.parse((DATA / capture).read_text())
    names = [s.name for s in report.subtests]
    assert len(names) == report.planned and len(set(names)) == len(names)
    counts = report.counts()
    assert {k: v for k, v in report.totals.items() if v} == {s.lower(): n for s, n in counts.items() if s != "PASS"} | (
        {"pass": counts["PASS"]} if counts.get("PASS") else {})
    assert report.verdict()[0] == "PASS"


def test_real_cow_names_come_from_the_run_lines_and_sections_from_the_headings():
    report = ktap.parse((DATA / "cow-arm64-6.12.tap").read_text())
    by_name = {s.name: s for s in report.subtests}
    swapped = by_name["Basic COW after fork() ... with swapped out base page"]
    assert (swapped.status, swapped.detail) == ("PASS", "No leak from parent into child")
    assert swapped.section == "Anonymous memory tests in private mappings"
    assert [s.section for s in report.subtests][-1] == "Non-anonymous memory tests in private mappings"


def test_real_mkdirty_names_come_from_its_info_lines_whatever_the_result():
    report = ktap.parse((DATA / "mkdirty-i386-pae-6.12.tap").read_text())
    assert [s.name for s in report.subtests] == [
        "PTRACE write access", "PTRACE write access to THP", "Page migration", "Page migration of THP",
        "PTE-mapping a THP", "UFFDIO_COPY"]


def test_a_real_run_cut_short_by_a_crash_keeps_what_it_saw(tmp_path):
    from lab.cell import _judge_subtests
    lines = (DATA / "cow-arm64-6.12.tap").read_text().splitlines()
    cut = "\n".join(lines[:len(lines) // 2]) + "\n"
    report = ktap.parse(cut)
    assert 0 < len(report.subtests) < report.planned
    assert report.verdict()[0] == "FAIL" and "planned subtests reported" in report.verdict()[1]
    log = tmp_path / "stdout.txt"
    log.write_text(cut)
    cell = _cell(None, "ERROR")
    cell.message = "guest crashed during the test: Kernel panic"
    _judge_subtests(cell, log, ())
    assert cell.status == "ERROR" and cell.message.endswith(f"(after {len(report.subtests)} subtests)")


def test_a_real_bail_out_is_fail_with_its_reason():
    report = ktap.parse((DATA / "cow-bail-out-i386-pae-6.12.tap").read_text())
    assert report.subtests == [] and report.planned == 655
    assert report.verdict() == ("FAIL", "no subtests; Bail out! opening pagemap failed")


def test_a_closing_bail_out_after_only_expected_failures_is_xfail():
    """mkdirty ends with "Bail out! 2 out of 6 tests failed": with those two expected, the
    cell is XFAIL. A bail-out before the plan is done stays FAIL, expected or not."""
    text = (DATA / "mkdirty-sparc64-6.1.tap").read_text()  # real: sparc64, Linux 6.1.192
    report = ktap.parse(text)
    assert report.verdict()[0] == "FAIL"
    report.expect(("PTRACE write access*",), "sparc64 pte_mkdirty() sets the HW writable bit before 6.3")
    assert report.verdict()[0] == "XFAIL"
    cut = ktap.parse(text.split("# [INFO] Page migration\n")[0] + "Bail out! 2 out of 6 tests failed\n")
    cut.expect(("PTRACE write access*",), "known")
    assert cut.verdict() == ("FAIL", "xfail 2; Bail out! 2 out of 6 tests failed")


# Issue 27 item 13: a whole-test skip, and TAP's TODO read by what it means.
def test_an_empty_plan_with_skip_is_a_whole_test_skip_and_the_exit_code_wins(tmp_path):
    from lab.cell import _judge_subtests
    assert ktap.parse("TAP version 13\n1..0 # SKIP no hugetlb pages\n").verdict() == (
        "SKIP", "skipped whole: no hugetlb pages")
    assert ktap.parse("1..0\n").verdict() is None, "an empty plan alone: the exit code says it"
    log = tmp_path / "stdout.txt"
    for tap, exit_code, status in [("1..0 # SKIP no hugetlb pages\n", 4, "SKIP"),
                                   ("1..0 # SKIP no hugetlb pages\n", 0, "SKIP"),
                                   ("1..0 # SKIP no hugetlb pages\n", 1, "FAIL"),
                                   ("1..0\n", 4, "SKIP"), ("1..0\n", 1, "FAIL"), ("1..0\n", 0, "PASS")]:
        log.write_text(tap)
        cell = _cell(exit_code, {0: "PASS", 1: "FAIL", 4: "SKIP"}[exit_code])
        _judge_subtests(cell, log, ())
        assert cell.status == status, (tap, exit_code, cell.message)


def test_todo_is_an_expected_failure_only_when_it_fails():
    assert [s.status for s in ktap.parse("1..2\nnot ok 1 a # TODO later\nok 2 b # TODO later\n").subtests] == [
        "XFAIL", "XPASS"]


# Issue 27 item 8: guest text can make one cell ERROR, never the run.
def test_numbers_past_pythons_digit_limit_are_not_an_exception():
    report = ktap.parse("1..1\nok 1 a\n# Totals: fail:0 pass:" + "9" * 5000 + "\n1.." + "9" * 5000 + "\n"
                        "ok " + "7" * 5000 + " b\n")
    assert report.verdict() == ("PASS", "pass 1") and report.totals == {"fail": 0}


def test_a_long_line_of_spaces_is_read_in_linear_time():
    import time
    start = time.monotonic()
    ktap.parse(("# [RUN] x" + " " * 20_000 + "x\n") * 3 + ("#" + " " * 1_000_000 + "[INFO]\n") * 3)
    assert time.monotonic() - start < 2.0


def test_too_much_or_too_slow_tap_is_an_error_cell(tmp_path, monkeypatch):
    from lab.cell import _judge_subtests
    from lab.errors import GuestOutputError
    with pytest.raises(GuestOutputError, match="not read within 0 s"):
        ktap.parse("1..2\nok 1 a\n" * 1000, timeout_s=0.0)
    monkeypatch.setattr(ktap, "MAX_TAP_BYTES", 1 << 20)
    log = tmp_path / "stdout.txt"
    log.write_text("1..1\nok 1 a\n" + "# x\n" * (1 << 18))
    cell = _cell(0, "PASS")
    _judge_subtests(cell, log, ())
    assert cell.status == "ERROR" and "more than the 1 MiB of TAP" in cell.message
    assert cell.error_code == "guest.output"


def test_a_result_line_with_a_huge_number_is_no_metric():
    from lab.results import parse_metrics
    assert parse_metrics("result: iterations=" + "9" * 5000 + "\n") == {}
    assert parse_metrics("result: iterations=12 rate=1.5\n") == {"iterations": 12, "rate": 1.5}
