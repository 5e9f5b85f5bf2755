"""One cell: push a testcase into a running guest, run it, and judge it.

This is the one home of verdicts: how an exit code, a timeout, a guest crash or a
lost connection becomes PASS, FAIL, SKIP, ERROR or TIMEOUT, and the one-line
message that says why. (Expectations, XFAIL and XPASS, are applied later by the
runner from the configs; combined attempts by lab.results.)
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from lab import ktap
from lab.capture import excerpt
from lab.schema import Expectation, Testcase
from lab.console import kernel_excerpts, kernel_problems, last_line, panic_line
from lab.errors import Failure, GuestOutputError, InfraError
from lab.guest import RunningGuest
from lab.remote import CommandResult
from lab.results import CellResult, parse_metrics
from lab.status import Status
from lab.testcases import TestcaseBinary

GUEST_DIR = "/tmp"
PUSH_TIMEOUT_S = 60.0  # per SFTP operation and per check command of a push

# kselftest exit codes; anything else means the test could not judge: ERROR.
EXIT_STATUS = {0: Status.PASS, 1: Status.FAIL, 4: Status.SKIP}
VERDICT_PREFIXES = ("PASS", "FAIL", "SKIP", "ERROR")


def status_for_exit(exit_code: int | None) -> Status:
    """The status a test's exit code gives; None means it did not end in time."""
    if exit_code is None:
        return Status.TIMEOUT
    return EXIT_STATUS.get(exit_code, Status.ERROR)


def summary(status: str, exit_code: int | None, stdout: str, timeout_s: float) -> str:
    """One line for reports: the test's own verdict line if it printed one."""
    if status == "TIMEOUT":
        return f"no result within {timeout_s:.0f} s"
    lines = [line.strip() for line in stdout.splitlines() if line.strip()]
    verdicts = [line for line in lines if line.split(":")[0] in VERDICT_PREFIXES]
    line = verdicts[-1] if verdicts else (lines[-1] if lines else "no output")
    if status == "ERROR":
        return f"exit code {exit_code}: {line}"
    return line


def crash(console_text: str, exited: bool) -> str | None:
    """Why the guest is to be taken as crashed during a test (a panic, QEMU gone), or None."""
    panic = panic_line(console_text, exited=exited)
    if panic:
        return panic
    return "QEMU exited" if exited else None


@dataclass(frozen=True)
class CellPlan:
    """One attempt of one testcase in one guest, and where its logs go."""

    arch: str
    kernel: str
    kernel_version: str
    case: Testcase
    binary: TestcaseBinary | None
    build_error: Failure | None  # the testcase did not compile for this arch: the cell is ERROR with it
    argv_tail: tuple[str, ...]  # arguments after the binary's path
    timeout_s: float
    push_timeout_s: float
    case_dir: Path  # stdout.txt, stderr.txt, console.txt of this attempt
    console_log: str  # the boot's full console, relative to the run directory
    relative: Callable[[Path], str]  # a path in the run directory -> how reports name it
    # A kselftest's known failures, subtest by subtest (the [[expect]] tables with subtests).
    subtest_expectations: tuple[Expectation, ...] = ()


def run_cell(guest: RunningGuest, plan: CellPlan) -> tuple[CellResult, bool]:
    """Push and run one testcase; returns the cell and whether the guest is still usable."""
    cell = CellResult(plan.arch, plan.kernel, plan.case.name, "ERROR", "", kernel_version=plan.kernel_version,
                      timings={"ready_s": round(guest.ready_s, 3), "ssh_s": round(guest.ssh_s, 3)})
    cell.logs["console"] = plan.console_log
    if plan.build_error is not None or plan.binary is None:
        failure = plan.build_error or Failure("testcase.missing", f"no binary of testcase {plan.case.name}")
        cell.error_code, cell.message = failure.code, failure.message
        return cell, True
    plan.case_dir.mkdir(parents=True, exist_ok=True)
    logs = {name: plan.case_dir / f"{name}.txt" for name in ("stdout", "stderr", "console")}
    offset = guest.console.offset()
    started = time.monotonic()
    result, healthy = _push_and_run(guest, plan, logs, cell, offset)
    cell.duration_s = round(time.monotonic() - started, 3)
    cell.timings["test_done_s"] = round(guest.since_start(), 3)
    console_text = guest.console.text(offset)
    cell.console = excerpt(console_text, f"the full console is in {plan.console_log}")
    # Kernel reports since the previous cell of this boot (for the first: since boot).
    unreported, guest.reported_offset = guest.console.text_and_end(guest.reported_offset)
    cell.kernel_messages = kernel_problems(unreported)
    cell.kernel_excerpts = kernel_excerpts(unreported)
    if result is not None:
        healthy = _judge_result(cell, result, plan.timeout_s) and healthy
    crashed = _judge_crash(cell, console_text, guest.console.eof, plan.case)
    healthy = healthy and not crashed
    if plan.case.kselftest:
        # Also when the guest was lost (the cell is ERROR) or crashed: what the test printed counts.
        _judge_subtests(cell, logs["stdout"], plan.subtest_expectations, final=bool(crashed))
    with logs["console"].open("w", encoding="utf-8", errors="replace") as fh:
        fh.write(console_text)
    for name, path in logs.items():
        if path.exists():
            cell.logs[f"test_{name}"] = plan.relative(path)
    return cell, healthy


