"""JUnit XML for Jenkins: one testsuite per (arch, kernel), classname lab.<arch>.<kernel>."""

from __future__ import annotations

from pathlib import Path

from junit_xml import TestCase, TestSuite, to_xml_report_string

from lab.report.matrix import Matrix


def _test_case(cell) -> TestCase:
    stdout = cell.stdout
    if cell.kernel_excerpts:
        stdout = "kernel reports on the console:\n" + "\n\n".join(cell.kernel_excerpts) + "\n\n" + stdout
    if cell.retries:
        stdout = "retried after: " + "; ".join(cell.retries) + "\n\n" + stdout
    if cell.attempts:
        stdout = f"{cell.rate} over {len(cell.attempts)} attempts\n{cell.attempts_text()}\n\n{stdout}"
    case = TestCase(cell.testcase, classname=f"lab.{cell.arch}.{cell.kernel}", elapsed_sec=cell.duration_s,
                    stdout=stdout or None, stderr=cell.stderr or None)
    details = cell.console if cell.console else None
    if cell.status == "FAIL":
        case.add_failure_info(message=cell.message, output=details, failure_type="FAIL")
    elif cell.status == "XFAIL":
        # Not a failure for Jenkins, but the expectation and its reason stay visible.
        case.add_skipped_info(message=f"XFAIL: expected FAIL ({cell.expected_reason}): {cell.message}")
    elif cell.status == "XPASS":
        case.add_failure_info(message=f"XPASS: {cell.message}", output=details, failure_type="XPASS")
    elif cell.status == "TIMEOUT":
        case.add_failure_info(message=f"TIMEOUT: {cell.message}", output=details, failure_type="TIMEOUT")
    elif cell.status == "ERROR":
        case.add_error_info(message=cell.message, output=details, error_type="ERROR")
    elif cell.status == "SKIP":
        case.add_skipped_info(message=cell.message)
    return case


def write_junit(path: Path, matrix: Matrix) -> None:
    suites = []
    for arch, kernel in matrix.columns:
        cells = [c for t in matrix.rows if (c := matrix.cell(arch, kernel, t))]
        if not cells:
            continue
        version = next((c.kernel_version for c in cells if c.kernel_version), "")
        suites.append(TestSuite(f"lab.{arch}.{kernel}", [_test_case(c) for c in cells],
                                properties={"arch": arch, "kernel": kernel, "kernel_version": version}))
    path.write_text(to_xml_report_string(suites, prettyprint=True, encoding="utf-8"), encoding="utf-8")
