"""lab cache and lab cache prune: sizes, last use, what the plan needs, least recently
used first, never an entry a running lab holds."""

import json
import os
import subprocess
import sys
import time

import pytest

from conftest import REPO
from lab import cache_admin
from lab.cache import Entry, release_holds
from lab.cli import main
from lab.errors import UserError

DAY = 86400


def _entry(cache, kind, key, size, days_ago, meta=None):
    path = cache / kind / key
    path.mkdir(parents=True)
    (path / "blob").write_bytes(os.urandom(size))
    (path / "meta.json").write_text(json.dumps(meta or {"arch": "i386-pae", "kernel": key[:4]}))
    use = cache / kind / f"{key}.use"
    use.touch()
    when = time.time() - days_ago * DAY
    os.utime(use, (when, when))
    return path


@pytest.fixture
def cache(isolated_cache):
    _entry(isolated_cache, "kernels", "a" * 20, 300_000, days_ago=1)  # needed
    _entry(isolated_cache, "kernel-sources", "b" * 20, 900_000, days_ago=30)  # an old point release
    _entry(isolated_cache, "tree-builds", "c" * 20, 500_000, days_ago=2)
    _entry(isolated_cache, "testcases", "d" * 20, 100_000, days_ago=10)
    (isolated_cache / "tree-builds" / f"{'c' * 20}.lock").touch()  # lock files are not entries
    (isolated_cache / "kernels" / f"{'e' * 20}.tmp-1").mkdir()  # nor a build's work directory
    return isolated_cache


NEEDED = {"kernels": {"a" * 20}}


def test_entries_have_their_size_last_use_and_whether_the_plan_needs_them(cache):
    entries = {e.kind: e for e in cache_admin.list_entries(NEEDED)}
    assert sorted(entries) == ["kernel-sources", "kernels", "testcases", "tree-builds"]
    assert entries["kernels"].needed and not entries["kernel-sources"].needed
    assert 900_000 <= entries["kernel-sources"].size < 1_000_000
    assert abs(entries["kernel-sources"].last_used - (time.time() - 30 * DAY)) < 60
    assert entries["kernels"].what == "aaaa i386-pae"
    # A kind the plan could not judge is needed whole.
    assert all(e.needed for e in cache_admin.list_entries({"testcases": None}) if e.kind == "testcases")


def test_prune_removes_what_the_plan_does_not_need_least_recently_used_first(cache):
    entries = cache_admin.list_entries(NEEDED)
    total = sum(e.size for e in entries)
    result = cache_admin.prune(entries, 0, max_size=total - 800_000, progress=lambda _: None)
    # The source from 30 days ago goes first, and that is enough.
    assert [e.kind for e in result.removed] == ["kernel-sources"]
    assert not (cache / "kernel-sources" / ("b" * 20)).exists()
    assert (cache / "testcases" / ("d" * 20)).exists() and result.size_after <= total - 800_000
    result = cache_admin.prune(cache_admin.list_entries(NEEDED), 0, max_size=None, progress=lambda _: None)
    assert [e.kind for e in result.removed] == ["testcases", "tree-builds"]
    assert [p.name for p in (cache / "kernels").iterdir() if len(p.name) == 20] == ["a" * 20]
    assert not list(cache.glob("*/*-pruned")), "nothing half-removed is left"


