"""A live guest: QEMU started with a fresh loopback port, booted to its console's
ready line, reachable over SSH with its pinned host key, and powered off (or
killed) at the end. Nothing here knows about testcases or verdicts."""

from __future__ import annotations

import shlex
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from lab.schema import Arch
from lab.console import BootState, Console, last_line
from lab.errors import BootError, PortTakenError
from lab.qemu import Guests, QemuProcess, qemu_argv, qemu_user
from lab.remote import Remote
from lab.ssh import wait_for_banner
from lab.hosttools import qemu_binary

POWEROFF_WAIT_S = 15.0
SCRATCH_DISK_BYTES = 64 << 20  # sparse: costs no host disk until written
PORT_ATTEMPTS = 3  # another process may take a port between our check and QEMU's bind


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


@dataclass(frozen=True)
class BootRequest:
    """What one boot needs: the arch, what to boot, and how long to wait for it."""

    arch: Arch
    kernel: Path
    initrd: Path
    host_key: str  # the only key accepted from this guest
    client_key: Path
    console_log: Path  # the console goes here; the QEMU command line beside it (.cmdline)
    accel: str = "tcg"
    timeout_factor: float = 1.0
    scratch_disk: Path | None = None


@dataclass
class RunningGuest:
    qemu: QemuProcess
    remote: Remote
    poweroff: tuple[str, ...]
    ready_s: float  # QEMU start to the console's ready line
    ssh_s: float  # QEMU start to an SSH session
    scratch_disk: Path | None = None
    # Console text up to here is attributed to a cell already; boot messages go to the first.
    reported_offset: int = 0

    @property
    def console(self) -> Console:
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


def make_scratch_disk(path: Path) -> Path:
    """A fresh sparse disk of zeros, for testcases that need a block device."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        fh.truncate(SCRATCH_DISK_BYTES)
    return path


def start_guest(request: BootRequest, ports: PortAllocator, guests: Guests) -> RunningGuest:
    """Boot and connect; BootError / SshError (InfraError) if the guest does not come up.
    On any failure QEMU is killed and the scratch disk removed."""
    qemu = None
    try:
        qemu, port = _start_qemu(request, ports, guests)
        return _connect(request, qemu, port)
    except BaseException:
        if qemu:
            qemu.kill()
        if request.scratch_disk:
            request.scratch_disk.unlink(missing_ok=True)
        raise


def _start_qemu(request: BootRequest, ports: PortAllocator, guests: Guests) -> tuple[QemuProcess, int]:
    binary, run_as = qemu_binary(request.arch), qemu_user()
    for attempt in range(1, PORT_ATTEMPTS + 1):
        port = ports.take()
        argv = qemu_argv(request.arch, kernel=request.kernel, initrd=request.initrd, ssh_port=port,
                         accel=request.accel, binary=binary, scratch_disk=request.scratch_disk, run_as=run_as)
        qemu = QemuProcess(argv, request.console_log, guests)
        # The exact command, for reproducing a boot by hand.
        request.console_log.with_suffix(".cmdline").write_text(shlex.join(argv) + "\n")
        try:
            qemu.start()
            return qemu, port
        except PortTakenError:
            if attempt == PORT_ATTEMPTS:
                raise
    raise AssertionError("unreachable")


def _connect(request: BootRequest, qemu: QemuProcess, port: int) -> RunningGuest:
    guest = request.arch.guest
    boot_timeout = guest.boot_timeout_s * request.timeout_factor
    ssh_timeout = guest.ssh_timeout_s * request.timeout_factor
    console = qemu.console
    state, line = console.wait_boot(boot_timeout)
    if state is BootState.BOOTING:
        raise BootError(f"guest not ready within {boot_timeout:.0f} s "
                        f"(last console line: {last_line(console.text())})")
    if state is not BootState.READY:
        raise BootError(f"guest did not boot: {line}")
    ready_s = time.monotonic() - qemu.started_at
    wait_for_banner(port, ssh_timeout, alive=lambda: not console.eof)
    remote = Remote(port, request.host_key, request.client_key, timeout_s=ssh_timeout)
    remote.connect()
    ssh_s = time.monotonic() - qemu.started_at
    return RunningGuest(qemu, remote, guest.poweroff, ready_s, ssh_s, request.scratch_disk)
