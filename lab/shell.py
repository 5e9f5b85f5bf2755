"""`lab shell`: one guest booted for a person, with the plan's testcase binaries in it.

Three ways in: an interactive SSH login with a terminal (window size follows the
user's, Ctrl-C and every other key go to the guest), one command whose exit
status becomes lab's (`lab shell ... -- CMD ARGS`), or the serial console
(`--console`; Ctrl-] leaves). Whichever way the session ends (exit, Ctrl-], the
terminal closed, a signal), the guest is powered off and QEMU never outlives it.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import sys
import termios
import time
import tty
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import paramiko

from lab import exitcodes
from lab.artifacts import Artifacts, prepare
from lab.cell import GUEST_DIR
from lab.schema import Lab
from lab.errors import BuildError, SshError
from lab.guest import BootRequest, PortAllocator, RunningGuest, make_scratch_disk, start_guest
from lab.qemu import Guests
from lab.plan import Job
from lab.progress import Notify
from lab.remote import Remote
from lab.ssh import client_key
from lab.stream import Ending, stream

DETACH = b"\x1d"  # Ctrl-]: leaves the serial console, as in telnet
POLL_S = 0.2
STATUS_WAIT_S = 5.0  # the exit status follows the end of output closely
PUSH_TIMEOUT_S = 120.0
# A root shell on the console's own tty (cttyhack finds it behind /dev/console) in a
# new session, so that it gets the tty as its controlling terminal and Ctrl-C works.
# Started over SSH only when --console asks: the guests of runs keep a quiet console.
CONSOLE_SHELL = ["setsid", "sh", "-c", "exec cttyhack sh -l </dev/console >/dev/console 2>&1"]


@dataclass(frozen=True)
class ShellRequest:
    job: Job  # one arch, one kernel, the testcases whose binaries go into the guest
    work: Path  # the console log and its command line go here
    command: tuple[str, ...] = ()  # run this instead of an interactive shell
    console: bool = False  # the serial console instead of SSH
    command_timeout_s: float = 3600.0
    accel: str = "tcg"
    timeout_factor: float = 1.0


def open_shell(lab: Lab, request: ShellRequest, progress: Notify, guests: Guests) -> int:
    """Boot, push, hand the guest to the user; the exit status of the shell or command."""
    art = prepare(lab, [request.job], progress)[request.job.name]
    if art.error:
        raise BuildError(art.error.message, code=art.error.code)
    console_log = request.work / "console.log"
    guest = _boot(request, art, console_log, progress, guests)
    try:
        pushed = _push(guest.remote, art)
        progress(f"console log: {console_log}")
        if pushed:
            progress(f"testcases in the guest: {', '.join(pushed)}")
        if request.command:
            return run_command(guest.remote, list(request.command), request.command_timeout_s)
        if request.console:
            progress("serial console attached; Ctrl-] leaves (and powers the guest off)")
            return attach_console(guest)
        return interactive(guest.remote)
    finally:
        with contextlib.suppress(OSError):  # the terminal may be gone (it was closed)
            progress("powering the guest off")
        guest.shutdown()


def _boot(request: ShellRequest, art: Artifacts, console_log: Path, progress: Notify, guests: Guests) -> RunningGuest:
    job = request.job
    request.work.mkdir(parents=True, exist_ok=True)
    needs_disk = job.arch.qemu.disk and any("blockdev" in c.needs for c in job.testcases)
    boot = BootRequest(job.arch, art.kernel.image, art.initrd, art.host_key, client_key()[0], console_log,
                       accel=request.accel, timeout_factor=request.timeout_factor,
                       scratch_disk=make_scratch_disk(request.work / "scratch.img") if needs_disk else None)
    progress(f"booting {job.name} (console log: {console_log})")
    guest = start_guest(boot, PortAllocator(), guests)
    progress(f"{job.name}: guest up (SSH {guest.ssh_s:.1f} s after QEMU start)")
    return guest


def _push(remote: Remote, art: Artifacts) -> list[str]:
    """Copy the testcase binaries into the guest; where they are."""
    pushed = []
    for name, binary in sorted(art.binaries.items()):
        path = f"{GUEST_DIR}/{name}"
        remote.push(binary.path, path, binary.sha256, timeout_s=PUSH_TIMEOUT_S)
        pushed.append(path)
    return pushed


@contextlib.contextmanager
def _raw_terminal(fd: int):
    """The user's terminal in raw mode (keys go through as typed), restored afterwards."""
    if not os.isatty(fd):
        yield
        return
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd)
        yield
    finally:
        with contextlib.suppress(termios.error, OSError):  # a closed terminal has no mode to restore
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def interactive(remote: Remote) -> int:
    """An SSH login shell with a terminal the size of the user's; its exit status."""
    stdin = sys.stdin.fileno()
    size = _terminal_size(stdin)
    channel = _open_pty_shell(remote, os.environ.get("TERM", "vt100"), size.columns, size.lines)

    def resize(*_):
        now = _terminal_size(stdin)
        channel.resize_pty(width=now.columns, height=now.lines)

    previous = signal.signal(signal.SIGWINCH, resize)
    try:
        with _raw_terminal(stdin):
            _relay(channel, stdin)
        if not channel.status_event.wait(STATUS_WAIT_S):
            raise SshError("the SSH connection to the guest was lost during the shell")
        return channel.recv_exit_status()
    finally:
        signal.signal(signal.SIGWINCH, previous)
        channel.close()


