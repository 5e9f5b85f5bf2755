import json
import os

import pytest

from lab.errors import RunDataError, UserError
from lab.journal import Journal
from lab.results import CellResult
from lab.merge import merge
from lab.plan import assign, parse_shard, plan_id

JOBS = [[a, k] for a in ("i386-pae", "i386", "x86_64", "sparc64", "riscv64") for k in ("6.1", "6.12")]


@pytest.mark.parametrize("count", [1, 2, 3, 4, 11, 12])
def test_shards_cover_every_job_exactly_once(count):
    shards = assign(JOBS, count, {}, 2)
    flat = [tuple(j) for shard in shards for j in shard]
    assert sorted(flat) == sorted(tuple(j) for j in JOBS)
    assert assign(JOBS, count, {}, 2) == shards, "deterministic"
    sizes = [len(s) for s in shards]
    assert max(sizes) - min(sizes) <= 1


def test_shards_balance_by_cost():
    costs = {tuple(j): 10.0 for j in JOBS}
    costs["sparc64", "6.1"] = 100.0  # one slow job gets a shard of its own
    shards = assign(JOBS, 2, costs, 2)
    loads = [sum(costs[tuple(j)] for j in s) for s in shards]
    assert ["sparc64", "6.1"] in shards[0] and len(shards[0]) == 1
    assert loads == [100.0, 90.0]


def test_parse_shard():
    assert parse_shard("2/3") == (2, 3)
    for bad in ("0/3", "4/3", "x", "1/0"):
        with pytest.raises(UserError):
            parse_shard(bad)


def _run_dir(tmp_path, name, plan, jobs, statuses):
    d = tmp_path / name
    d.mkdir()
    (d / "run.json").write_text(json.dumps({**plan, "plan": plan, "plan_id": plan_id(plan), "jobs": jobs,
                                            "started": "2026-01-01T00:00:0" + name[-1], "finished": "x"}))
    journal = Journal(d / "journal.jsonl")
    for (arch, kernel), status in zip(jobs, statuses):
        journal.append(CellResult(arch, kernel, "swp_exclusive", status, f"{status}: m"))
    (d / "logs" / jobs[0][0]).mkdir(parents=True)
    (d / "logs" / jobs[0][0] / "console.log").write_text(name)
    return d


PLAN = {"arches": ["a", "b"], "kernels": ["6.1"], "testcases": ["swp_exclusive"],
        "jobs": [["a", "6.1"], ["b", "6.1"]], "params": {}, "repeat": 1}


def test_merge_combines_shards(tmp_path):
    one = _run_dir(tmp_path, "s1", PLAN, [["a", "6.1"]], ["PASS"])
    two = _run_dir(tmp_path, "s2", PLAN, [["b", "6.1"]], ["FAIL"])
    meta, cells, problems = merge([one, two], tmp_path / "merged")
    assert problems == []
    assert sorted(c.arch for c in cells) == ["a", "b"]
    assert meta["jobs"] == PLAN["jobs"] and meta["merged_from"] == [str(one), str(two)]
    assert len(Journal.read(tmp_path / "merged/journal.jsonl")) == 2
    assert (tmp_path / "merged/logs/b/console.log").read_text() == "s2"


def test_merge_reports_missing_and_duplicated_cells(tmp_path):
    one = _run_dir(tmp_path, "s1", PLAN, [["a", "6.1"]], ["PASS"])
    again = _run_dir(tmp_path, "s2", PLAN, [["a", "6.1"]], ["PASS"])
    _, cells, problems = merge([one, again], tmp_path / "merged")
    assert len(cells) == 1
    assert any(p.startswith("duplicated: a/6.1/swp_exclusive") for p in problems)
    assert "missing: b/6.1/swp_exclusive (in no shard's journal)" in problems


def test_merge_refuses_different_plans(tmp_path):
    one = _run_dir(tmp_path, "s1", PLAN, [["a", "6.1"]], ["PASS"])
    other = _run_dir(tmp_path, "s2", {**PLAN, "repeat": 3}, [["b", "6.1"]], ["PASS"])
    with pytest.raises(UserError, match="runs of different plans"):
        merge([one, other], tmp_path / "merged")


