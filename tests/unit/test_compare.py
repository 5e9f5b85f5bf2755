"""lab compare / --baseline: what changed between two runs, in the order people read it."""

import json
import re

import pytest

from lab.cli import main
from lab.report import write_reports
from lab.report.compare import compare, render_comparison
from lab.report.terminal import render_text
from lab.report.matrix import Matrix
from lab.journal import Journal
from lab.results import CellResult


def _cell(arch, status, testcase="swp_exclusive", kernel="6.1", expected=""):
    outcome = {"XFAIL": "FAIL", "XPASS": "PASS"}.get(status, status)
    cell = CellResult(arch, kernel, testcase, outcome, f"{outcome}: {arch}")
    if expected:
        cell.apply_expectation(expected, "marker landed in 6.3")
    assert cell.status == status
    return cell


OLD = [_cell("a", "PASS"), _cell("b", "FAIL"), _cell("c", "PASS"), _cell("d", "ERROR"),
       _cell("e", "FAIL"), _cell("f", "PASS"), _cell("g", "XFAIL", expected="FAIL"), _cell("gone", "PASS")]
NEW = [_cell("a", "FAIL"), _cell("b", "PASS"), _cell("c", "ERROR"), _cell("d", "PASS"),
       _cell("e", "XFAIL", expected="FAIL"), _cell("f", "PASS"), _cell("g", "XFAIL", expected="FAIL"),
       _cell("h", "TIMEOUT"), _cell("i", "SKIP")]


def test_sections_and_their_order():
    result = compare(OLD, NEW, "old")
    names = lambda changes: [c.key[0] for c in changes]  # noqa: E731
    assert names(result.newly_fail) == ["a", "h"]
    assert names(result.newly_pass) == ["b", "d"]
    assert names(result.newly_error) == ["c"]
    assert names(result.changed_expectations) == ["e"]
    assert names(result.other) == ["i", "gone"]
    assert result.regressed
    text = render_comparison(result)
    assert [line.split(":")[0] for line in text.splitlines() if not line.startswith(" ")][1:] == [
        "Newly failing", "Newly passing", "Newly erroring", "Changed expectations", "Other changes"]
    assert "  a/6.1 swp_exclusive: PASS -> FAIL: FAIL: a" in text
    assert "  e/6.1 swp_exclusive: FAIL -> XFAIL: expected no declared result -> FAIL" in text
    assert "  gone/6.1 swp_exclusive: PASS -> not run" in text


def test_identical_runs_change_nothing():
    result = compare(OLD, OLD, "old")
    assert not result.regressed and result.changed_keys() == {}
    assert render_comparison(result).splitlines()[1:] == [
        "Newly failing: 0", "Newly passing: 0", "Newly erroring: 0", "Changed expectations: 0", "Other changes: 0"]


def _run_dir(path, cells):
    journal = Journal(path / "journal.jsonl")
    for cell in cells:
        journal.append(cell)
    arches = sorted({c.arch for c in cells})
    (path / "run.json").write_text(json.dumps({"run_id": path.name, "started": "", "finished": "",
                                               "arches": arches, "kernels": ["6.1"], "testcases": ["swp_exclusive"],
                                               "jobs": [[a, "6.1"] for a in arches]}))
    return path


def test_cli_compare_exit_codes(tmp_path, capsys):
    old = _run_dir(tmp_path / "old", OLD)
    new = _run_dir(tmp_path / "new", NEW)
    assert main(["compare", str(old), str(new)]) == 1
    assert "Newly failing: 2" in capsys.readouterr().out
    assert main(["compare", str(old), str(old)]) == 0
    assert main(["compare", str(old), str(tmp_path / "nowhere")]) == 2
    assert "no journal here" in capsys.readouterr().err


def test_report_with_baseline_opens_matrix_html_with_the_changes(tmp_path, capsys):
    old = _run_dir(tmp_path / "old", OLD)
    new = _run_dir(tmp_path / "new", NEW)
    main(["report", str(new), "--baseline", str(old)])
    out = capsys.readouterr().out
    assert "compared with " + str(old) in out and "Newly erroring: 1" in out
    html = (new / "matrix.html").read_text()
    assert html.index('id="changes"') < html.index("<h2>Matrix</h2>")
    assert "Newly failing: 2" in html and "was PASS" in html
    main(["report", str(new)])
    assert 'id="changes"' not in (new / "matrix.html").read_text()


