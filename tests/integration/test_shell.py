"""`lab shell` on a real guest (i386-pae, Linux 6.1), driven through a terminal as a
person drives it: SSH with a pty (window size, Ctrl-C), one command, the serial
console, and a terminal that closes. No QEMU may outlive any of them."""

import os
import subprocess
import sys
import time

import pexpect
import pytest

from conftest import REPO

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_orphan_qemu")]

SHELL = [sys.executable, "-m", "lab", "shell", "--arch", "i386-pae", "--kernel", "6.1", "--test", "swp_exclusive"]
PROMPT = "# "
BOOT_S = 600  # a cold cache builds the kernel and the image first


def _spawn(tmp_path, *extra) -> pexpect.spawn:
    child = pexpect.spawn(SHELL[0], [*SHELL[1:], "--out", str(tmp_path / "shell"), *extra], cwd=str(REPO),
                          dimensions=(24, 80), encoding="utf-8", codec_errors="replace", timeout=60)
    child.logfile_read = sys.stderr
    return child


def _until(child: pexpect.spawn, send: str, want: str, deadline_s: float = 60) -> None:
    """Send `send` until `want` comes back: the handshake is the answer, not a pause."""
    deadline = time.monotonic() + deadline_s
    while True:
        child.send(send)
        if child.expect([want, pexpect.TIMEOUT], timeout=2) == 0:
            return
        assert time.monotonic() < deadline, f"no {want!r} after sending {send!r} for {deadline_s:.0f} s"


def test_interactive_shell_has_a_terminal_the_testcase_and_ctrl_c(tmp_path):
    child = _spawn(tmp_path)
    child.expect("testcases in the guest: /tmp/swp_exclusive", timeout=BOOT_S)
    child.expect(PROMPT)
    child.sendline("stty size; uname -m")
    child.expect("24 80")
    child.expect("i686")
    child.setwinsize(40, 120)  # the lab passes SIGWINCH's new size on to the guest's pty
    _until(child, "stty size\r", "40 120")
    # The pushed binary runs: 6.1 on i386-pae loses the exclusive marker (the seed fact).
    child.sendline("/tmp/swp_exclusive; echo rc=$?")
    child.expect("FAIL: page was replaced during COW")
    child.expect("rc=1")
    child.sendline("echo go-$((2*3)); sleep 100; echo slept")
    child.expect("go-6")  # the guest runs the line: its sleep is next
    child.sendcontrol("c")  # goes to the guest's sleep, not to the lab
    child.sendline("echo after-$((6*7))")
    child.expect("after-42", timeout=15)
    assert "slept" not in child.before
    child.sendline("exit 7")
    child.expect(pexpect.EOF, timeout=60)
    child.close()
    assert child.exitstatus == 7
    assert (tmp_path / "shell" / "console.log").read_text().count("qemu-lab: READY") == 1


def test_a_command_runs_and_its_status_is_the_labs(tmp_path):
    proc = subprocess.run([*SHELL, "--out", str(tmp_path / "shell"), "--",
                           "sh", "-c", "echo out; echo err >&2; ls /tmp/swp_exclusive; exit 3"],
                          cwd=REPO, capture_output=True, text=True, timeout=BOOT_S)
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert proc.stdout.splitlines() == ["out", "/tmp/swp_exclusive"]
    assert "err" in proc.stderr.splitlines()
    assert "console log: " in proc.stderr


def test_a_command_past_its_timeout_exits_124(tmp_path):
    proc = subprocess.run([*SHELL, "--out", str(tmp_path / "shell"), "--timeout", "3", "--", "sleep", "60"],
                          cwd=REPO, capture_output=True, text=True, timeout=BOOT_S)
    assert proc.returncode == 124, proc.stderr[-2000:]
    assert "sleep did not finish within 3 s" in proc.stderr


def test_a_command_that_never_stops_printing_exits_124_at_its_timeout(tmp_path):
    """Issue 27 item 4: `lab shell --timeout 3 -- yes` never ended."""
    started = time.monotonic()
    proc = subprocess.Popen([*SHELL, "--out", str(tmp_path / "shell"), "--timeout", "3", "--", "yes"], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, stderr = proc.communicate(timeout=BOOT_S)
    assert proc.returncode == 124, stderr[-2000:]
    assert "yes did not finish within 3 s" in stderr
    assert time.monotonic() - started < BOOT_S


def test_serial_console_both_ways_and_ctrl_bracket_leaves(tmp_path):
    child = _spawn(tmp_path, "--console")
    child.expect("Ctrl-] leaves", timeout=BOOT_S)
    _until(child, "\r", PROMPT)
    child.send("echo con-$((1+1)) $(tty)\r")
    child.expect("con-2 /dev/tty")  # the console's own tty, so Ctrl-C works there too
    child.send("\x1d")
    child.expect(pexpect.EOF, timeout=60)
    child.close()
    assert child.exitstatus == 0


def test_closing_the_terminal_powers_the_guest_off(tmp_path):
    child = _spawn(tmp_path)
    child.expect("testcases in the guest", timeout=BOOT_S)
    child.expect(PROMPT)
    pid = child.pid
    os.close(child.child_fd)  # the terminal goes away: the kernel hangs up the lab (SIGHUP)
    deadline = time.monotonic() + 60
    status = None
    while time.monotonic() < deadline and status is None:
        done, code = os.waitpid(pid, os.WNOHANG)
        status = os.waitstatus_to_exitcode(code) if done else None
        time.sleep(0.2)
    assert status == 129, f"lab shell after its terminal closed: {status}"
    # and the autouse fixture checks that its QEMU is gone