def test_cli_merge_keeps_its_problems_next_to_the_reports(tmp_path, capsys):
    from lab.cli import main
    one = _run_dir(tmp_path, "s1", PLAN, [["a", "6.1"]], ["PASS"])
    two = _run_dir(tmp_path, "s2", PLAN, [["b", "6.1"]], ["PASS"])
    out = tmp_path / "merged"
    assert main(["merge", str(one), "--out", str(out)]) == 2
    assert (out / "merge-problems.txt").read_text() == "missing: b/6.1/swp_exclusive (in no shard's journal)\n"
    assert "lab merge: missing: b/6.1/swp_exclusive" in capsys.readouterr().err
    assert main(["merge", str(one), str(two), "--out", str(out)]) == 2, "an earlier merge is never overwritten"
    assert f"--out {out}: already holds a run (run.json)" in capsys.readouterr().err
    assert (out / "merge-problems.txt").exists()
    complete = tmp_path / "merged-again"
    assert main(["merge", str(one), str(two), "--out", str(complete)]) == 0
    assert not (complete / "merge-problems.txt").exists()


def _journal_line(d, record):
    with (d / "journal.jsonl").open("a") as fh:
        fh.write(json.dumps(record) + "\n")


def test_merge_refuses_a_cell_that_is_not_in_its_runs_plan(tmp_path):
    one = _run_dir(tmp_path, "s1", PLAN, [["a", "6.1"]], ["PASS"])
    two = _run_dir(tmp_path, "s2", PLAN, [["b", "6.1"]], ["PASS"])
    # A cell of the plan, but of the other shard's part: shard 1 cannot have run it.
    _journal_line(one, CellResult("b", "6.1", "swp_exclusive", "FAIL", "forged").to_dict())
    _, cells, problems = merge([one, two], tmp_path / "merged")
    assert problems == [f"refused: b/6.1/swp_exclusive in {one}/journal.jsonl is not in that run's plan"]
    assert [(c.arch, c.status) for c in cells] == [("a", "PASS"), ("b", "PASS")]


@pytest.mark.parametrize("evil", ["../../escaped", "..", ".x", "a/b"])
def test_a_name_that_would_escape_the_output_directory_is_refused(tmp_path, evil):
    one = _run_dir(tmp_path, "s1", PLAN, [["a", "6.1"]], ["PASS"])
    _journal_line(one, {**CellResult("a", "6.1", "swp_exclusive", "PASS", "").to_dict(), "testcase": evil})
    with pytest.raises(RunDataError, match=r"journal.jsonl:2: testcase: .* is not a valid name"):
        merge([one], tmp_path / "out" / "merged")
    evil_plan = {**PLAN, "jobs": [["a", "6.1"], [evil, "6.1"]]}
    two = _run_dir(tmp_path, "s2", evil_plan, [["a", "6.1"]], ["PASS"])
    with pytest.raises(RunDataError, match=r"run.json: .* is not a valid name"):
        merge([two], tmp_path / "out" / "merged")
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "out").exists()


def test_merge_copies_regular_files_only_and_names_the_rest(tmp_path):
    secret = tmp_path / "id_ed25519"
    secret.write_text("PRIVATE KEY")
    one = _run_dir(tmp_path, "s1", PLAN, [["a", "6.1"]], ["PASS"])
    two = _run_dir(tmp_path, "s2", PLAN, [["b", "6.1"]], ["PASS"])
    (one / "logs/a/key.txt").symlink_to(secret)
    (one / "logs/keys").symlink_to(tmp_path, target_is_directory=True)
    os.mkfifo(one / "logs/a/fifo")
    _, _, problems = merge([one, two], tmp_path / "merged")
    assert sorted(problems) == sorted(f"not copied: {one}/logs/{p} (not a regular file): merge copies regular "
                                      "files only" for p in ("a/key.txt", "keys", "a/fifo"))
    copied = sorted(str(p.relative_to(tmp_path / "merged/logs")) for p in (tmp_path / "merged/logs").rglob("*"))
    assert copied == ["a", "a/console.log", "b", "b/console.log"]
