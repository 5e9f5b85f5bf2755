"""Known ERRORs: [[expect]] status = "ERROR" with the lab's error code, and maybe a
pattern of text that is not the lab's. A matching ERROR is XERROR (exit 0); another
ERROR stays ERROR (exit 2); a cell that now runs is reported as fixed (a PASS is
XPASS, exit 1)."""

import xml.etree.ElementTree as ET

import pytest

from conftest import REPO
from lab.config import load_lab
from lab.schema import Expectation
from lab.errors import ConfigError, Failure
from lab.journal import Journal
from lab.plan import plan_jobs
from lab.report import write_reports
from lab.report.terminal import render_text
from lab.results import CellResult, run_exit_code
from lab.runner import Runner

# What Debian's 6.12.117 build for sparc64 really says (from a run's results.json).
SPARC64_BUILD_ERROR = (
    "kernel 6.12 for sparc64 failed to build: include/linux/compiler_types.h:543:45: error: call to "
    "‘__compiletime_assert_371’ declared with attribute error: BUILD_BUG_ON failed: 21 - 1 != HWEIGHT32( "
    "(VALID_OPEN_FLAGS & ~(O_NONBLOCK | O_NDELAY)) | __FMODE_EXEC | __FMODE_NONOTIFY) "
    "(log: /root/.cache/qemu-lab/kernels/938894489b55dfde9303/build.log)")
KNOWN = Expectation(reason="fcntl BUILD_BUG_ON", status="ERROR", error="build.failed",
                    message=r"BUILD_BUG_ON failed: .*HWEIGHT32")
NO_SSH = Expectation(reason="virtio-net-ccw", status="ERROR", error="boot.no-ssh")


def _cell(status: str, message: str, code: str = "") -> CellResult:
    return CellResult("sparc64", "6.12", "swp_exclusive", status, message,
                      error_code=code or ("build.failed" if status == "ERROR" else ""))


def test_an_error_with_the_declared_message_is_known_and_passes_the_run():
    cell = _cell("ERROR", SPARC64_BUILD_ERROR)
    cell.apply_expectations([KNOWN])
    assert (cell.status, cell.outcome, cell.expected, cell.expected_reason) == \
        ("XERROR", "ERROR", "ERROR", "fcntl BUILD_BUG_ON")
    assert cell.message == SPARC64_BUILD_ERROR
    assert run_exit_code([cell]) == 0


def test_an_error_with_another_message_stays_an_error_and_says_so():
    cell = _cell("ERROR", "kernel 6.12 for sparc64 failed to build: arch/sparc/kernel/head_64.S:12: error: x")
    cell.apply_expectations([KNOWN])
    assert (cell.status, cell.expected) == ("ERROR", "ERROR")
    assert cell.message.endswith("(not the known ERROR: its message does not match "
                                 "/BUILD_BUG_ON failed: .*HWEIGHT32/ of [[expect]] \"fcntl BUILD_BUG_ON\")")
    assert run_exit_code([cell]) == 2


def test_a_known_error_is_told_by_its_code_whatever_the_lab_words_it():
    for wording in ("no SSH banner on 127.0.0.1:2222 within 60 s (timed out)", "SSH never answered on port 2222"):
        cell = _cell("ERROR", wording, code="boot.no-ssh")
        cell.apply_expectations([NO_SSH])
        assert cell.status == "XERROR", wording
    other = _cell("ERROR", "no SSH banner on 127.0.0.1:2222 within 60 s", code="boot.failed")
    other.apply_expectations([NO_SSH])
    assert other.status == "ERROR" and other.message.endswith(
        "(not the known ERROR: its code is boot.failed, [[expect]] \"virtio-net-ccw\" declares boot.no-ssh)")
    unknown = _cell("ERROR", "SSH never answered")
    unknown.error_code = ""  # a journal written before codes
    unknown.apply_expectations([NO_SSH])
    assert unknown.status == "ERROR" and "its code is none" in unknown.message


