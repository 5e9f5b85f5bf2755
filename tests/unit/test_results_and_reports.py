import json
import xml.etree.ElementTree as ET

import pytest

from lab.errors import RunDataError
from lab.report import write_reports
from lab.report.terminal import render_text
from lab.cell import status_for_exit
from lab.journal import Journal
from lab.results import CellResult, run_exit_code

META = {"run_id": "r1", "started": "2026-01-01T00:00:00Z", "finished": "", "arches": ["i386-pae"],
        "kernels": ["6.1", "6.12"], "testcases": ["swp_exclusive", "other"],
        "jobs": [["i386-pae", "6.1"], ["i386-pae", "6.12"]]}


def _cells():
    return [
        CellResult("i386-pae", "6.1", "swp_exclusive", "FAIL", "FAIL: page was replaced during COW", exit_code=1,
                   duration_s=1.5, stdout="FAIL: page was replaced during COW\n<script>alert(1)</script>",
                   logs={"test_stdout": "logs/i386-pae/6.1/swp_exclusive/stdout.txt"}),
        CellResult("i386-pae", "6.12", "swp_exclusive", "PASS", "PASS: page was not replaced during COW",
                   exit_code=0, duration_s=1.2, kernel_messages=["WARNING: CPU: 0 PID: 1 at x"]),
        CellResult("i386-pae", "6.1", "other", "ERROR", "guest did not boot: Kernel panic - not syncing: <x>"),
        CellResult("i386-pae", "6.12", "other", "TIMEOUT", "no result within 60 s", duration_s=60.0),
    ]


def test_status_mapping():
    assert [status_for_exit(c) for c in (0, 1, 4, 3, 139, None)] == ["PASS", "FAIL", "SKIP", "ERROR", "ERROR", "TIMEOUT"]
    with pytest.raises(ValueError):
        CellResult("a", "k", "t", "MAYBE", "")


def test_exit_codes():
    ok = CellResult("a", "k", "t", "PASS", "")
    skip = CellResult("a", "k", "t", "SKIP", "")
    assert run_exit_code([ok, skip]) == 0
    assert run_exit_code([ok, CellResult("a", "k", "u", "TIMEOUT", "")]) == 1
    assert run_exit_code(_cells()) == 2


def test_journal_survives_truncated_last_line(tmp_path, capsys):
    journal = Journal(tmp_path / "journal.jsonl")
    for cell in _cells()[:2]:
        journal.append(cell)
    with journal.path.open("a") as fh:
        fh.write('{"arch": "i386-pae", "kern')  # a crash mid-write
    cells = Journal.read(journal.path)
    assert [c.key for c in cells] == [c.key for c in _cells()[:2]]
    assert "journal.jsonl:3: ignoring a cut-off journal line" in capsys.readouterr().err
    # The next run (--resume) appends on a fresh line: the cut-off line costs nothing more.
    journal.append(_cells()[2])
    assert [c.key for c in Journal.read(journal.path)] == [c.key for c in _cells()[:3]]


