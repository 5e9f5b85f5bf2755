"""QEMU: a pure argv builder, and the lifecycle of one QEMU process.

Every QEMU the lab starts runs in its own session (pexpect gives it a pty and
makes the lab's guardian, which starts QEMU, its session leader), is registered
in a process-wide table, and is killed by process group on stop, on error and on
signals: no orphans.

QEMU runs untrusted kernels and tests, so it runs confined, as libvirt runs it:
under its seccomp sandbox, and, when the lab is root, as the unprivileged user
QEMU_USER (made by ./just setup) from the moment its files are open (-runas).
The kernel clears a process's parent-death signal when its uid changes, so a
dropped QEMU would outlive a SIGKILLed lab; the guardian (lab.guardian, root,
the lab's direct child) keeps the parent-death signal and takes QEMU down with it.
"""

from __future__ import annotations

import os
import pwd
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pexpect

from lab import procs
from lab.schema import Arch
from lab.console import Console
from lab.errors import BootError, PortTakenError, UserError

ACCELERATORS = ("tcg", "kvm")

# The user QEMU runs as when the lab is root (scripts/setup-host creates it).
QEMU_USER = "qemu-lab"
# QEMU's seccomp sandbox as libvirt asks for it: no obsolete system calls, no fork or
# exec, no scheduler or CPU-affinity changes. elevateprivileges=deny (no set*uid/gid)
# joins it only when QEMU drops no privileges itself: QEMU 7.2 installs the filter
# before -runas calls setuid, which the filter would then kill ("Bad system call",
# seen here). A QEMU that ran -runas has no capabilities and no_new_privs set, so it
# has no privilege to elevate to.
SANDBOX = "on,obsolete=deny,spawn=deny,resourcecontrol=deny"
SANDBOX_UNPRIVILEGED = SANDBOX + ",elevateprivileges=deny"

# QEMU exiting within this time after start is a setup failure (bad option,
# port taken, missing file), not a guest problem.
EARLY_EXIT_S = 0.5


def qemu_argv(arch: Arch, *, kernel: Path, initrd: Path, ssh_port: int, accel: str = "tcg",
              binary: str | None = None, scratch_disk: Path | None = None, run_as: str | None = None) -> list[str]:
    """The QEMU command line for one guest of `arch`. Pure: no I/O, no environment.
    `run_as`: the user QEMU drops to after opening its files (the lab is root)."""
    q = arch.qemu
    argv = [binary or q.binary]
    if q.machine:
        argv += ["-machine", q.machine]
    argv += ["-accel", accel]
    if q.cpu:
        argv += ["-cpu", q.cpu]
    argv += ["-m", str(q.memory_mib), "-smp", str(q.smp)]
    if q.bios:
        argv += ["-bios", q.bios]
    # The serial console is our stdio (a pty from pexpect); no monitor on it, so
    # guest output can never be taken for monitor commands and vice versa.
    argv += ["-display", "none", "-monitor", "none"]
    argv += ["-serial", "null"] * q.console_port + ["-serial", "stdio", "-no-reboot"]
    # panic=-1: reboot at once on panic, which -no-reboot turns into QEMU exiting.
    append = [f"console={q.console}", "panic=-1", *q.append]
    argv += ["-kernel", str(kernel), "-initrd", str(initrd), "-append", " ".join(append)]
    # The SSH port listens on loopback only. restrict=on: the guest reaches nothing
    # (not the host's loopback through 10.0.2.2, not the outside); only the forward
    # into it works. Tests run untrusted code as root in there.
    argv += ["-netdev", f"user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:{ssh_port}-:22",
             "-device", f"{q.nic},netdev=n0"]
    if q.rng:
        argv += ["-device", q.rng]
    if scratch_disk and q.disk:
        # A raw disk of zeros: the guest's O_DIRECT reads hit a real block device.
        argv += ["-drive", f"file={_option_value(str(scratch_disk))},if=none,format=raw,id=scratch",
                 "-device", f"{q.disk},drive=scratch"]
    argv += list(q.extra_args)
    argv += ["-sandbox", SANDBOX if run_as else SANDBOX_UNPRIVILEGED]
    if run_as:
        argv += ["-runas", run_as]
    return argv