def _open_pty_shell(remote: Remote, term: str, columns: int, lines: int):
    """A login shell in the guest with a terminal of that type and size (each step bounded)."""
    try:
        channel = remote.open_channel("a shell")
        with remote.step("starting a shell with a terminal"):
            channel.get_pty(term=term, width=columns, height=lines)
            channel.invoke_shell()
    except (paramiko.SSHException, OSError, EOFError) as exc:
        raise SshError(f"starting a shell over SSH failed: {type(exc).__name__}: {exc}") from None
    return channel


def _terminal_size(fd: int) -> os.terminal_size:
    """The terminal's own size now (COLUMNS and LINES in the environment are the size at
    start, and stay so after a resize: shutil's answer is only the fallback)."""
    try:
        return os.get_terminal_size(fd)
    except OSError:
        return shutil.get_terminal_size()


def _relay(channel, stdin: int) -> None:
    """Guest output to stdout, the user's keys to the guest, until the shell ends."""
    out = sys.stdout.buffer
    sources = [channel, stdin]
    while True:
        readable, _, _ = select.select(sources, [], [], POLL_S)
        if channel in readable:
            data = channel.recv(65536)
            if not data:
                return
            out.write(data)
            out.flush()
        if stdin in readable:
            data = os.read(stdin, 4096)
            if data:
                channel.sendall(data)
            else:  # the user's input ended: so does the shell's
                channel.shutdown_write()
                sources.remove(stdin)
        if channel.closed:
            return


def run_command(remote: Remote, argv: list[str], timeout_s: float) -> int:
    """Run one command in the guest, its output streamed through (lab.stream); its exit
    status (124 after `timeout_s`, as timeout(1) says it)."""
    channel = remote.start(argv)
    try:
        end = stream(channel, _to(sys.stdout.buffer), _to(sys.stderr.buffer), time.monotonic() + timeout_s)
    finally:
        channel.close()
    if end.ending is Ending.LOST:
        raise SshError(f"the SSH connection was lost while {argv[0]} ran in the guest")
    if end.ending is Ending.TIMED_OUT:
        print(f"lab shell: {argv[0]} did not finish within {timeout_s:.0f} s", file=sys.stderr)
        return exitcodes.COMMAND_TIMEOUT
    return end.exit_code


def _to(out) -> Callable[[bytes], None]:
    """A sink that passes the guest's bytes straight on to the user's terminal."""
    def write(data: bytes) -> None:
        out.write(data)
        out.flush()
    return write


def attach_console(guest: RunningGuest) -> int:
    """The serial console, both ways, until Ctrl-] or until QEMU ends."""
    guest.remote.start_detached(CONSOLE_SHELL)
    stdin, out = sys.stdin.fileno(), sys.stdout.buffer
    offset = guest.console.offset()
    with _raw_terminal(stdin):
        while not guest.console.eof:
            readable, _, _ = select.select([stdin], [], [], POLL_S)
            if readable:
                data = os.read(stdin, 4096)
                if not data or DETACH in data:
                    break
                guest.qemu.send(data)
            text, offset_now = guest.console.text_and_end(offset)
            if offset_now > offset:
                out.write(text.replace("\n", "\r\n").encode())
                out.flush()
                offset = offset_now
    return 0