@pytest.mark.parametrize("record, problem", [
    ({"arch": "../../x", "kernel": "6.1", "testcase": "t", "status": "PASS", "message": ""},
     "arch: '../../x' is not a valid name"),
    ({"arch": "a", "kernel": ".hidden", "testcase": "t", "status": "PASS", "message": ""}, "kernel: '.hidden'"),
    ({"arch": "a", "kernel": "k", "testcase": "t/u", "status": "PASS", "message": ""}, "testcase: 't/u'"),
    ({"arch": "a", "kernel": "k", "testcase": "t", "status": "PASS", "message": "",
      "logs": {"console": "../../../root/.ssh/id_rsa"}}, "logs: '../../../root/.ssh/id_rsa' is not a path inside"),
    ({"arch": "a", "kernel": "k", "testcase": "t", "status": "PASS", "message": 3}, "message: expected a string"),
    ({"arch": "a", "kernel": "k", "testcase": "t", "status": "PASS", "message": "", "duration_s": "NaN"},
     "duration_s: expected a finite number"),
    ({"arch": "a", "kernel": "k", "testcase": "t", "status": "OK", "message": ""}, "status: 'OK' is not one of"),
    ({"arch": "a", "kernel": "k", "testcase": "t", "status": "PASS", "message": "", "evil": 1}, "unknown field 'evil'"),
    (["a"], "not a JSON object"),
    ({"arch": "a", "kernel": "k", "testcase": "t", "status": "PASS", "message": "", "subtests": ["x"]},
     r"subtests[0]: expected an object"),
    ({"arch": "a", "kernel": "k", "testcase": "t", "status": "PASS", "message": "",
      "subtests": [{"number": 1, "name": "n", "status": "MAYBE", "detail": "", "section": ""}]},
     "subtests[0].status: 'MAYBE' is not one of PASS, FAIL"),
    ({"arch": "a", "kernel": "k", "testcase": "t", "status": "PASS", "message": "",
      "subtests": [{"number": "1", "name": "n", "status": "PASS", "detail": "", "section": ""}]},
     "subtests[0].number: expected an integer"),
    ({"arch": "a", "kernel": "k", "testcase": "t", "status": "PASS", "message": "",
      "subtests": [{"number": 1, "name": ["n"], "status": "PASS", "detail": "", "section": ""}]},
     "subtests[0].name: expected a string"),
    ({"arch": "a", "kernel": "k", "testcase": "t", "status": "PASS", "message": "",
      "subtests": [{"number": 1, "name": "n", "status": "PASS", "detail": "", "section": "", "js": ""}]},
     "subtests[0]: unknown field 'js'"),
    ({"arch": "a", "kernel": "k", "testcase": "t", "status": "PASS", "message": "",
      "subtests": [{"number": 1, "name": "n", "status": "PASS", "detail": ""}]}, "subtests[0]: missing field 'section'"),
])
def test_a_malformed_journal_record_is_one_clear_error_naming_the_line(tmp_path, record, problem):
    path = tmp_path / "journal.jsonl"
    path.write_text(json.dumps(_cells()[0].to_dict()) + "\n" + json.dumps(record) + "\n")
    with pytest.raises(RunDataError) as exc:
        Journal.read(path)
    assert str(exc.value).startswith(f"{path}:2: ") and problem in str(exc.value)


def test_reports(tmp_path):
    matrix = write_reports(tmp_path, _cells(), META)
    text = render_text(matrix)
    assert text.splitlines()[0].split("|")[1:4] == [" testcase      ", " i386-pae / 6.1 ", " i386-pae / 6.12 "]
    assert "| swp_exclusive | FAIL           | PASS            |" in text

    data = json.loads((tmp_path / "results.json").read_text())
    assert data["exit_code"] == 2
    assert {(c["kernel"], c["testcase"], c["status"]) for c in data["cells"]} == {
        ("6.1", "swp_exclusive", "FAIL"), ("6.12", "swp_exclusive", "PASS"),
        ("6.1", "other", "ERROR"), ("6.12", "other", "TIMEOUT")}

    root = ET.parse(tmp_path / "junit.xml").getroot()
    suites = {s.get("name"): s for s in root.iter("testsuite")}
    assert set(suites) == {"lab.i386-pae.6.1", "lab.i386-pae.6.12"}
    cases = {(tc.get("classname"), tc.get("name")): tc for tc in root.iter("testcase")}
    fail = cases["lab.i386-pae.6_1", "swp_exclusive"]
    assert fail.find("failure").get("message") == "FAIL: page was replaced during COW"
    assert cases["lab.i386-pae.6_1", "other"].find("error") is not None
    assert cases["lab.i386-pae.6_12", "other"].find("failure").get("type") == "TIMEOUT"
    assert cases["lab.i386-pae.6_12", "swp_exclusive"].find("failure") is None

    html = (tmp_path / "matrix.html").read_text()
    assert 'data-status="FAIL"' in html and 'data-status="PASS"' in html
    assert 'href="cells/i386-pae~6.1~swp_exclusive.html"' in html
    assert "&lt;x&gt;" in html  # messages are escaped
    page = (tmp_path / "cells/i386-pae~6.1~swp_exclusive.html").read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>" not in page
    assert 'href="../logs/i386-pae/6.1/swp_exclusive/stdout.txt"' in page


def test_matrix_marks_cells_not_run(tmp_path):
    matrix = write_reports(tmp_path, _cells()[:1], META)
    assert "| swp_exclusive | FAIL           | -               |" in render_text(matrix)
    assert "not run" in (tmp_path / "matrix.html").read_text()


def _expected_cells():
    xfail = CellResult("i386", "6.1", "swp_exclusive", "FAIL", "FAIL: page was replaced during COW", exit_code=1)
    xfail.apply_expectation("FAIL", "fixed in 6.3")
    xpass = CellResult("sparc64", "6.1", "swp_exclusive", "PASS", "PASS: page was not replaced during COW")
    xpass.apply_expectation("FAIL", "fixed in 6.3")
    error = CellResult("riscv64", "6.1", "swp_exclusive", "ERROR", "guest did not boot")
    error.apply_expectation("FAIL", "fixed in 6.3")
    return xfail, xpass, error


