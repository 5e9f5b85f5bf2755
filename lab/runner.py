"""Run the jobs of a plan, N at a time: boots, retries, signals, and the journal.

A job boots one guest and runs its testcases in it. A testcase that leaves the
guest unhealthy (timeout, lost SSH, crash) ends that boot; the job's remaining
testcases get a fresh guest. An infrastructure ERROR is retried (--retries), on a
fresh guest. Every finished cell goes to the journal at once.
"""

from __future__ import annotations

import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

from lab import rundir
from lab.artifacts import Artifacts
from lab.cell import PUSH_TIMEOUT_S, CellPlan, run_cell
from lab.schema import Lab, Testcase
from lab.console import kernel_excerpts, kernel_problems, tail
from lab.errors import Failure, InfraError
from lab.guest import BootRequest, PortAllocator, RunningGuest, make_scratch_disk, start_guest
from lab.journal import Journal
from lab.plan import Job
from lab.progress import Notify
from lab.qemu import Guests
from lab.ssh import client_key
from lab.results import CellResult, combine_attempts
from lab.status import Status

Attempt = tuple[Testcase, int]  # a testcase and its attempt number (1..repeat)


class _JobBook:
    """One job's bookkeeping: attempts still to run, attempts done, retries spent."""

    def __init__(self, runner: "Runner", job: Job, art: Artifacts):
        self.runner, self.job, self.art = runner, job, art
        self.pending: list[Attempt] = [(case, n) for case in job.testcases for n in range(1, runner.repeat + 1)]
        self.attempts: dict[str, list[CellResult]] = {case.name: [] for case in job.testcases}
        self.retried: dict[tuple[str, int], list[str]] = {}  # infra errors that were retried, per attempt

    def finish(self, case: Testcase, n: int, cell: CellResult) -> None:
        cell.retries = self.retried.get((case.name, n), [])
        self.attempts[case.name].append(cell)
        if n == self.runner.repeat:
            self.runner.record(combine_attempts(self.attempts[case.name]), self.art)

    def may_retry(self, case: Testcase, n: int, error: str) -> bool:
        notes = self.retried.setdefault((case.name, n), [])
        if len(notes) >= self.runner.retries:
            return False
        notes.append(error)
        self.runner.progress(f"{self.job.name} {case.name}: retrying after an infrastructure error: {error}")
        return True


