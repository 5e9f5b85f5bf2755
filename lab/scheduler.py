"""Run a plan: build what is missing, then one job per (arch, kernel), N at a time.

A job boots one guest and runs its testcases in it. A testcase that leaves the
guest unhealthy (timeout, lost SSH, crash) ends that boot; the job's remaining
testcases get a fresh guest. Every finished cell goes to the journal at once.
"""

from __future__ import annotations

import shlex
import socket
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from lab.config import Arch, KernelSource, Lab, Testcase
from lab.console import BootState, kernel_excerpts, kernel_problems, panic_line, tail
from lab.errors import BootError, BuildError, InfraError, PortTakenError
from lab.images import boot_initrd, ensure_image
from lab.kernels import KernelArtifact, ensure_kernel
from lab.qemu import QemuProcess, allow_starts, kill_all, qemu_argv
from lab.remote import Remote, client_key, wait_for_banner
from lab.results import CellResult, Journal, combine_attempts, parse_metrics, status_for_exit
from lab.testcases import TestcaseBinary, ensure_testcase
from lab.cache import sha256_file
from lab.capture import excerpt
from lab.sources import resolve
from lab.toolchain import qemu_binary, qemu_version

Progress = Callable[[str], None]

GUEST_DIR = "/tmp"
POWEROFF_WAIT_S = 15.0
PUSH_TIMEOUT_S = 60.0  # per SFTP operation and per check command of a push
SCRATCH_DISK_BYTES = 64 << 20  # sparse: costs no host disk until written


@dataclass(frozen=True)
class Job:
    arch: Arch
    kernel: KernelSource
    testcases: tuple[Testcase, ...]

    @property
    def name(self) -> str:
        return f"{self.arch.name}/{self.kernel.name}"


def plan_jobs(lab: Lab, arches: list[str], kernels: list[str], tests: list[str],
              kernels_chosen: bool = False) -> list[Job]:
    """arches x kernels; a kernel that declares its arches is only paired with those,
    unless the user chose the kernels explicitly (--kernel)."""
    cases = tuple(lab.testcases[t] for t in tests)
    return [Job(lab.arches[a], lab.kernels[k], cases) for a in arches for k in kernels
            if kernels_chosen or not lab.kernels[k].arches or a in lab.kernels[k].arches]


@dataclass
class Artifacts:
    """What one job boots and pushes; a build error instead where a build failed."""

    kernel: KernelArtifact | None = None
    initrd: Path | None = None
    host_key: str = ""
    binaries: dict[str, TestcaseBinary] = field(default_factory=dict)
    error: str | None = None  # kernel or image build failed: every cell of the job is ERROR
    case_errors: dict[str, str] = field(default_factory=dict)  # a testcase failed to compile
    provenance: dict[str, str] = field(default_factory=dict)  # recorded on every cell of the job


def _attempt(build: Callable, progress: Progress) -> tuple:
    """Run one build; a BuildError is reported at once and returned as (None, message)."""
    try:
        return build(), None
    except BuildError as exc:
        progress(f"ERROR: {exc}")
        return None, str(exc)


def prepare(lab: Lab, jobs: list[Job], progress: Progress) -> dict[str, Artifacts]:
    """Build (or find in the cache) every kernel, image and testcase binary the jobs need.

    A build failure is recorded on the jobs it affects; other jobs are unaffected.
    """
    _, public_key = client_key()
    images: dict[str, tuple] = {}
    binaries: dict[tuple[str, str], tuple] = {}
    prepared: dict[str, Artifacts] = {}
    for job in jobs:
        arch = job.arch
        if arch.name not in images:
            images[arch.name] = _attempt(lambda: ensure_image(lab, arch, progress), progress)
        image, image_error = images[arch.name]
        kernel, kernel_error = _attempt(lambda: ensure_kernel(lab, arch, job.kernel, progress), progress)
        art = Artifacts(kernel=kernel, error=image_error or kernel_error)
        art.provenance = {"qemu": qemu_version(qemu_binary(arch)), "kernel_source": resolve(job.kernel).description,
                          "host": socket.gethostname()}
        if kernel:
            art.provenance.update(kernel_release=kernel.version, config_sha256=sha256_file(kernel.config),
                                  kernel_key=kernel.key)
        if image:
            art.initrd, art.host_key = boot_initrd(image, public_key), image.host_key
            art.provenance["image_key"] = image.key
            art.provenance.update({f"guest_source_{pkg}": offer for pkg, offer in image.sources.items()})
        for case in job.testcases:
            if (arch.name, case.name) not in binaries:
                binaries[arch.name, case.name] = _attempt(lambda: ensure_testcase(lab, arch, case), progress)
            binary, error = binaries[arch.name, case.name]
            if binary:
                art.binaries[case.name] = binary
            else:
                art.case_errors[case.name] = error
        prepared[job.name] = art
    return prepared