def test_expectations_rename_outcomes():
    xfail, xpass, error = _expected_cells()
    assert (xfail.status, xfail.outcome, xfail.expected) == ("XFAIL", "FAIL", "FAIL")
    assert (xpass.status, xpass.outcome) == ("XPASS", "PASS")
    assert xpass.message == "expected FAIL (fixed in 6.3) but it passed: PASS: page was not replaced during COW"
    assert (error.status, error.outcome) == ("ERROR", "ERROR")  # an infra problem stays an infra problem
    assert run_exit_code([xfail]) == 0
    assert run_exit_code([xfail, xpass]) == 1
    race = CellResult("sparc64", "6.1", "odirect_swapout", "PASS", "PASS: no corruption in 9 iterations")
    race.apply_expectation("FAIL", "fixed in 6.3", racy=True)
    assert (race.status, race.expected) == ("PASS", "FAIL")
    assert race.message == "PASS: no corruption in 9 iterations (expected FAIL: not reproduced this time)"
    assert run_exit_code([race]) == 0


def test_reports_show_expected_and_actual(tmp_path):
    meta = {**META, "arches": ["i386", "sparc64", "riscv64"], "kernels": ["6.1"], "testcases": ["swp_exclusive"]}
    matrix = write_reports(tmp_path, list(_expected_cells()), meta)
    text = render_text(matrix)
    assert "| swp_exclusive | XFAIL      | XPASS         | ERROR         |" in text
    assert ("i386/6.1 swp_exclusive: XFAIL: page was replaced during COW "
            "[expected FAIL, actual FAIL: fixed in 6.3]") in text
    root = ET.parse(tmp_path / "junit.xml").getroot()
    cases = {tc.get("classname"): tc for tc in root.iter("testcase")}
    assert cases["lab.i386.6_1"].find("skipped").text.startswith("XFAIL: expected FAIL (fixed in 6.3)")
    assert cases["lab.i386.6_1"].find("failure") is None
    assert cases["lab.sparc64.6_1"].find("failure").get("type") == "XPASS"
    html = (tmp_path / "matrix.html").read_text()
    assert 'data-status="XFAIL"' in html and "expected FAIL, actual FAIL" in html
    page = (tmp_path / "cells/sparc64~6.1~swp_exclusive.html").read_text()
    assert "<th>expected</th><td>FAIL: fixed in 6.3</td>" in page and "<th>actual</th><td>PASS</td>" in page


def test_result_line_metrics():
    from lab.results import parse_metrics
    out = ("starting\nresult: iterations=120 pageouts=5 detections=0 elapsed=30.0\n"
           "PASS: no corruption in 120 iterations\n")
    assert parse_metrics(out) == {"iterations": 120, "pageouts": 5, "detections": 0, "elapsed": 30.0}
    assert parse_metrics("result: iterations=1\nresult: iterations=2 detections=1\n") == {"iterations": 2, "detections": 1}
    assert parse_metrics("result: iterations=lots\n") == {}
    assert parse_metrics("  result: iterations=3 x=1; rm -rf /\n") == {}
    assert parse_metrics("") == {}


def test_combine_attempts():
    from lab.results import combine_attempts

    def attempt(status, msg, det):
        return CellResult("i386-pae", "6.1", "odirect_swapout", status, msg, duration_s=10.0,
                          metrics={"iterations": 100, "detections": det})

    ok = attempt("PASS", "PASS: no corruption in 100 iterations", 0)
    assert combine_attempts([ok]) is ok
    cell = combine_attempts([ok, attempt("FAIL", "FAIL: 3 detections", 3), attempt("ERROR", "guest crashed", 0),
                             attempt("FAIL", "FAIL: 1 detections", 1)])
    assert (cell.status, cell.rate) == ("FAIL", "FAIL 2/4")
    assert cell.message == "FAIL: 3 detections (FAIL 2/4)"
    assert cell.metrics == {"iterations": 400, "detections": 4}
    assert [a["status"] for a in cell.attempts] == ["PASS", "FAIL", "ERROR", "FAIL"]
    assert cell.duration_s == 40.0
    # An infrastructure hiccup among passes is an ERROR, never a FAIL.
    flaky = combine_attempts([ok, attempt("ERROR", "QEMU exited", 0), ok])
    assert (flaky.status, flaky.rate) == ("ERROR", "ERROR 1/3")
    # A kselftest's attempts are XFAIL when their only failures are expected subtests.
    expected = [CellResult("i386-pae", "6.1", "cow", st, st) for st in ("XFAIL", "PASS", "XFAIL")]
    assert combine_attempts(expected).rate == "XFAIL 2/3"
    assert combine_attempts([*expected, CellResult("i386-pae", "6.1", "cow", "XPASS", "")]).rate == "XPASS 1/4"


