"""QEMU process lifecycle against fake qemu scripts: fast failure, readiness, no orphans."""

import os
import time

import pytest

from lab.console import BootState
from lab.errors import BootError, PortTakenError
from lab.qemu import Guests, QemuProcess


def _script(tmp_path, body):
    path = tmp_path / "qemu-system-fake"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


def _gone(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie still answers kill(0); it is gone once its state is Z or it is reaped.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] == "Z"
    except FileNotFoundError:
        return True


def test_early_exit_is_a_clear_boot_error(tmp_path):
    fake = _script(tmp_path, "echo 'qemu-system-fake: -netdev user,id=n0: Could not set up host forwarding rule' >&2\nexit 1\n")
    guests = Guests()
    qemu = QemuProcess([fake, "-x"], tmp_path / "console.log", guests)
    with pytest.raises(PortTakenError, match="qemu-system-fake exited at once: .*Could not set up host forwarding rule"):
        qemu.start()
    assert guests.kill_all() == 0


def test_an_early_exit_for_another_reason_is_a_plain_boot_error(tmp_path):
    fake = _script(tmp_path, "echo 'qemu-system-fake: -initrd /nope: could not load initrd' >&2\nexit 1\n")
    with pytest.raises(BootError) as exc:
        QemuProcess([fake, "-x"], tmp_path / "console.log", Guests()).start()
    assert type(exc.value) is BootError and "could not load initrd" in str(exc.value)


def test_ready_then_kill_leaves_no_process(tmp_path):
    # The child starts before READY: checked right after READY, it must already exist (under load too).
    fake = _script(tmp_path, "echo 'Linux version 6.1'\nsleep 1000 &\nsleep 0.7\necho 'qemu-lab: READY'\nwait\n")
    guests = Guests()
    qemu = QemuProcess([fake], tmp_path / "console.log", guests)
    console = qemu.start()
    state, _ = console.wait_boot(10)
    assert state is BootState.READY
    pid = qemu.pid
    children = [int(p) for p in os.listdir("/proc") if p.isdigit() and _ppid(int(p)) == pid]
    assert children, "the fake qemu should have a child"
    qemu.kill()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not all(_gone(p) for p in [pid, *children]):
        time.sleep(0.05)
    assert all(_gone(p) for p in [pid, *children]), "QEMU's whole process group must be killed"
    assert "qemu-lab: READY" in (tmp_path / "console.log").read_text()
    assert guests.kill_all() == 0


def test_kill_all_kills_registered_processes(tmp_path):
    fake = _script(tmp_path, "sleep 1000\n")
    guests = Guests()
    qemu = QemuProcess([fake], tmp_path / "console.log", guests)
    qemu.start()
    pid = qemu.pid
    assert guests.running() == 1 and guests.kill_all(closing=True) == 1
    assert _gone(pid)
    with pytest.raises(BootError, match="not starting QEMU: the lab is stopping"):
        QemuProcess([fake], tmp_path / "console2.log", guests).start()
    assert guests.running() == 0, "a refused start is not counted"
    guests.allow_starts()


def _ppid(pid):
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return int(fh.read().rsplit(")", 1)[1].split()[1])
    except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
        return None


def test_qemu_dies_when_the_lab_is_killed(tmp_path):
    """SIGKILL to the lab leaves no QEMU behind (parent-death signal), so no orphans ever."""
    import signal
    import subprocess
    import sys
    # Deaf to the pty hangup: only the parent-death signal can end it.
    fake = _script(tmp_path, "trap '' HUP\necho started\nexec sleep 1000\n")
    pidfile = tmp_path / "pid"
    code = ("import sys, time\nfrom pathlib import Path\nfrom lab.qemu import Guests, QemuProcess\n"
            f"q = QemuProcess([{fake!r}], Path({str(tmp_path / 'c.log')!r}), Guests())\nq.start()\n"
            f"Path({str(pidfile) + '.new'!r}).write_text(str(q.pid))\n"
            f"Path({str(pidfile) + '.new'!r}).rename({str(pidfile)!r})\ntime.sleep(1000)\n")
    lab = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not pidfile.exists():  # renamed into place whole
        time.sleep(0.05)
    qemu_pid = int(pidfile.read_text())
    assert not _gone(qemu_pid)
    lab.send_signal(signal.SIGKILL)
    lab.wait()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not _gone(qemu_pid):
        time.sleep(0.05)
    assert _gone(qemu_pid)
