"""The run directory loses nothing: one writer at a time, no run overwritten, reports
written whole, malformed files from elsewhere refused in one line, and a lab crash
still reports every finished cell (exit 2, never 1, never a traceback)."""

import fcntl
import json
import os

import pytest

from lab import atomic
from lab.cli import main
from lab.journal import Journal
from lab.results import CellResult

PASSING = CellResult("i386-pae", "6.1", "swp_exclusive", "PASS", "PASS: fine")


def _run_dir(tmp_path, meta=None, cells=(PASSING,)):
    run = tmp_path / "run"
    run.mkdir()
    plan = {"arches": ["i386-pae"], "kernels": ["6.1"], "testcases": ["swp_exclusive"],
            "jobs": [["i386-pae", "6.1"]], "params": {}, "repeat": 1}
    (run / "run.json").write_text(json.dumps(meta if meta is not None else
                                             {**plan, "plan": plan, "plan_id": "p1", "run_id": "run",
                                              "started": "", "finished": ""}))
    journal = Journal(run / "journal.jsonl")
    for cell in cells:
        journal.append(cell)
    return run


def test_out_that_already_holds_a_run_is_refused_unless_resumed(fake_host, tmp_path, capsys):
    run = _run_dir(tmp_path)
    before = (run / "journal.jsonl").read_bytes()
    assert main(["run", "--kernel", "6.1", "--out", str(run)]) == 2
    assert f"--out {run}: already holds a run (run.json); continue it with --resume {run}" in capsys.readouterr().err
    assert (run / "journal.jsonl").read_bytes() == before


def test_a_second_lab_writing_the_same_directory_is_refused(fake_host, tmp_path, capsys):
    run = _run_dir(tmp_path)
    with open(run / ".lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        held.write("4242\n")
        held.flush()
        assert main(["run", "--resume", str(run)]) == 2
    assert f"{run}: another lab run (pid 4242) is writing this directory" in capsys.readouterr().err


def test_run_json_and_every_report_are_written_atomically(tmp_path, monkeypatch, capsys):
    written = []
    real = atomic.write_bytes
    monkeypatch.setattr(atomic, "write_bytes", lambda path, data, mode=0o644: (written.append(path.name),
                                                                               real(path, data, mode)))
    run = _run_dir(tmp_path)
    assert main(["report", str(run)]) == 0
    assert {"results.json", "junit.xml", "matrix.html", "i386-pae~6.1~swp_exclusive.html"} <= set(written)
    assert main(["merge", str(run), "--out", str(tmp_path / "merged")]) == 0
    assert "run.json" in written


def test_an_atomic_write_that_fails_leaves_the_old_file_and_no_debris(tmp_path, monkeypatch):
    target = tmp_path / "results.json"
    target.write_text("the previous, complete version\n")

    def disk_full(fd):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError):
        atomic.write_text(target, "half of a new vers")
    assert target.read_text() == "the previous, complete version\n"
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


@pytest.mark.parametrize("meta, complaint", [
    ({"jobs": 5}, "run.json: jobs: expected a list of [arch, kernel] pairs"),
    ({"jobs": [["i386-pae", "6.1"]], "testcases": ["../../etc"]}, "run.json: '../../etc' is not a valid name"),
    ({"jobs": [], "testcases": [], "run_id": ["x"]}, "run.json: run_id: expected a string"),
    ({"jobs": [], "testcases": [], "repeat": "many"}, "run.json: repeat: expected a whole number"),
    ([1, 2], "run.json: not a JSON object"),
])
@pytest.mark.parametrize("command", ["report", "compare", "merge"])
def test_a_malformed_run_json_is_one_clear_line_and_exit_2(tmp_path, capsys, meta, complaint, command):
    run = _run_dir(tmp_path, meta=meta)
    argv = {"report": ["report", str(run)], "compare": ["compare", str(run), str(run)],
            "merge": ["merge", str(run), "--out", str(tmp_path / "m")]}[command]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and complaint in err and "Traceback" not in err