def test_prune_never_removes_an_entry_a_running_lab_holds(cache):
    holder = subprocess.Popen([sys.executable, "-c", "import sys\nfrom lab.cache import Entry\n"
                               f"Entry('tree-builds', {'c' * 20!r}).hold()\nprint('held', flush=True)\n"
                               "sys.stdin.read()"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO,
                              env={**os.environ, "LAB_CACHE": str(cache)})
    try:
        assert holder.stdout.readline().strip() == "held"
        Entry("testcases", "d" * 20).hold()  # this process holds one too
        result = cache_admin.prune(cache_admin.list_entries(NEEDED), 0, max_size=None, progress=lambda _: None)
        assert [e.kind for e in result.removed] == ["kernel-sources"]
        assert sorted(e.kind for e in result.held) == ["testcases", "tree-builds"]
        assert (cache / "tree-builds" / ("c" * 20) / "blob").exists()
    finally:
        holder.stdin.close()
        holder.wait(timeout=10)
    release_holds()
    result = cache_admin.prune(cache_admin.list_entries(NEEDED), 0, max_size=None, progress=lambda _: None)
    assert sorted(e.kind for e in result.removed) == ["testcases", "tree-builds"]


def test_holding_an_entry_marks_it_used_now(cache):
    Entry("kernel-sources", "b" * 20).hold()
    (entry,) = [e for e in cache_admin.list_entries(NEEDED) if e.kind == "kernel-sources"]
    assert time.time() - entry.last_used < 60


@pytest.mark.parametrize("text, size", [("60G", 60 << 30), ("500M", 500 << 20), ("1.5T", int(1.5 * (1 << 40))),
                                        ("123", 123), ("2GiB", 2 << 30)])
def test_sizes(text, size):
    assert cache_admin.parse_size(text) == size


def test_a_bad_size_is_one_line_and_exit_2(cache, capsys, monkeypatch):
    with pytest.raises(UserError, match="--max-size 'lots': expected a size such as 60G"):
        cache_admin.parse_size("lots")
    assert main(["cache", "prune", "--max-size=-1G"]) == 2
    assert capsys.readouterr().err.strip() == "lab: error: --max-size '-1G': expected a size such as 60G, 500M or 1.5T"


def test_the_plans_needs_are_found_from_the_configs(isolated_cache):
    """With nothing fetched yet, the kernels, sources and testcases the default plan needs
    are known by key; images cannot be judged until the guest sources are fetched."""
    from lab.config import load_lab
    from lab.kernels import kernel_entry
    lab = load_lab(REPO)
    needed, unjudged = cache_admin.needed_keys(lab)
    assert kernel_entry(lab, lab.arches["i386-pae"], lab.kernels["6.1"]).key in needed["kernels"]
    assert kernel_entry(lab, lab.arches["sparc64"], lab.kernels["6.12-bpo"]).key in needed["kernels"]
    assert len(needed["kernel-sources"]) == 3  # 6.1, 6.12, 6.12-bpo
    assert needed["tree-builds"] == set() and needed["given-kernels"] == set()
    assert needed["images"] is None and any(note.startswith("images: kept whole") for note in unjudged)


def test_prune_under_max_size_does_nothing_and_over_it_stops_there(cache, capsys, monkeypatch):
    monkeypatch.setenv("LAB_ROOT", str(REPO))
    assert main(["cache", "prune", "--max-size", "10G"]) == 0
    assert "nothing to prune" in capsys.readouterr().out
    assert main(["cache", "prune", "--max-size", "1M"]) == 0
    out = capsys.readouterr().out
    assert f"removed kernel-sources/{'b' * 20}" in out and "tree-builds" not in out.split("cache:")[0]
    assert not (cache / "kernel-sources" / ("b" * 20)).exists() and (cache / "tree-builds" / ("c" * 20)).exists()


def test_a_bad_entry_is_listed_as_such_and_pruned(cache, capsys, monkeypatch):
    """Issue 27 item 11: one meta.json holding [] made `lab cache` and prune fail, so the
    nightly's prune did nothing. It is listed as bad and removed, even under a needed key;
    prune leaves no .use or .lock behind (item 17)."""
    monkeypatch.setenv("LAB_ROOT", str(REPO))
    bad = _entry(cache, "kernels", "f" * 20, 1000, days_ago=3)
    (bad / "meta.json").write_text("[]")
    (cache / "kernels" / f"{'f' * 20}.lock").touch()
    assert main(["cache"]) == 0
    out = capsys.readouterr().out
    assert f"{'f' * 20}" in out and "bad entry: its meta.json is not a JSON object" in out
    (entry,) = [e for e in cache_admin.list_entries({"kernels": {"f" * 20}}) if e.key == "f" * 20]
    assert not entry.needed, "a bad entry is rebuilt anyway: never kept for the plan"
    assert main(["cache", "prune"]) == 0
    assert not bad.exists()
    left = sorted(p.name for p in cache.glob("*/*") if p.name.startswith(("b" * 20, "f" * 20)))
    assert left == [], left
    assert Entry("kernels", "f" * 20).meta() is None


def test_a_waiting_lab_takes_a_new_lock_when_prune_removed_the_old_one(cache):
    import fcntl
    import threading
    from lab.cache import lock_file
    path = cache / "kernels" / "held.use"
    held = lock_file(path, fcntl.LOCK_EX)
    got = []
    waiter = threading.Thread(target=lambda: got.append(lock_file(path, fcntl.LOCK_SH)))
    waiter.start()
    time.sleep(0.2)
    path.unlink()  # as prune does, while holding it
    os.close(held)
    waiter.join(timeout=10)
    assert got and os.fstat(got[0]).st_ino == os.stat(path).st_ino, "the lock is on the file now at the path"
    os.close(got[0])
