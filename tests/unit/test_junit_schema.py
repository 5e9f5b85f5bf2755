"""junit.xml against the Jenkins JUnit schema, for every status and hostile output."""

from pathlib import Path

import xmlschema

from lab.report import write_reports
from lab.results import CellResult, combine_attempts

SCHEMA = xmlschema.XMLSchema(str(Path(__file__).parent.parent / "data" / "jenkins-junit.xsd"))
HOSTILE = "ctrl \x00\x01\x07\x1b[31m esc, ]]> cdata end, <tag> & amp, bad utf-8 \udcff\ufffd, emoji \U0001f600\n"


def _cells():
    statuses = ["PASS", "FAIL", "SKIP", "ERROR", "TIMEOUT", "XFAIL", "XPASS"]
    cells = []
    for n, status in enumerate(statuses):
        raw = "FAIL" if status == "XFAIL" else "PASS" if status == "XPASS" else status
        cell = CellResult("i386-pae", "6.1", f"t{n}", raw, f"{raw}: {HOSTILE}", stdout=HOSTILE, stderr=HOSTILE,
                          console=HOSTILE, kernel_excerpts=[HOSTILE], retries=[HOSTILE])
        if status in ("XFAIL", "XPASS"):
            cell.apply_expectation("FAIL", f"reason {HOSTILE}")
        cells.append(cell)
    repeated = combine_attempts([CellResult("i386-pae", "6.12", "race", s, f"{s}: {HOSTILE}", stdout=HOSTILE)
                                 for s in ("PASS", "FAIL", "ERROR")])
    return cells + [repeated]


def test_every_status_validates(tmp_path):
    meta = {"run_id": "r", "started": "", "finished": "", "arches": ["i386-pae"], "kernels": ["6.1", "6.12"],
            "testcases": [c.testcase for c in _cells()], "jobs": [["i386-pae", "6.1"], ["i386-pae", "6.12"]]}
    write_reports(tmp_path, _cells(), meta)
    errors = list(SCHEMA.iter_errors(str(tmp_path / "junit.xml")))
    assert errors == [], errors[:3]
    assert len(list(SCHEMA.to_dict(str(tmp_path / "junit.xml"))["testsuite"])) == 2


def test_hostile_output_stays_readable(tmp_path):
    cell = CellResult("i386-pae", "6.1", "t", "FAIL", "FAIL: x", stdout=HOSTILE)
    meta = {"run_id": "r", "started": "", "finished": "", "arches": ["i386-pae"], "kernels": ["6.1"],
            "testcases": ["t"], "jobs": [["i386-pae", "6.1"]]}
    write_reports(tmp_path, [cell], meta)
    text = SCHEMA.to_dict(str(tmp_path / "junit.xml"))["testsuite"][0]["testcase"][0]["system-out"][0]
    assert text.startswith("ctrl \\x00\\x01\\x07\\x1b[31m esc, ]]> cdata end, <tag> & amp, bad utf-8 \\udcff")


def test_suite_properties_describe_what_ran(tmp_path):
    cell = CellResult("sparc64", "6.12-bpo", "swp_exclusive", "PASS", "PASS: ok", kernel_version="6.12.95",
                      provenance={"qemu": "QEMU emulator version 7.2.22", "kernel_source": "linux-source-6.12 6.12.95",
                                  "config_sha256": "ab" * 32, "image_key": "k1", "host": "agent-3"})
    meta = {"run_id": "r", "started": "", "finished": "", "arches": ["sparc64"], "kernels": ["6.12-bpo"],
            "testcases": ["swp_exclusive"], "jobs": [["sparc64", "6.12-bpo"]]}
    write_reports(tmp_path, [cell], meta)
    assert SCHEMA.is_valid(str(tmp_path / "junit.xml"))
    suite = SCHEMA.to_dict(str(tmp_path / "junit.xml"))["testsuite"][0]
    props = {p["@name"]: p["@value"] for p in suite["properties"]["property"]}
    assert props["qemu"] == "QEMU emulator version 7.2.22" and props["config_sha256"] == "ab" * 32
    assert props["kernel_source"] == "linux-source-6.12 6.12.95" and props["kernel_version"] == "6.12.95"
    assert suite["@hostname"] == "agent-3" and suite["@name"] == "lab.sparc64.6.12-bpo"


def test_each_subtest_is_a_testcase_of_its_own(tmp_path):
    statuses = ("PASS", "FAIL", "SKIP", "XFAIL", "XPASS")
    subtests = [{"number": n, "name": f"Basic COW ... {HOSTILE} {n}", "status": s, "detail": HOSTILE, "section": ""}
                for n, s in enumerate(statuses, 1)]
    cell = CellResult("riscv64", "6.12", "cow", "FAIL", "fail 1", subtests=subtests)
    meta = {"run_id": "r", "started": "", "finished": "", "arches": ["riscv64"], "kernels": ["6.12"],
            "testcases": ["cow"], "jobs": [["riscv64", "6.12"]]}
    write_reports(tmp_path, [cell], meta)
    assert list(SCHEMA.iter_errors(str(tmp_path / "junit.xml"))) == []
    cases = SCHEMA.to_dict(str(tmp_path / "junit.xml"))["testsuite"][0]["testcase"]
    assert [c["@classname"] for c in cases] == ["lab.riscv64.6_12"] + ["lab.riscv64.6_12.cow"] * 5
    assert cases[1]["@name"].startswith("Basic COW ... ctrl \\x00") and "failure" not in cases[1]
    assert [("failure" in c, "skipped" in c) for c in cases[2:]] == [(True, False), (False, True), (False, True),
                                                                      (True, False)]


def _jenkins_split(classname: str) -> tuple[str, str]:
    """hudson.tasks.junit.CaseResult: the package is what comes before the last dot,
    the class what follows it ("(root)" when there is no dot)."""
    package, dot, cls = classname.rpartition(".")
    return (package, cls) if dot else ("(root)", classname)


def test_jenkins_shows_arch_as_package_and_kernel_as_class(tmp_path):
    """Issue 27 item 16: lab.i386-pae.6.1 was split by Jenkins into package lab.i386-pae.6, class 1."""
    cells = [CellResult("i386-pae", "6.1", "swp_exclusive", "PASS", "ok"),
             CellResult("sparc64", "6.12-bpo", "cow", "FAIL", "fail 1",
                        subtests=[{"number": 1, "name": "Basic COW", "status": "FAIL", "detail": "x", "section": ""}])]
    meta = {"run_id": "r", "started": "", "finished": "", "arches": ["i386-pae", "sparc64"],
            "kernels": ["6.1", "6.12-bpo"], "testcases": ["swp_exclusive", "cow"],
            "jobs": [["i386-pae", "6.1"], ["sparc64", "6.12-bpo"]]}
    write_reports(tmp_path, cells, meta)
    assert list(SCHEMA.iter_errors(str(tmp_path / "junit.xml"))) == []
    shown = {_jenkins_split(c["@classname"]) + (c["@name"],)
             for suite in SCHEMA.to_dict(str(tmp_path / "junit.xml"))["testsuite"] for c in suite["testcase"]}
    assert shown == {("lab.i386-pae", "6_1", "swp_exclusive"), ("lab.sparc64", "6_12-bpo", "cow"),
                     ("lab.sparc64.6_12-bpo", "cow", "Basic COW")}
