"""JUnit XML for Jenkins: one testsuite per (arch, kernel), classname lab.<arch>.<kernel>;
a kselftest's subtests besides, one <testcase> each, classname lab.<arch>.<kernel>.<testcase>
and their unique, stable names, so that Jenkins keeps a history per subtest.

Jenkins splits a classname at its last dot into package and class, so the dots
inside names become '_' there: lab.i386-pae.6_1 is package lab.i386-pae, class 6_1
(with the dot, it would be package lab.i386-pae.6, class 1)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

from junit_xml import TestCase, TestSuite, to_xml_report_string

from lab import atomic
from lab.report.matrix import Matrix
from lab.status import Status

# Characters XML 1.0 cannot carry at all (not even as &#N;): control characters
# from test output, lone surrogates from undecodable bytes.
_NOT_XML = re.compile("[^\x09\x0a\x0d\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_safe(text: str | None) -> str | None:
    """Text that any XML parser accepts; unrepresentable characters become visible \\xNN escapes."""
    if text is None:
        return None
    return _NOT_XML.sub(lambda m: f"\\x{ord(m.group(0)):02x}" if ord(m.group(0)) < 0x100
                        else f"\\u{ord(m.group(0)):04x}", text)


def classname(*names: str) -> str:
    """lab.<name>.<name>...: a dot only between the parts, so Jenkins' last-dot split
    leaves the last name whole (names may hold dots: kernel 6.12-bpo, see lab.names)."""
    return ".".join(["lab", *(name.replace(".", "_") for name in names)])


def _test_case(cell) -> TestCase:
    stdout = cell.stdout
    if cell.kernel_excerpts:
        stdout = "kernel reports on the console:\n" + "\n\n".join(cell.kernel_excerpts) + "\n\n" + stdout
    if cell.retries:
        stdout = "retried after: " + "; ".join(cell.retries) + "\n\n" + stdout
    if cell.attempts:
        stdout = f"{cell.rate} over {len(cell.attempts)} attempts\n{cell.attempts_text()}\n\n{stdout}"
    case = TestCase(cell.testcase, classname=classname(cell.arch, cell.kernel), elapsed_sec=cell.duration_s,
                    stdout=xml_safe(stdout) or None, stderr=xml_safe(cell.stderr) or None)
    _add_outcome(case, cell.status, xml_safe(_outcome_message(cell)), xml_safe(cell.console) or None,
                 kind=cell.error_code)
    return case


def _outcome_message(cell) -> str:
    """The message of the cell's JUnit element: a renamed status says what was expected."""
    if cell.status == Status.XFAIL:
        return f"XFAIL: expected FAIL ({cell.expected_reason}): {cell.message}"
    if cell.status == Status.XERROR:
        return f"XERROR: known ERROR {cell.error_code} ({cell.expected_reason}): {cell.message}"
    if cell.status in (Status.XPASS, Status.TIMEOUT):
        return f"{cell.status}: {cell.message}"
    return cell.message


def _add_outcome(case: TestCase, status: Status, message: str, details: str | None = None, kind: str = "") -> None:
    """The child element Status.junit names (none for a pass), its type the error code
    when there is one. XFAIL and XERROR are skipped for Jenkins (not failures), their
    expectation and reason still shown."""
    if status.junit == "failure":
        case.add_failure_info(message=message, output=details, failure_type=str(status))
    elif status.junit == "error":
        case.add_error_info(message=message, output=details, error_type=kind or str(status))
    elif status.junit == "skipped":
        case.add_skipped_info(message=message)


def _subtest_cases(cell) -> list[TestCase]:
    cases = []
    for sub in cell.subtests:
        case = TestCase(xml_safe(sub["name"]), classname=classname(cell.arch, cell.kernel, cell.testcase),
                        elapsed_sec=0.0)
        expected = f" (expected FAIL: {sub['expected']})" if sub.get("expected") else ""
        detail = xml_safe(f"{sub['status']}: {sub['detail']}{expected}")
        _add_outcome(case, Status(sub["status"]), detail)
        cases.append(case)
    return cases


# Child order the Jenkins JUnit schema requires inside <testcase>.
_CHILD_ORDER = {"skipped": 0, "error": 1, "failure": 2, "system-out": 3, "system-err": 4}


def _to_jenkins_schema(document: str) -> bytes:
    """junit-xml's output in the shape of the Jenkins schema: <skipped> carries its
    message as text (the schema allows no attributes on it), children in schema order."""
    root = ET.fromstring(document)
    for case in root.iter("testcase"):
        for skipped in case.findall("skipped"):
            skipped.text = skipped.get("message") or skipped.text or ""
            skipped.attrib.clear()
        children = sorted(case, key=lambda child: _CHILD_ORDER.get(child.tag, 99))
        for child in list(case):
            case.remove(child)
        case.extend(children)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def write_junit(path: Path, matrix: Matrix) -> None:
    suites = []
    for arch, kernel in matrix.columns:
        cells = [c for t in matrix.rows if (c := matrix.cell(arch, kernel, t))]
        if not cells:
            continue
        version = next((c.kernel_version for c in cells if c.kernel_version), "")
        properties = {"arch": arch, "kernel": kernel, "kernel_version": version}
        properties.update(next((c.provenance for c in cells if c.provenance), {}))
        cases = [_test_case(c) for c in cells] + [case for c in cells for case in _subtest_cases(c)]
        suites.append(TestSuite(f"lab.{arch}.{kernel}", cases,
                                properties={k: xml_safe(str(v)) for k, v in properties.items()},
                                hostname=properties.get("host")))
    atomic.write_bytes(path, _to_jenkins_schema(to_xml_report_string(suites, prettyprint=True, encoding="utf-8")))