def test_a_cell_that_now_runs_is_reported_fixed():
    passed = _cell("PASS", "PASS: page was not replaced during COW")
    passed.apply_expectations([KNOWN], racy=True)  # even a race: the cell ran, so the ERROR is gone
    assert (passed.status, passed.outcome, passed.expected) == ("XPASS", "PASS", "ERROR")
    assert passed.message.startswith("expected ERROR (fcntl BUILD_BUG_ON) but the cell ran: fixed, "
                                     "update the expectation: PASS")
    failed = _cell("FAIL", "FAIL: page was replaced during COW")
    failed.apply_expectations([KNOWN])
    assert failed.status == "FAIL" and failed.message.endswith("fixed, update the expectation)")
    assert run_exit_code([passed]) == 1 and run_exit_code([failed]) == 1


def test_an_expected_error_and_an_expected_fail_each_apply_to_their_outcome():
    fails = Expectation("swp_exclusive", "marker landed in 6.3")
    error = _cell("ERROR", SPARC64_BUILD_ERROR)
    error.apply_expectations([fails, KNOWN])
    failed = _cell("FAIL", "FAIL: page was replaced during COW")
    failed.apply_expectations([fails, KNOWN])
    assert (error.status, failed.status) == ("XERROR", "XFAIL")
    assert run_exit_code([error, failed]) == 0


def test_the_default_plan_declares_the_sparc64_build_failure_for_every_testcase():
    lab = load_lab(REPO)
    for case in lab.testcases:
        (known,) = [e for e in lab.expectations_for("sparc64", "6.12", case) if e.status == "ERROR"]
        assert known.matches_error("build.failed", SPARC64_BUILD_ERROR)
        assert not known.matches_error("build.timeout", SPARC64_BUILD_ERROR)
    assert not any(e.status == "ERROR" for e in lab.expectations_for("sparc64", "6.12-bpo", "swp_exclusive"))
    assert not any(e.status == "ERROR" for e in lab.expectations_for("x86_64", "6.12", "swp_exclusive"))


def _record_build_error(lab, tmp_path) -> list[CellResult]:
    """What the runner records for a job whose kernel failed to build: no guest starts."""
    from lab.artifacts import Artifacts
    (job,) = plan_jobs(lab, ["sparc64"], ["6.12"], ["swp_exclusive", "odirect_swapout"])
    journal = Journal(tmp_path / "journal.jsonl")
    Runner(lab, tmp_path, journal).run_job(job, Artifacts(error=Failure("build.failed", SPARC64_BUILD_ERROR)))
    return Journal.read(tmp_path / "journal.jsonl")


def test_the_runner_records_the_known_build_failure_as_xerror(tmp_path):
    cells = _record_build_error(load_lab(REPO), tmp_path)
    assert [(c.testcase, c.status) for c in cells] == [("swp_exclusive", "XERROR"), ("odirect_swapout", "XERROR")]
    assert {c.error_code for c in cells} == {"build.failed"}, "the journal keeps the code"
    assert run_exit_code(cells) == 0


def test_a_changed_error_message_makes_the_run_exit_2_again(repo_copy, tmp_path):
    """The same failure with an edited pattern (as if the compiler now said something else)."""
    lab_toml = repo_copy / "configs/lab.toml"
    text = lab_toml.read_text()
    assert 'message = "BUILD_BUG_ON failed: .*HWEIGHT32"' in text
    lab_toml.write_text(text.replace("BUILD_BUG_ON failed: .*HWEIGHT32", "undefined reference to"))
    cells = _record_build_error(load_lab(repo_copy), tmp_path)
    assert {c.status for c in cells} == {"ERROR"}
    assert all("not the known ERROR" in c.message for c in cells)
    assert run_exit_code(cells) == 2


def test_reports_show_a_known_error_with_its_reason(tmp_path):
    cell = _cell("ERROR", SPARC64_BUILD_ERROR)
    cell.apply_expectations([KNOWN])
    meta = {"run_id": "r1", "started": "2026-01-01T00:00:00Z", "finished": "", "arches": ["sparc64"],
            "kernels": ["6.12"], "testcases": ["swp_exclusive"], "jobs": [["sparc64", "6.12"]]}
    matrix = write_reports(tmp_path, [cell], meta)
    text = render_text(matrix)
    assert "| swp_exclusive | XERROR         |" in text
    assert "[expected ERROR, actual ERROR: fcntl BUILD_BUG_ON]" in text
    (case,) = ET.parse(tmp_path / "junit.xml").getroot().iter("testcase")
    assert case.find("error") is None and case.find("failure") is None
    assert case.find("skipped").text.startswith(
        "XERROR: known ERROR build.failed (fcntl BUILD_BUG_ON): kernel 6.12 for sparc64")
    html = (tmp_path / "matrix.html").read_text()
    assert 'data-status="XERROR"' in html and "a known ERROR" in html