class PortAllocator:
    """Loopback ports for guests' SSH forwards, never the same one twice in a run."""

    def __init__(self) -> None:
        self._given: set[int] = set()
        self._lock = threading.Lock()

    def take(self) -> int:
        with self._lock:
            while True:
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                    sock.bind(("127.0.0.1", 0))
                    port = sock.getsockname()[1]
                if port not in self._given:
                    self._given.add(port)
                    return port


@dataclass
class Guest:
    qemu: QemuProcess
    remote: Remote
    poweroff: tuple[str, ...]
    ready_s: float
    ssh_s: float
    scratch_disk: Path | None = None
    # Console text up to here is attributed to a cell already; boot messages go to the first.
    reported_offset: int = 0

    @property
    def console(self):
        return self.qemu.console

    def since_start(self) -> float:
        return time.monotonic() - self.qemu.started_at

    def shutdown(self) -> None:
        """Power off cleanly if possible; kill QEMU's process group if it lingers."""
        try:
            if not self.console.eof:
                self.remote.start_detached(list(self.poweroff))
            self.remote.close()
            self.qemu.wait_exit(POWEROFF_WAIT_S)
        finally:
            self.qemu.kill()
            if self.scratch_disk:
                self.scratch_disk.unlink(missing_ok=True)


class Runner:
    def __init__(self, lab: Lab, out_dir: Path, journal: Journal, *, accel: str = "tcg",
                 progress: Progress = lambda _: None, params: dict[str, dict] | None = None,
                 repeat: int = 1, timeout_factor: float = 1.0, retries: int = 1,
                 on_cell: Callable[[], None] = lambda: None):
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
        allow_starts()

    # --- the run -------------------------------------------------------------------

    def run(self, jobs: list[Job], artifacts: dict[str, Artifacts], parallel: int) -> None:
        """Run the jobs, `parallel` at a time; results go to the journal as they finish."""
        # Scratch disks live in the run directory: removed at the end, and at the start
        # of a resumed run if a killed lab could not remove them.
        self.scratch_dir = self.out_dir / ".scratch"
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
                    kill_all(closing=True)
                    pool.shutdown(wait=True, cancel_futures=True)
                    raise
        finally:
            shutil.rmtree(self.scratch_dir, ignore_errors=True)

    def record(self, cell: CellResult, art: Artifacts) -> None:
        if self.stop.is_set():
            return  # an interrupted cell is not a result; a resumed run would run it again
        cell.provenance = dict(art.provenance)
        expectation = self.lab.expectation(cell.arch, cell.kernel, cell.testcase)
        if expectation:
            racy = self.lab.testcases[cell.testcase].kind == "race"
            cell.apply_expectation(expectation.status, expectation.reason, racy=racy)
        self.journal.append(cell)
        detail = f": {cell.message}" if cell.status != "PASS" else ""
        self.progress(f"{cell.arch}/{cell.kernel} {cell.testcase}: {cell.status} ({cell.duration_s:.1f} s){detail}")
        self.on_cell()

    def run_job(self, job: Job, art: Artifacts) -> None:
        log_dir = self.out_dir / "logs" / job.arch.name / job.kernel.name
        log_dir.mkdir(parents=True, exist_ok=True)
        version = art.kernel.version if art.kernel else ""
        if art.error:
            for case in job.testcases:
                self.record(CellResult(job.arch.name, job.kernel.name, case.name, "ERROR", art.error,
                                       kernel_version=version), art)
            return
        # (testcase, attempt number): every attempt of every testcase, in order.
        pending = [(case, n) for case in job.testcases for n in range(1, self.repeat + 1)]
        attempts: dict[str, list[CellResult]] = {case.name: [] for case in job.testcases}
        retried: dict[tuple[str, int], list[str]] = {}  # infra errors that were retried, per attempt

        def finish(case: Testcase, cell: CellResult, n: int) -> None:
            cell.retries = retried.get((case.name, n), [])
            attempts[case.name].append(cell)
            if n == self.repeat:
                self.record(combine_attempts(attempts[case.name]), art)

        def may_retry(case: Testcase, n: int, error: str) -> bool:
            notes = retried.setdefault((case.name, n), [])
            if len(notes) >= self.retries:
                return False
            notes.append(error)
            self.progress(f"{job.name} {case.name}: retrying after an infrastructure error: {error}")
            return True

        boots = 0
        while pending and not self.stop.is_set():
            boots += 1
            console_log = log_dir / ("console.log" if boots == 1 else f"console-{boots}.log")
            try:
                guest = self.start_guest(job, art, console_log)
            except InfraError as exc:
                case, n = pending[0]
                if may_retry(case, n, f"boot {boots}: {exc}"):
                    continue
                text = console_log.read_text(errors="replace") if console_log.exists() else ""
                for case, n in pending:
                    finish(case, CellResult(job.arch.name, job.kernel.name, case.name, "ERROR", str(exc),
                                            kernel_version=version, console=tail(text, 40),
                                            kernel_messages=kernel_problems(text),
                                            kernel_excerpts=kernel_excerpts(text),
                                            logs={"console": self._rel(console_log)}), n)
                return
            try:
                while pending and not self.stop.is_set():
                    case, n = pending.pop(0)
                    cell, healthy = self.run_cell(job, art, guest, case, log_dir, console_log, n)
                    # Lost SSH or a crashed guest (not a test's own verdict): once more, on a fresh guest.
                    if cell.status == "ERROR" and not healthy and may_retry(case, n, cell.message):
                        pending.insert(0, (case, n))
                        break
                    finish(case, cell, n)
                    if not healthy or (case.fresh_boot and n < self.repeat):
                        break
            finally:
                guest.shutdown()

    # --- one guest ------------------------------------------------------------------

    def _scratch_disk(self, job: Job, console_log: Path) -> Path | None:
        """A fresh sparse disk of zeros for this boot, if a testcase needs a block device."""
        if not job.arch.qemu.disk or not any("blockdev" in c.needs for c in job.testcases):
            return None
        disk = self.scratch_dir / f"{job.arch.name}-{job.kernel.name}-{console_log.stem}.img"
        with disk.open("wb") as fh:
            fh.truncate(SCRATCH_DISK_BYTES)
        return disk

    def start_guest(self, job: Job, art: Artifacts, console_log: Path) -> Guest:
        arch = job.arch
        binary = qemu_binary(arch)
        disk = self._scratch_disk(job, console_log)
        for attempt in range(3):
            port = self.ports.take()
            argv = qemu_argv(arch, kernel=art.kernel.image, initrd=art.initrd, ssh_port=port,
                             accel=self.accel, binary=binary, scratch_disk=disk)
            qemu = QemuProcess(argv, console_log)
            # The exact command, for reproducing a boot by hand.
            console_log.with_suffix(".cmdline").write_text(shlex.join(argv) + "\n")
            try:
                console = qemu.start()
                break
            except PortTakenError:
                # Another process took the port between our check and QEMU's bind.
                if attempt == 2:
                    raise
        try:
            boot_timeout = arch.guest.boot_timeout_s * self.timeout_factor
            ssh_timeout = arch.guest.ssh_timeout_s * self.timeout_factor
            state, line = console.wait_boot(boot_timeout)
            if state is BootState.BOOTING:
                raise BootError(f"guest not ready within {boot_timeout:.0f} s "
                                f"(last console line: {_last_line(console.text())})")
            if state is not BootState.READY:
                raise BootError(f"guest did not boot: {line}")
            ready_s = time.monotonic() - qemu.started_at
            wait_for_banner(port, ssh_timeout, alive=lambda: not console.eof)
            remote = Remote(port, art.host_key, self.client_key, timeout_s=ssh_timeout)
            remote.connect()
            ssh_s = time.monotonic() - qemu.started_at
        except BaseException:
            qemu.kill()
            if disk:
                disk.unlink(missing_ok=True)
            raise
        self.progress(f"{job.name}: guest up (ready {ready_s:.1f} s, SSH {ssh_s:.1f} s after QEMU start)")
        return Guest(qemu, remote, arch.guest.poweroff, ready_s, ssh_s, disk)

    def run_cell(self, job: Job, art: Artifacts, guest: Guest, case: Testcase, log_dir: Path,
                 console_log: Path, attempt: int = 1) -> tuple[CellResult, bool]:
        """Push and run one testcase; returns the cell and whether the guest is still usable."""
        cell = CellResult(job.arch.name, job.kernel.name, case.name, "ERROR", "",
                          kernel_version=art.kernel.version,
                          timings={"ready_s": round(guest.ready_s, 3), "ssh_s": round(guest.ssh_s, 3)})
        cell.logs["console"] = self._rel(console_log)
        if case.name in art.case_errors:
            cell.message = art.case_errors[case.name]
            return cell, True
        binary = art.binaries[case.name]
        test_timeout = case.timeout_s * self.timeout_factor
        case_dir = log_dir / case.name / (f"attempt-{attempt}" if self.repeat > 1 else "")
        case_dir.mkdir(parents=True, exist_ok=True)
        logs = {name: case_dir / f"{name}.txt" for name in ("stdout", "stderr", "console")}
        offset = guest.console.offset()
        started = time.monotonic()
        healthy = True
        try:
            remote_path = f"{GUEST_DIR}/{case.name}"
            guest.remote.push(binary.path, remote_path, binary.sha256, timeout_s=PUSH_TIMEOUT_S * self.timeout_factor)
            argv = [remote_path, *case.arguments(self.params.get(case.name, {}))]
            if "blockdev" in case.needs and guest.scratch_disk:
                argv.append(f"--blockdev={job.arch.guest.blockdev}")
            result = guest.remote.run(argv, timeout_s=test_timeout, stdout_log=logs["stdout"],
                                      stderr_log=logs["stderr"])
        except InfraError as exc:
            cell.message = f"{exc} (last console line: {_last_line(guest.console.text(offset))})"
            healthy = False
            result = None
        cell.duration_s = round(time.monotonic() - started, 3)
        cell.timings["test_done_s"] = round(guest.since_start(), 3)
        console_text = guest.console.text(offset)
        cell.console = excerpt(console_text, f"the full console is in {self._rel(console_log)}")
        # Kernel reports since the previous cell of this boot (for the first: since boot).
        unreported, guest.reported_offset = guest.console.text_and_end(guest.reported_offset)
        cell.kernel_messages = kernel_problems(unreported)
        cell.kernel_excerpts = kernel_excerpts(unreported)
        if result is not None:
            cell.exit_code = result.exit_code
            cell.stdout, cell.stderr = result.stdout, result.stderr
            cell.status = status_for_exit(result.exit_code)
            cell.metrics = parse_metrics(result.stdout)
            cell.message = _summary(cell.status, result.exit_code, result.stdout, test_timeout)
            if result.timed_out:
                healthy = False  # the test may still be running: the next one gets a fresh guest
        state, line = _crash(console_text, guest)
        if state:
            # The guest crashed under the test: no answer from the test can be trusted,
            # unless the testcase says that a crash is what it looks for.
            cell.status = "FAIL" if case.crash_is_failure else "ERROR"
            cell.message, healthy = f"guest crashed during the test: {line}", False
        with logs["console"].open("w", encoding="utf-8", errors="replace") as fh:
            fh.write(console_text)
        for name, path in logs.items():
            if path.exists():
                cell.logs[f"test_{name}"] = self._rel(path)
        return cell, healthy

    def _rel(self, path: Path) -> str:
        return str(path.relative_to(self.out_dir))


def _crash(console_text: str, guest: Guest) -> tuple[bool, str]:
    panic = panic_line(console_text, exited=guest.console.eof)
    if panic:
        return True, panic
    if guest.console.eof:
        return True, "QEMU exited"
    return False, ""


def _last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1].strip() if lines else "no console output"


def _summary(status: str, exit_code: int | None, stdout: str, timeout_s: float) -> str:
    """One line for reports: the test's own verdict line if it printed one."""
    if status == "TIMEOUT":
        return f"no result within {timeout_s:.0f} s"
    lines = [line.strip() for line in stdout.splitlines() if line.strip()]
    verdicts = [line for line in lines if line.split(":")[0] in ("PASS", "FAIL", "SKIP", "ERROR")]
    line = verdicts[-1] if verdicts else (lines[-1] if lines else "no output")
    if status == "ERROR":
        return f"exit code {exit_code}: {line}"
    return line