def qemu_user() -> str | None:
    """The user QEMU runs as: QEMU_USER when the lab is root, else None (QEMU runs as
    the lab's own unprivileged user). UserError when root and the user is missing."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(QEMU_USER)
    except KeyError:
        raise UserError(f"the user {QEMU_USER}, which QEMU runs as when the lab is root, does not exist: "
                        f"run ./just setup (scripts/setup-host creates it)") from None
    return QEMU_USER


def _option_value(text: str) -> str:
    """A value inside a QEMU key=value,... option: a comma ends the value unless doubled."""
    return text.replace(",", ",,")


class Guests:
    """The QEMU processes one lab command started and has not reaped: made by cli.main,
    passed to what starts guests, and killed by main whatever ends the command."""

    def __init__(self) -> None:
        self._live: set[QemuProcess] = set()
        self._lock = threading.Lock()
        self._closing = False

    def allow_starts(self) -> None:
        """A new run may start QEMU again (after an interrupted one)."""
        with self._lock:
            self._closing = False

    def running(self) -> int:
        """How many QEMU processes are started and not reaped."""
        with self._lock:
            return len(self._live)

    def kill_all(self, closing: bool = False) -> int:
        """Kill every QEMU started and not reaped; returns how many.

        With closing=True no new QEMU may start afterwards (the lab is stopping).
        """
        with self._lock:
            self._closing = self._closing or closing
            procs = list(self._live)
        for proc in procs:
            proc.kill()
        return len(procs)

    def started(self, proc: QemuProcess, spawn: Callable[[], pexpect.spawn]) -> pexpect.spawn:
        """Spawn `proc`'s process and count it in one step under the lock, so a closing
        kill_all never misses a QEMU starting at that moment; BootError when closing."""
        with self._lock:
            if self._closing:
                raise BootError("not starting QEMU: the lab is stopping")
            child = spawn()
            self._live.add(proc)
            return child

    def discard(self, proc: QemuProcess) -> None:
        with self._lock:
            self._live.discard(proc)


class QemuProcess:
    """One running QEMU with its console followed into a log file."""

    def __init__(self, argv: list[str], console_log: Path, guests: Guests):
        self.argv = argv
        self.console_log = console_log
        self.guests = guests  # who kills it if the command stops
        self.child: pexpect.spawn | None = None
        self.console: Console | None = None
        self.started_at = 0.0

    @property
    def pid(self) -> int | None:
        return self.child.pid if self.child else None

    def start(self) -> Console:
        """Start QEMU; raise BootError if it exits at once (with what it printed)."""
        self.started_at = time.monotonic()
        # Under the guardian, with its parent-death signal (lab.procs): the kernel
            # signals it if the lab dies, even by SIGKILL, and it kills its process group,
            # QEMU with it, whatever user QEMU has become. (Closing the pty hangs QEMU up
            # too, but a hung or SIGHUP-deaf process would survive that.) The signal follows
            # the thread that started it; that job thread owns the guest until it is
            # powered off, so it never ends before its QEMU.
        guarded = [*procs.GUARDIAN, *self.argv]
        parent = os.getpid()
        try:
            self.child = self.guests.started(self, lambda: pexpect.spawn(
                guarded[0], guarded[1:], timeout=None, echo=False, env={**os.environ, "LC_ALL": "C"},
                preexec_fn=lambda: procs.guard(parent)))
        except pexpect.ExceptionPexpect as exc:
            raise BootError(f"could not start {self.argv[0]}: {exc}") from None
        self.console = Console(self.child, self.console_log)
        if self.console.wait_eof(EARLY_EXIT_S):
            self.kill()
            out = self.console.text().strip().splitlines()
            last = out[-1] if out else "no output"
            # QEMU 7.2: "-netdev ...: Could not set up host forwarding rule 'tcp:127.0.0.1:PORT-:22'".
            error = PortTakenError if "host forwarding rule" in last else BootError
            raise error(f"{os.path.basename(self.argv[0])} exited at once: {last}")
        return self.console

    def send(self, data: bytes) -> None:
        """Type into the serial console (QEMU's stdin)."""
        if self.child is not None:
            self.child.send(data)

    def wait_exit(self, timeout_s: float) -> bool:
        """Wait for QEMU to end by itself (e.g. after the guest powered off)."""
        return self.console is not None and self.console.wait_eof(timeout_s)

    def kill(self) -> None:
        """Kill QEMU's whole process group and reap it. Safe to call more than once."""
        child = self.child
        if child is None:
            return
        try:
            # The whole group, also when the guardian alone is gone (killed by someone):
            # QEMU in it keeps the group's id from being reused while it lives.
            os.killpg(child.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self.console:
            self.console.wait_eof(5.0)
            self.console.stop()
        try:
            child.close(force=True)
        except pexpect.ExceptionPexpect:
            pass
        self.guests.discard(self)