def test_reports_show_attempt_rates(tmp_path):
    from lab.results import combine_attempts
    runs = [CellResult("i386-pae", "6.1", "odirect_swapout", st, f"{st}: run {n}", duration_s=5.0,
                       metrics={"iterations": 10})
            for n, st in enumerate(["PASS", "FAIL", "PASS"], 1)]
    cell = combine_attempts(runs)
    meta = {**META, "kernels": ["6.1"], "testcases": ["odirect_swapout"], "jobs": [["i386-pae", "6.1"]]}
    matrix = write_reports(tmp_path, [cell], meta)
    assert "| odirect_swapout | FAIL 1/3       |" in render_text(matrix)
    root = ET.parse(tmp_path / "junit.xml").getroot()
    (case,) = list(root.iter("testcase"))
    assert case.find("failure").get("message") == "FAIL: run 2 (FAIL 1/3)"
    assert "attempt 2: FAIL (5.0 s): FAIL: run 2" in case.find("system-out").text
    page = (tmp_path / "cells/i386-pae~6.1~odirect_swapout.html").read_text()
    assert "<h2>Attempts: FAIL 1/3</h2>" in page and "<th>iterations</th><td>30</td>" in page


def test_kernel_excerpts_in_junit_and_html(tmp_path):
    excerpt = "------------[ cut here ]------------\nWARNING: CPU: 0 PID: 7 at mm/memory.c:1 x\n---[ end trace 0 ]---"
    cell = CellResult("i386-pae", "6.1", "swp_exclusive", "PASS", "PASS: ok", stdout="PASS: ok\n",
                      kernel_messages=["WARNING: CPU: 0 PID: 7 at mm/memory.c:1 x"], kernel_excerpts=[excerpt])
    meta = {**META, "kernels": ["6.1"], "testcases": ["swp_exclusive"], "jobs": [["i386-pae", "6.1"]]}
    write_reports(tmp_path, [cell], meta)
    (case,) = list(ET.parse(tmp_path / "junit.xml").getroot().iter("testcase"))
    assert excerpt in case.find("system-out").text
    page = (tmp_path / "cells/i386-pae~6.1~swp_exclusive.html").read_text()
    assert "<h2>Kernel reports on the console</h2>" in page and "[ cut here ]" in page
    assert "kernel messages" in (tmp_path / "matrix.html").read_text()


def test_first_event_metrics_take_the_earliest():
    from lab.results import _combine_metrics
    assert _combine_metrics([{"iterations": 5, "first_detection": 2.4}, {"iterations": 7, "first_detection": -1},
                             {"iterations": 1, "first_detection": 0.35}]) == {"iterations": 13, "first_detection": 0.35}
    assert _combine_metrics([{"first_detection": -1}, {"first_detection": -1}]) == {"first_detection": -1}


def test_terminal_reports_show_control_characters_never_send_them(tmp_path):
    """Issue 27 item 17: `lab report` printed journal messages with terminal escapes raw."""
    from lab.report.compare import compare, render_comparison
    hostile = "FAIL: \x1b]0;owned\x07\x1b[2J\x1b[1A\rPASS\x9b"
    cell = CellResult("i386-pae", "6.1", "swp_exclusive", "FAIL", hostile, kernel_messages=["\x1b[31mBUG\x1b[0m"])
    meta = {"run_id": "r", "started": "", "finished": "", "arches": ["i386-pae"], "kernels": ["6.1"],
            "testcases": ["swp_exclusive"], "jobs": [["i386-pae", "6.1"]]}
    for color in (False, True):
        text = render_text(write_reports(tmp_path, [cell], meta), color=color)
        assert "\\x1b]0;owned\\x07\\x1b[2J\\x1b[1A\\x0dPASS\\x9b" in text and "\\x1b[31mBUG" in text
        assert "\x07" not in text and "\r" not in text and "\x9b" not in text
        assert ("\x1b" in text) == color, "only the lab's own colours"
    passing = CellResult("i386-pae", "6.1", "swp_exclusive", "PASS", "ok")
    assert "\x1b" not in render_comparison(compare([passing], [cell], "old"))