@pytest.mark.parametrize("color", [False, True])
def test_terminal_colours_only_when_asked(color):
    matrix = Matrix.from_cells(NEW, {})
    text = render_text(matrix, color=color)
    assert ("\x1b[1;31mFAIL" in text) is color
    assert ("\x1b[" in text) is color
    plain = render_text(matrix, color=False)
    assert re.sub(r"\x1b\[[0-9;]*m", "", text) == plain, "colour never changes the layout"


def test_a_wide_plan_prints_a_row_per_arch_and_kernel():
    cells = [_cell(f"arch{n}", "PASS") for n in range(20)]
    text = render_text(Matrix.from_cells(cells, {}), max_width=160)
    lines = text.splitlines()
    assert lines[0].startswith("| arch / kernel") and "swp_exclusive" in lines[0]
    assert lines[2].startswith("| arch0 / 6.1") and max(len(line) for line in lines) <= 160


def test_write_reports_without_baseline_has_no_changes_section(tmp_path):
    write_reports(tmp_path, NEW, {"run_id": "r", "started": "", "finished": ""})
    assert 'id="changes"' not in (tmp_path / "matrix.html").read_text()


def _kselftest(arch, statuses, status="FAIL"):
    subtests = [{"number": n, "name": f"R/O pin {n}", "status": s, "detail": f"detail {n}", "section": "pins"}
                for n, s in enumerate(statuses, 1)]
    return CellResult(arch, "6.12", "cow", status, "", subtests=subtests)


def test_a_kselftest_is_compared_subtest_by_subtest():
    old = [_kselftest("riscv64", ["PASS", "FAIL", "PASS"]), _kselftest("arm64", ["PASS", "PASS"], "PASS")]
    new = [_kselftest("riscv64", ["FAIL", "FAIL", "SKIP"]), CellResult("arm64", "6.12", "cow", "ERROR", "no boot")]
    result = compare(old, new, "old")
    assert [c.name for c in result.newly_fail] == ["riscv64/6.12 cow / R/O pin 1"]
    assert [(c.name, c.old_label, c.new_label) for c in result.other] == [("riscv64/6.12 cow / R/O pin 3", "PASS", "SKIP")]
    # A cell that did not get to its subtests is one change, not one per subtest.
    assert [c.name for c in result.newly_error] == ["arm64/6.12 cow"]
    text = render_comparison(result)
    assert "  riscv64/6.12 cow / R/O pin 1: PASS -> FAIL: detail 1" in text


def test_the_summary_counts_cells_and_then_the_subtests_that_moved():
    assert compare(OLD, NEW, "old").summary() == (
        "2 newly failing, 1 newly erroring, 2 fixed, 1 expectations changed, 2 other changes, 2 unchanged")
    assert compare(OLD, OLD, "old").summary() == "8 unchanged"
    old = [_kselftest("riscv64", ["PASS", "FAIL", "PASS"]), _kselftest("arm64", ["PASS", "PASS"], "PASS")]
    new = [_kselftest("riscv64", ["FAIL", "FAIL", "SKIP"]), CellResult("arm64", "6.12", "cow", "ERROR", "no boot")]
    # riscv64's cell stayed FAIL: unchanged as a cell, its subtests say what moved inside.
    assert compare(old, new, "old").summary() == \
        "1 newly erroring, 1 unchanged; subtests: 1 newly failing, 1 other changes"
    assert render_comparison(compare(OLD, OLD, "old")).splitlines()[0] == "compared with old: 8 unchanged"


def test_a_baseline_writes_changes_txt_and_a_report_without_one_removes_it(tmp_path, capsys):
    old = _run_dir(tmp_path / "old", OLD)
    new = _run_dir(tmp_path / "new", NEW)
    main(["report", str(new), "--baseline", str(old)])
    lines = (new / "changes.txt").read_text().splitlines()
    assert lines[0] == "2 newly failing, 1 newly erroring, 2 fixed, 1 expectations changed, 2 other changes, 2 unchanged"
    assert lines[2] == f"compared with {old}: {lines[0]}" and "  a/6.1 swp_exclusive: PASS -> FAIL: FAIL: a" in lines
    assert lines[0] in (new / "matrix.html").read_text()
    main(["report", str(new)])
    assert not (new / "changes.txt").exists()


def test_a_cell_that_newly_fails_through_an_edited_expectation_is_a_regression_too():
    old = [_cell("x86_64", "PASS")]
    xpass = [_cell("x86_64", "XPASS", expected="FAIL")]
    result = compare(old, xpass, "old")
    assert [c.name for c in result.changed_expectations] == ["x86_64/6.1 swp_exclusive"] and result.regressed
    assert not compare(xpass, xpass, "old").regressed
    assert not compare([_cell("b", "FAIL")], [_cell("b", "TIMEOUT")], "old").regressed  # failing both nights