def _judge_crash(cell: CellResult, console_text: str, exited: bool, case: Testcase) -> bool:
    """Whether the guest crashed under the test (a panic on the console, QEMU gone): then no
    answer from the test can be trusted, and the cell is ERROR, unless the testcase says
    that a crash is what it looks for (FAIL)."""
    crashed = crash(console_text, exited=exited)
    if crashed:
        cell.status = Status.FAIL if case.crash_is_failure else Status.ERROR
        cell.error_code = "" if case.crash_is_failure else "guest.crash"
        cell.message = f"guest crashed during the test: {crashed}"
    return crashed is not None


def _push_and_run(guest: RunningGuest, plan: CellPlan, logs: dict[str, Path], cell: CellResult,
                  offset: int) -> tuple[CommandResult | None, bool]:
    """The test's result, or None (and the cell's message set) if the lab lost the guest."""
    try:
        remote_path = f"{GUEST_DIR}/{plan.case.name}"
        guest.remote.push(plan.binary.path, remote_path, plan.binary.sha256, timeout_s=plan.push_timeout_s)
        result = guest.remote.run([remote_path, *plan.argv_tail], timeout_s=plan.timeout_s,
                                  stdout_log=logs["stdout"], stderr_log=logs["stderr"])
        return result, True
    except InfraError as exc:
        cell.error_code = exc.code
        cell.message = f"{exc} (last console line: {last_line(guest.console.text(offset))})"
        return None, False


def _judge_subtests(cell: CellResult, stdout_log: Path, expectations: tuple[Expectation, ...],
                    final: bool = False) -> None:
    """A kselftest: every subtest from its TAP (also when cut short: what it printed
    counts), and the cell's status from them (XFAIL where every failure is expected),
    unless the exit says worse, or the status is `final` (the guest crashed or was lost)."""
    try:
        report = ktap.parse(_read_bounded(stdout_log, ktap.MAX_TAP_BYTES))
    except GuestOutputError as exc:
        cell.status, cell.error_code, cell.message = Status.ERROR, exc.code, f"could not judge the subtests: {exc}"
        return
    for expectation in expectations:
        report.expect(expectation.subtests, expectation.reason)
    cell.subtests = [dataclasses.asdict(s) for s in report.subtests]
    verdict = report.verdict()
    if final or verdict is None or cell.status in ("TIMEOUT", "ERROR"):
        if cell.subtests:
            cell.message += f" (after {len(cell.subtests)} subtests)"
        return
    status, message = verdict
    if not report.subtests and report.bail_out is None and cell.status != "PASS":
        return  # the exit code wins over an empty plan: 1 failed, 4 skipped the whole test
    if cell.exit_code == 1 and status in ("PASS", "SKIP"):
        status, message = "FAIL", f"exit code 1 although the subtests say {status}: {message}"
    cell.status, cell.message, cell.error_code = status, message, ""
    if reasons := [s.expected for s in report.subtests if s.expected]:
        # Shown beside the cell, and compared between runs: set whatever the outcome.
        cell.expected, cell.expected_reason = "FAIL", reasons[0]


def _read_bounded(path: Path, limit: int) -> str:
    """A log's text; GuestOutputError if it holds more than `limit` bytes."""
    if not path.exists():
        return ""
    with path.open("rb") as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise GuestOutputError(f"the test printed more than the {limit >> 20} MiB of TAP the lab reads")
    return data.decode(errors="replace")


def _judge_result(cell: CellResult, result: CommandResult, timeout_s: float) -> bool:
    """Status, message and metrics from what the test printed and returned; False when the
    guest may not be reused (the test may still be running after its deadline)."""
    cell.exit_code = result.exit_code
    cell.stdout, cell.stderr = result.stdout, result.stderr
    cell.status = status_for_exit(result.exit_code)
    cell.error_code = "test.exit-code" if cell.status is Status.ERROR else ""
    cell.metrics = parse_metrics(result.stdout)
    cell.message = summary(cell.status, result.exit_code, result.stdout, timeout_s)
    return not result.timed_out
