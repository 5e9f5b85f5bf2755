"""The kernel's own selftests under real QEMU: kselftest mm/cow, cross-built from 6.12
for two arches, run on 6.1 and 6.12 guests, and reported subtest by subtest."""

import html
import json
import re
import xml.etree.ElementTree as ET

import pytest
import xmlschema

from lab.rundir import cell_page
from lab.report.junit import classname
from conftest import REPO, run_lab

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_orphan_qemu")]

# Both kernels of both arches are built for the other real tests already.
ARCHES = ("i386-pae", "x86_64")
KERNELS = ("6.1", "6.12")
SCHEMA = xmlschema.XMLSchema(str(REPO / "tests" / "data" / "jenkins-junit.xsd"))


@pytest.fixture(scope="module")
def cow_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("kselftest") / "run"
    proc = run_lab("run", "--arch", ",".join(ARCHES), "--kernel", ",".join(KERNELS), "--test", "cow",
                   "--out", str(out), timeout=3600)
    cells = {(c["arch"], c["kernel"]): c for c in json.loads((out / "results.json").read_text())["cells"]}
    return proc, out, cells


def _planned(cell) -> int:
    match = re.search(r"^1\.\.(\d+)$", cell["stdout"], re.M)
    assert match, f"no TAP plan line in {cell['arch']}/{cell['kernel']}'s output"
    return int(match.group(1))


def test_every_subtest_is_reported_with_a_unique_name(cow_run):
    proc, _, cells = cow_run
    assert set(cells) == {(a, k) for a in ARCHES for k in KERNELS}
    for key, cell in cells.items():
        names = [s["name"] for s in cell["subtests"]]
        assert len(names) == _planned(cell), key
        assert len(set(names)) == len(names), key
        assert cell["status"] in ("PASS", "FAIL", "XFAIL"), (key, cell["message"])
        assert "6.12" in cell["provenance"]["testcase_cow"], "the binary comes from the newest kernel"
    assert proc.returncode in (0, 1), proc.stderr


def test_the_kernels_let_cow_test_pins_and_huge_pages(cow_run):
    """GUP_TEST, debugfs, THP and hugetlbfs: on 6.12 the R/O pin, THP and hugetlb cases run."""
    _, _, cells = cow_run
    for arch in ARCHES:
        subtests = cells[arch, "6.12"]["subtests"]
        ran = [s["name"] for s in subtests if s["status"] != "SKIP"]
        skipped = {s["detail"] for s in subtests if s["status"] == "SKIP"}
        assert not any("gup_test" in why for why in skipped), (arch, skipped)
        for kind in ("R/O longterm GUP pin", "THP", "hugetlb"):
            assert any(kind in name for name in ran), (arch, kind, skipped)


def test_counts_agree_in_results_junit_and_html(cow_run):
    _, out, cells = cow_run
    SCHEMA.validate(str(out / "junit.xml"))
    junit = ET.parse(out / "junit.xml").getroot()
    matrix = (out / "matrix.html").read_text()
    for (arch, kernel), cell in cells.items():
        cases = junit.findall(f".//testcase[@classname='{classname(arch, kernel, 'cow')}']")
        assert sorted(c.get("name") for c in cases) == sorted(s["name"] for s in cell["subtests"])
        failed = sum(s["status"] in ("FAIL", "XPASS") for s in cell["subtests"])
        assert sum(c.find("failure") is not None for c in cases) == failed
        counts = " · ".join(f"{word} {n}" for word, n in _counts(cell["subtests"]) if n)
        assert counts in matrix, (arch, kernel, counts)
        page = (out / cell_page(arch, kernel, "cow")).read_text()
        assert page.count('<tr class="subtest"') == len(cell["subtests"])
        assert html.escape(cell["subtests"][0]["name"], quote=False) in page


def _counts(subtests):
    words = {"PASS": "ok", "FAIL": "fail", "SKIP": "skip", "XFAIL": "xfail", "XPASS": "xpass"}
    return [(word, sum(s["status"] == status for s in subtests)) for status, word in words.items()]


def test_a_kselftest_that_does_not_build_is_an_error_cell_and_the_rest_runs(repo_copy, tmp_path):
    (repo_copy / "testcases/nosuch.toml").write_text('description = "x"\nkselftest = "mm/no_such_test"\n')
    out = tmp_path / "run"
    proc = run_lab("run", "--arch", "i386-pae", "--kernel", "6.12", "--test", "nosuch,swp_exclusive",
                   "--out", str(out), root=repo_copy, timeout=1800)
    cells = {c["testcase"]: c for c in json.loads((out / "results.json").read_text())["cells"]}
    assert cells["nosuch"]["status"] == "ERROR"
    assert "kselftest mm/no_such_test for i386-pae from 6.12 did not build" in cells["nosuch"]["message"]
    assert "no_such_test" in cells["nosuch"]["message"].split("did not build:")[1]
    assert cells["swp_exclusive"]["status"] == "PASS", "the arch's other testcases still run"
    assert proc.returncode == 2
