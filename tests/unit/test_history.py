"""lab history: streaks, flaky marks and failure rates over five synthetic nights and
two real runs, given in any order."""

import pytest

from conftest import REPO
from lab import history
from lab.cli import main
from lab.errors import UserError
from nights import write_nights

SWP_61 = ("i386-pae", "6.1", "swp_exclusive")
SWP_612 = ("i386-pae", "6.12", "swp_exclusive")
ODIRECT_61 = ("i386-pae", "6.1", "odirect_swapout")
ODIRECT_612 = ("i386-pae", "6.12", "odirect_swapout")
SPARC = ("sparc64", "6.12", "swp_exclusive")


@pytest.fixture
def histories(tmp_path):
    nights = history.read_nights(write_nights(tmp_path))
    return nights, {h.key: h for h in history.cell_histories(nights, racy=frozenset({"odirect_swapout"}))}


def test_nights_are_ordered_by_when_they_started_whatever_the_order_given(histories):
    nights, _ = histories
    assert [n.label for n in nights] == ["2026-11-17 01:00", "2026-11-18 01:00", "2026-11-19 01:00",
                                         "2026-11-20 01:00", "2026-11-21 01:00", "2026-11-22 03:05",
                                         "2026-11-22 21:21"]


def test_strips_streaks_flaky_marks_and_rates(histories):
    _, by_key = histories
    want = {  # strip, now, first night of the streak, streak, flaky, rate
        SWP_61: ("xxxxxxx", "XFAIL", 0, 7, False, ""),
        SWP_612: ("PFPPPPP", "PASS", 2, 5, True, ""),  # failed one night in between
        ODIRECT_61: ("PxxPxxx", "XFAIL", 4, 3, False, "FAIL 5/7"),  # a race: reproduced or not, never flaky
        ODIRECT_612: ("..EPPPP", "PASS", 3, 4, False, "FAIL 0/4"),  # an ERROR gave no answer
        SPARC: ("Eeeee..", "not run", 5, 2, False, ""),
    }
    for key, (strip, now, since, streak, flaky, rate) in want.items():
        h = by_key[key]
        assert (h.strip, h.current, h.since, h.streak, h.flaky, h.rate) == (strip, now, since, streak, flaky, rate), key
    assert list(by_key) == [SWP_61, ODIRECT_61, SWP_612, ODIRECT_612, SPARC], "arch, kernel, testcase order"


def test_an_error_between_passes_is_flaky_and_a_fixed_cell_is_not():
    from lab.results import CellResult
    cell = lambda status: CellResult("a", "k", "t", status, "")  # noqa: E731
    assert history._flaky([cell("PASS"), cell("ERROR"), None, cell("PASS")])
    assert not history._flaky([cell("FAIL"), cell("FAIL"), cell("PASS"), cell("XFAIL")])
    assert history._flaky([cell("FAIL"), cell("PASS"), cell("TIMEOUT")])


def test_repeated_attempts_count_in_the_failure_rate():
    from lab.results import CellResult, combine_attempts
    night = combine_attempts([CellResult("a", "k", "odirect_swapout", s, "") for s in ("FAIL", "PASS", "PASS")])
    assert history._failure_rate([night, CellResult("a", "k", "odirect_swapout", "PASS", "")]) == "FAIL 1/4"


def test_lab_history_prints_a_line_per_cell_and_writes_history_html(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LAB_ROOT", str(REPO))
    dirs = write_nights(tmp_path)
    assert main(["history", *map(str, dirs), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("history of 7 nights (2026-11-17 01:00 .. 2026-11-22 21:21), 5 cells, 1 flaky\n")
    assert "i386-pae/6.12 swp_exclusive    PFPPPPP  PASS    since 2026-11-19 01:00 (5 nights)  FLAKY" in out
    assert "i386-pae/6.1 odirect_swapout   PxxPxxx  XFAIL   since 2026-11-21 01:00 (3 nights)  FAIL 5/7" in out
    page = (tmp_path / "out/history.html").read_text()
    assert page.count('<th class="night"') == 7 and page.count('data-flaky="yes"') == 1
    assert "&lt;b&gt;not bold&lt;/b&gt;" in page and "<b>not bold</b>" not in page
    assert "http" not in page, "the page needs no network"


def test_history_defaults_to_the_newest_nights_directory(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LAB_ROOT", str(REPO))
    dirs = write_nights(tmp_path)
    assert main(["history", *map(str, dirs)]) == 0
    assert (tmp_path / "real-2026-11-22-2121/history.html").is_file()


def test_bad_nights_are_one_line_and_exit_2(tmp_path, capsys):
    dirs = write_nights(tmp_path)
    assert main(["history", str(dirs[0]), str(tmp_path / "nowhere")]) == 2
    assert "no journal here" in capsys.readouterr().err
    with pytest.raises(UserError, match="is given twice"):
        history.read_nights([dirs[0], dirs[0].parent / ".." / dirs[0].parent.name / dirs[0].name])
    (dirs[1] / "journal.jsonl").write_text('{"arch": "../x"}\n')
    assert main(["history", str(dirs[0]), str(dirs[1])]) == 2
    assert "journal.jsonl" in capsys.readouterr().err


def test_a_night_the_cell_did_not_run_does_not_break_its_streak():
    assert history._since(["FAIL", "XFAIL", "XFAIL", None, "XFAIL"]) == 1
    assert history._since(["XFAIL", None, "PASS"]) == 2
    assert history._since(["PASS", None, None]) == 1