def test_a_malformed_journal_line_in_report_or_compare_is_one_clear_line(tmp_path, capsys):
    run = _run_dir(tmp_path)
    with (run / "journal.jsonl").open("a") as fh:
        fh.write(json.dumps({**PASSING.to_dict(), "testcase": "other", "stdout": ["not", "text"]}) + "\n")
    for argv in (["report", str(run)], ["compare", str(run), str(run)]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.strip() == f"lab: error: {run}/journal.jsonl:2: stdout: expected a string, got \"['not', 'text']\""


def test_a_malformed_resume_or_shard_costs_is_one_clear_line(fake_host, tmp_path, capsys):
    run = _run_dir(tmp_path, meta={"jobs": [["i386-pae", "6.1"]], "testcases": ["swp_exclusive"], "params": []})
    assert main(["run", "--resume", str(run)]) == 2
    assert "run.json: params: expected an object" in capsys.readouterr().err
    costs = tmp_path / "results.json"
    for bad in ('{"cells": [5]}', '{"cells": [{"arch": "a", "kernel": "k", "duration_s": "NaN"}]}', "[]"):
        costs.write_text(bad)
        assert main(["run", "--dry-run", "--shard", "1/2", "--shard-costs", str(costs)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"lab: error: --shard-costs {costs}: not a results.json (") and err.count("\n") == 1


def test_an_unexpected_exception_is_one_line_and_exit_2_with_the_traceback_kept(monkeypatch, capsys):
    import lab.cli
    monkeypatch.setattr(lab.cli, "cmd_list", lambda args: {}["a lab bug"])
    assert main(["list"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lab: internal error: KeyError: 'a lab bug' (traceback: ") and err.count("\n") == 1
    traceback_file = err.split("(traceback: ")[1].split(")")[0]
    assert "KeyError" in open(traceback_file).read()
    os.unlink(traceback_file)


def test_a_crash_inside_a_job_still_reports_the_finished_cells(fake_host, tmp_path, monkeypatch, capsys):
    import lab.cmd_run

    class CrashingRunner:
        def __init__(self, lab, out, journal, **kwargs):
            self.journal, self.stop = journal, type("E", (), {"set": lambda self: None})()

        def run(self, jobs, artifacts, parallel):
            self.journal.append(PASSING)
            raise RuntimeError("a bug in the scheduler")
    monkeypatch.setattr(lab.cmd_run, "prepare", lambda lab, jobs, progress: {})
    monkeypatch.setattr(lab.cmd_run, "Runner", CrashingRunner)
    out = tmp_path / "run"
    assert main(["run", "--kernel", "6.1", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert (f"lab: internal error: RuntimeError: a bug in the scheduler (traceback: {out}/lab-traceback.txt)"
            in err)
    assert [c["status"] for c in json.loads((out / "results.json").read_text())["cells"]] == ["PASS"]
    assert (out / "junit.xml").is_file() and (out / "matrix.html").is_file()


def test_no_two_cells_share_a_page():
    """Issue 27 item 12: with '__' between names, a__b/c/t and a/b__c/t had one page."""
    from lab.rundir import cell_page
    cells = [("a__b", "c", "t"), ("a", "b__c", "t"), ("a", "b", "c__t"), ("a__b__c", "x", "t"), ("a", "b", "c")]
    assert len({cell_page(*cell) for cell in cells}) == len(cells)
    assert all(cell_page(*cell).count("/") == 1 for cell in cells)


def _one_line_exit_2(argv, capsys, *expected, timeout_s=10.0):
    import time
    start = time.monotonic()
    assert main(argv) == 2
    assert time.monotonic() - start < timeout_s
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and "internal error" not in err, err
    for text in expected:
        assert text in err, err


@pytest.mark.parametrize("name", ["journal.jsonl", "run.json"])
@pytest.mark.parametrize("kind", ["fifo", "link to /dev/zero", "device"])
def test_run_files_that_are_fifos_devices_or_links_are_refused_at_once(tmp_path, capsys, name, kind):
    """Issue 27 item 7: `lab report`, `lab merge` and --baseline blocked for ever (a FIFO)
    or died with MemoryError (a link to /dev/zero)."""
    run = _run_dir(tmp_path)
    path = run / name
    path.unlink()
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "device":
        os.mknod(path, 0o600 | __import__("stat").S_IFCHR, os.makedev(1, 5))  # what /dev/zero is
    else:
        path.symlink_to("/dev/zero")
    for argv in (["report", str(run)], ["merge", str(run), "--out", str(tmp_path / "m")],
                 ["compare", str(run), str(run)]):
        _one_line_exit_2(argv, capsys, str(path), "expected a regular file")


def test_a_huge_run_file_is_refused_not_read_whole(tmp_path, capsys, monkeypatch):
    from lab import journal
    run = _run_dir(tmp_path)
    monkeypatch.setattr(journal, "MAX_BYTES", 100)
    _one_line_exit_2(["report", str(run)], capsys, "journal.jsonl: larger than 100 bytes")


def test_shard_costs_that_is_a_fifo_or_has_a_huge_number_is_one_line(fake_host, tmp_path, capsys):
    costs = tmp_path / "results.json"
    os.mkfifo(costs)
    _one_line_exit_2(["run", "--dry-run", "--shard", "1/2", "--shard-costs", str(costs)], capsys,
                     "results.json: is not a regular file")
    costs.unlink()
    costs.write_text('{"cells": [{"arch": "a", "kernel": "k", "duration_s": 1' + "0" * 400 + "}]}")
    _one_line_exit_2(["run", "--dry-run", "--shard", "1/2", "--shard-costs", str(costs)], capsys,
                     f"--shard-costs {costs}: not a results.json (OverflowError")


@pytest.mark.parametrize("field, value, complaint", [
    ("attempts", [{}], "attempts[0]: missing field 'attempt'"),
    ("attempts", [1], "attempts[0]: expected an object, got '1'"),
    ("attempts", [{"attempt": 1, "status": 5, "exit_code": 0, "duration_s": 1.0, "message": "", "metrics": {},
                   "logs": {}}], "attempts[0].status: expected one of PASS"),
    ("rate", " ", "rate: expected empty or STATUS N/M"),
    ("timings", {"boot_s": "x"}, "timings: expected an object of name -> seconds"),
    ("retries", [1], "retries: expected a list of strings"),
    ("kernel_excerpts", [1], "kernel_excerpts: expected a list of strings"),
    ("metrics", {"n": None}, "metrics: expected an object of name -> finite number"),
    ("provenance", {"qemu": 7}, "provenance: expected an object of name -> string"),
])
def test_inner_fields_of_journal_records_are_checked(tmp_path, capsys, field, value, complaint):
    """Issue 27 item 10: each was an internal error in report, history or merge (or, for a
    numeric attempt status, a silently wrong "FAIL 0/1")."""
    run = _run_dir(tmp_path)
    with (run / "journal.jsonl").open("a") as fh:
        fh.write(json.dumps({**PASSING.to_dict(), "testcase": "other", field: value}) + "\n")
    for argv in (["report", str(run)], ["merge", str(run), "--out", str(tmp_path / "m")],
                 ["history", str(run), "--out", str(tmp_path / "h")]):
        _one_line_exit_2(argv, capsys, f"{run}/journal.jsonl:2: {complaint}")


def test_deeply_nested_json_is_one_line(tmp_path, capsys):
    run = _run_dir(tmp_path)
    with (run / "journal.jsonl").open("a") as fh:
        fh.write("[" * 100000 + "]" * 100000 + "\n")
    _one_line_exit_2(["report", str(run)], capsys, "journal.jsonl:2: nested too deeply")
    (run / "run.json").write_text("[" * 100000 + "]" * 100000)
    _one_line_exit_2(["report", str(run)], capsys, "run.json: not readable JSON (RecursionError")


def _shard_with_logs(tmp_path):
    run = _run_dir(tmp_path)
    (run / "logs" / "i386-pae" / "6.1").mkdir(parents=True)
    (run / "logs" / "i386-pae" / "6.1" / "console.log").write_text("console\n")
    return run


def test_merge_never_overwrites_a_run_or_an_input(tmp_path, capsys):
    """Issue 27 item 9: --out naming an existing run replaced its journal; --out equal to an
    input died with SameFileError after copying."""
    run = _shard_with_logs(tmp_path)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    _one_line_exit_2(["merge", str(run), "--out", str(run)], capsys, f"--out {run}: already holds a run")
    (tmp_path / "x").mkdir()
    other = _run_dir(tmp_path / "x")
    other_journal = (other / "journal.jsonl").read_bytes()
    _one_line_exit_2(["merge", str(run), "--out", str(other)], capsys, f"--out {other}: already holds a run")
    assert (other / "journal.jsonl").read_bytes() == other_journal
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize("planted", ["logs", "logs/i386-pae", "logs/i386-pae/6.1/console.log", "journal.jsonl",
                                     "results.json", "cells"])
def test_merge_writes_through_no_link_inside_out(tmp_path, capsys, planted):
    """A decoy file's content was replaced, and a `logs -> elsewhere` link received the files."""
    run = _shard_with_logs(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    decoy = elsewhere / "decoy"
    decoy.write_text("precious\n")
    out = tmp_path / "merged"
    link = out / planted
    link.parent.mkdir(parents=True)
    link.symlink_to(decoy if "." in planted else elsewhere)
    if planted in ("journal.jsonl", "results.json"):  # replaced by a file of the lab's, never written through
        assert main(["merge", str(run), "--out", str(out)]) == 0 and not link.is_symlink()
    else:
        _one_line_exit_2(["merge", str(run), "--out", str(out)], capsys, "never through a link" if "." in planted
                         else "a symbolic link or not a directory inside the run directory")
    assert decoy.read_text() == "precious\n" and sorted(p.name for p in elsewhere.iterdir()) == ["decoy"]


def test_report_writes_through_no_cells_link(tmp_path, capsys):
    run = _run_dir(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (run / "cells").symlink_to(elsewhere)
    _one_line_exit_2(["report", str(run)], capsys, f"{run}/cells: a symbolic link")
    assert list(elsewhere.iterdir()) == []


def test_cell_logs_are_never_written_through_a_link(tmp_path):
    from lab import rundir
    from lab.capture import BoundedOutput
    from lab.errors import RunDataError
    logs = rundir.job_logs(tmp_path, "i386-pae", "6.1")
    (logs / "swp_exclusive").symlink_to(tmp_path)
    with pytest.raises(RunDataError, match="a symbolic link"):
        rundir.cell_logs(logs, "swp_exclusive", None)
    target = tmp_path / "target"
    target.write_text("precious\n")
    (tmp_path / "stdout.txt").symlink_to(target)
    with pytest.raises(RunDataError, match="never through a link"):
        BoundedOutput(tmp_path / "stdout.txt")
    assert target.read_text() == "precious\n"