@pytest.mark.parametrize("entry, complaint", [
    ('status = "ERROR"\nreason = "r"', r"expect\[\d+\]\.error is missing: an expected ERROR names the lab's "
                                         r"error code, one of build.failed, "),
    ('status = "ERROR"\nreason = "r"\nmessage = "no SSH banner"', r"expect\[\d+\]\.error is missing"),
    ('status = "ERROR"\nreason = "r"\nerror = "boot.nossh"', r"expect\[\d+\]\.error: .*boot.no-ssh"),
    ('testcase = "swp_exclusive"\nreason = "r"\nerror = "boot.no-ssh"', r"expect\[\d+\]\.error: only an expected ERROR"),
    ('status = "ERROR"\nreason = "r"\nerror = "build.failed"\nmessage = "(unclosed"',
     r"expect\[\d+\]\.message: '\(unclosed' is not a regular"),
    ('testcase = "swp_exclusive"\nreason = "r"\nmessage = "x"', r"expect\[\d+\]\.message: only an expected ERROR"),
    ('reason = "r"', r"expect\[\d+\]\.testcase is missing: a FAIL is one testcase's finding"),
    ('status = "ERROR"\nreason = " "\nerror = "build.failed"', r"expect\[\d+\]\.reason is missing or empty"),
    ('status = "SKIP"\nreason = "r"', r"expect\[\d+\]\.status: .*FAIL, ERROR"),
    ('testcase = "cow"\nsubtests = ["a*"]\nstatus = "ERROR"\nreason = "r"\nerror = "guest.crash"',
     r"expect\[\d+\]\.subtests: an ERROR is the whole cell's"),
])
def test_bad_known_error_entries_are_one_clear_line(repo_copy, entry, complaint):
    lab_toml = repo_copy / "configs/lab.toml"
    lab_toml.write_text(lab_toml.read_text() + f"\n[[expect]]\n{entry}\n")
    with pytest.raises(ConfigError, match=complaint):
        load_lab(repo_copy)


def test_every_code_is_documented_and_every_error_class_has_one():
    import lab.errors as errors
    from lab.debian_kernels import MissingModule
    from lab.procs import CommandTimeout
    classes = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, errors.InfraError)]
    assert {c.code for c in [*classes, MissingModule, CommandTimeout]} <= set(errors.ERROR_CODES)
    assert all(errors.CODE_PATTERN.fullmatch(code) for code in errors.ERROR_CODES)
    with pytest.raises(ValueError, match="unknown error code"):
        errors.BuildError("x", code="build.broke")


def test_a_journal_from_before_codes_still_reads_and_a_forged_code_does_not(tmp_path):
    import json
    record = _cell("ERROR", "no SSH banner").to_dict()
    del record["error_code"]
    old = tmp_path / "old.jsonl"
    old.write_text(json.dumps(record) + "\n")
    (cell,) = Journal.read(old)
    assert cell.status == "ERROR" and cell.error_code == ""
    forged = tmp_path / "forged.jsonl"
    forged.write_text(json.dumps({**record, "error_code": "../../etc\x1b[2J"}) + "\n")
    with pytest.raises(Exception, match=r"error_code: expected empty or an error code"):
        Journal.read(forged)


def test_an_exit_code_that_is_no_verdict_has_its_code():
    from lab.cell import _judge_result
    from lab.remote import CommandResult
    cell = _cell("PASS", "")
    _judge_result(cell, CommandResult(exit_code=139, stdout="", stderr=""), 60)
    assert (cell.status, cell.error_code) == ("ERROR", "test.exit-code")
    _judge_result(cell, CommandResult(exit_code=0, stdout="PASS: ok\n", stderr=""), 60)
    assert (cell.status, cell.error_code) == ("PASS", "")


def test_the_readme_lists_every_code():
    from lab.errors import ERROR_CODES
    readme = (REPO / "README.md").read_text()
    assert [code for code in ERROR_CODES if f"| `{code}` | {ERROR_CODES[code]} |" not in readme] == []