class Runner:
    def __init__(self, lab: Lab, out_dir: Path, journal: Journal, *, accel: str = "tcg",
                 progress: Notify = lambda _: None, params: dict[str, dict] | None = None,
                 repeat: int = 1, timeout_factor: float = 1.0, retries: int = 1,
                 on_cell: Callable[[], None] = lambda: None, guests: Guests | None = None):
        self.lab = lab
        self.out_dir = out_dir
        self.journal = journal
        self.accel = accel
        self.progress = progress
        self.stop = threading.Event()
        self.ports = PortAllocator()
        self.params = params or {}  # testcase -> {parameter: value} given with --param
        self.repeat = repeat  # attempts per cell
        self.timeout_factor = timeout_factor  # scales boot, SSH and test deadlines (slow hosts)
        self.retries = retries  # extra tries after an infrastructure ERROR
        self.on_cell = on_cell  # called after each cell is in the journal (progress counts)
        self.client_key, _ = client_key()
        self.scratch_dir = out_dir / rundir.SCRATCH
        self.guests = guests or Guests()  # the command's (lab.cli); its own when run alone (tests)
        self.guests.allow_starts()

    def run(self, jobs: list[Job], artifacts: dict[str, Artifacts], parallel: int) -> None:
        """Run the jobs, `parallel` at a time; results go to the journal as they finish."""
        # Scratch disks live in the run directory: removed at the end, and at the start
        # of a resumed run if a killed lab could not remove them.
        shutil.rmtree(self.scratch_dir, ignore_errors=True)
        self.scratch_dir.mkdir(parents=True)
        try:
            with ThreadPoolExecutor(max_workers=max(1, parallel), thread_name_prefix="job") as pool:
                try:
                    # Submitting is inside the guard too: a signal between two submits must
                    # still stop and kill, not leave through the pool's waiting __exit__.
                    futures = [pool.submit(self.run_job, job, artifacts[job.name]) for job in jobs]
                    for future in futures:
                        future.result()
                except BaseException:
                    # Interrupted: stop scheduling and kill the guests first, so the
                    # workers see their guests gone instead of running to their deadlines.
                    self.stop.set()
                    self.guests.kill_all(closing=True)
                    pool.shutdown(wait=True, cancel_futures=True)
                    raise
        finally:
            shutil.rmtree(self.scratch_dir, ignore_errors=True)

    def record(self, cell: CellResult, art: Artifacts) -> None:
        if self.stop.is_set():
            return  # an interrupted cell is not a result; a resumed run would run it again
        cell.provenance = dict(art.provenance)
        racy = self.lab.testcases[cell.testcase].kind == "race"
        cell.apply_expectations(self.lab.expectations_for(cell.arch, cell.kernel, cell.testcase), racy=racy)
        self.journal.append(cell)
        detail = f": {cell.message}" if cell.status != "PASS" else ""
        self.progress(f"{cell.arch}/{cell.kernel} {cell.testcase}: {cell.status} ({cell.duration_s:.1f} s){detail}")
        self.on_cell()

    def run_job(self, job: Job, art: Artifacts) -> None:
        """Every attempt of every testcase of the job, over as many boots as that takes."""
        log_dir = rundir.job_logs(self.out_dir, job.arch.name, job.kernel.name)
        if art.error:
            for case in job.testcases:
                self.record(self._error_cell(job, art, case, art.error), art)
            return
        book = _JobBook(self, job, art)
        boots = 0
        while book.pending and not self.stop.is_set():
            boots += 1
            console_log = rundir.console_log(log_dir, boots)
            try:
                guest = self._boot(job, art, console_log)
            except InfraError as exc:
                case, n = book.pending[0]
                if book.may_retry(case, n, f"boot {boots}: {exc}"):
                    continue
                self._boot_failed(book, console_log, exc)
                return
            try:
                self._run_in(guest, book, log_dir, console_log)
            finally:
                guest.shutdown()

    def _run_in(self, guest: RunningGuest, book: _JobBook, log_dir: Path, console_log: Path) -> None:
        """Run pending attempts in this guest until none is left or the guest is unusable."""
        while book.pending and not self.stop.is_set():
            case, n = book.pending.pop(0)
            cell, healthy = run_cell(guest, self._cell_plan(book.job, book.art, case, n, log_dir, console_log))
            # Lost SSH or a crashed guest (not a test's own verdict): once more, on a fresh guest.
            if cell.status == "ERROR" and not healthy and book.may_retry(case, n, cell.message):
                book.pending.insert(0, (case, n))
                return
            book.finish(case, n, cell)
            if not healthy or (case.fresh_boot and n < self.repeat):
                return

    def _boot(self, job: Job, art: Artifacts, console_log: Path) -> RunningGuest:
        needs_disk = job.arch.qemu.disk and any("blockdev" in c.needs for c in job.testcases)
        disk = self.scratch_dir / f"{job.arch.name}-{job.kernel.name}-{console_log.stem}.img"
        request = BootRequest(job.arch, art.kernel.image, art.initrd, art.host_key, self.client_key, console_log,
                              accel=self.accel, timeout_factor=self.timeout_factor,
                              scratch_disk=make_scratch_disk(disk) if needs_disk else None)
        guest = start_guest(request, self.ports, self.guests)
        self.progress(f"{job.name}: guest up (ready {guest.ready_s:.1f} s, SSH {guest.ssh_s:.1f} s after QEMU start)")
        return guest

    def _boot_failed(self, book: _JobBook, console_log: Path, exc: InfraError) -> None:
        """The guest did not come up (and no retry is left): every pending attempt is ERROR."""
        text = console_log.read_text(errors="replace") if console_log.exists() else ""
        for case, n in book.pending:
            cell = self._error_cell(book.job, book.art, case, Failure.of(exc))
            cell.console, cell.kernel_messages, cell.kernel_excerpts = \
                tail(text, 40), kernel_problems(text), kernel_excerpts(text)
            cell.logs = {"console": self._rel(console_log)}
            book.finish(case, n, cell)

    def _error_cell(self, job: Job, art: Artifacts, case: Testcase, failure: Failure) -> CellResult:
        version = art.kernel.version if art.kernel else ""
        return CellResult(job.arch.name, job.kernel.name, case.name, Status.ERROR, failure.message,
                          error_code=failure.code, kernel_version=version)

    def _cell_plan(self, job: Job, art: Artifacts, case: Testcase, attempt: int, log_dir: Path,
                   console_log: Path) -> CellPlan:
        argv_tail = [*case.arguments(self.params.get(case.name, {}))]
        if "blockdev" in case.needs and job.arch.qemu.disk:
            argv_tail.append(f"--blockdev={job.arch.guest.blockdev}")
        return CellPlan(arch=job.arch.name, kernel=job.kernel.name, kernel_version=art.kernel.version, case=case,
                        binary=art.binaries.get(case.name), build_error=art.case_errors.get(case.name),
                        argv_tail=tuple(argv_tail), timeout_s=case.timeout_s * self.timeout_factor,
                        push_timeout_s=PUSH_TIMEOUT_S * self.timeout_factor,
                        case_dir=rundir.cell_logs(log_dir, case.name, attempt if self.repeat > 1 else None),
                        console_log=self._rel(console_log), relative=self._rel,
                        subtest_expectations=self.lab.subtest_expectations(job.arch.name, job.kernel.name, case.name))

    def _rel(self, path: Path) -> str:
        return str(path.relative_to(self.out_dir))
