"""Console classification on canned logs, and the follower on a real pty."""

import time
from pathlib import Path

import pexpect
import pytest

from lab.console import (READY_MARKER, BootState, Console, boot_state, kernel_excerpts, kernel_problems,
                         panic_line)

DATA = Path(__file__).parent / "data"


def _log(name):
    return (DATA / name).read_text()


def test_ready_log_is_ready():
    state, line = boot_state(_log("console-ready.log"), exited=False)
    assert state is BootState.READY and line == READY_MARKER


def test_ready_log_has_no_kernel_problems():
    assert kernel_problems(_log("console-ready.log")) == []


def test_panic_log_is_panic_even_after_exit():
    state, line = boot_state(_log("console-panic.log"), exited=True)
    assert state is BootState.PANIC
    assert line == "Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100"


def test_unfinished_boot_is_booting_until_qemu_exits():
    text = _log("console-hang.log")
    assert boot_state(text, exited=False)[0] is BootState.BOOTING
    assert boot_state(text, exited=True)[0] is BootState.EXITED


def test_warn_bug_oops_are_kernel_problems():
    problems = kernel_problems(_log("console-warn.log"))
    assert any("cut here" in p for p in problems)
    assert any(p.startswith("[   12.100100] WARNING: CPU: 0 PID: 77") for p in problems)
    assert any("BUG: unable to handle page fault" in p for p in problems)
    assert any("Oops: 0002" in p for p in problems)
    assert panic_line(_log("console-warn.log")) is None


def test_follower_logs_everything_and_sees_ready(tmp_path):
    log = tmp_path / "console.log"
    script = "printf 'booting\\r\\n'; sleep 0.3; printf 'qemu-lab: READY\\r\\n'; sleep 0.2; printf 'after\\377\\r\\n'"
    child = pexpect.spawn("sh", ["-c", script], timeout=None)
    console = Console(child, log)
    state, _ = console.wait_boot(10)
    assert state is BootState.READY
    offset = console.offset()
    assert console.wait_eof(10)
    console.stop()
    child.close()
    assert "after\ufffd" in console.text(offset)  # invalid UTF-8 is replaced, never fatal
    assert "\r" not in console.text()
    assert log.read_bytes().startswith(b"booting\r")  # raw bytes, as received


def test_boot_deadline(tmp_path):
    child = pexpect.spawn("sh", ["-c", "printf 'starting\\n'; sleep 30"], timeout=None)
    console = Console(child, tmp_path / "c.log")
    try:
        state, _ = console.wait_boot(0.5)
        assert state is BootState.BOOTING
    finally:
        child.close(force=True)
        console.stop()


def test_init_reported_failure():
    text = "qemu-lab: swap on /dev/zram0\nqemu-lab: BOOT-FAILED: dropbear did not start\n"
    assert boot_state(text, exited=False) == (BootState.FAILED, "qemu-lab: BOOT-FAILED: dropbear did not start")


def test_kernel_excerpts_span_cut_here_to_end_trace():
    from lab.console import kernel_excerpts
    text = _log("console-riscv-bug.log")  # real: riscv64 6.12 without ISA fallback on QEMU 7.2
    excerpts = kernel_excerpts(text)
    assert excerpts[0].splitlines()[0] == "------------[ cut here ]------------"
    assert excerpts[0].splitlines()[1] == "kernel BUG at arch/riscv/kernel/smpboot.c:151!"
    assert excerpts[0].splitlines()[-1] == "---[ end trace 0000000000000000 ]---"
    assert excerpts[1].splitlines()[0] == "Kernel panic - not syncing: Fatal exception in interrupt"
    assert excerpts[1].splitlines()[-1].startswith("---[ end Kernel panic")
    assert len(excerpts) == 2
    warn = kernel_excerpts(_log("console-warn.log"))
    assert warn[0].splitlines()[1].startswith("[   12.100100] WARNING: CPU: 0 PID: 77")
    assert warn[0].splitlines()[-1].endswith("---[ end trace 0000000000000000 ]---")
    assert kernel_excerpts(_log("console-ready.log")) == []


def test_lines_are_judged_only_when_complete():
    partial = "booting\nKernel panic - not syncing: A"
    assert boot_state(partial, exited=False) == (BootState.BOOTING, "")
    assert boot_state(partial + "ttempted to kill init!\n", exited=False) == (
        BootState.PANIC, "Kernel panic - not syncing: Attempted to kill init!")
    assert boot_state(partial, exited=True) == (BootState.PANIC, "Kernel panic - not syncing: A")
    assert boot_state("qemu-lab: BOOT-FAILED: drop", exited=False)[0] is BootState.BOOTING


@pytest.mark.parametrize("line", [
    "rcu: INFO: " * 20000,  # was quadratic: each start re-scanned the rest of the line
    "-" * 200000,
    "[ end trace " * 20000,
    "Kernel panic - not syncing" * 20000,
    "qemu-lab: BOOT-FAILED: " * 20000,
])
def test_kernel_message_patterns_take_linear_time_on_long_lines(line):
    # A complexity check with a wide margin (quadratic takes minutes here), not a benchmark.
    started = time.monotonic()
    kernel_problems(line + "\n")
    kernel_excerpts(line + "\n")
    boot_state(line, exited=False)
    panic_line(line, exited=False)
    assert time.monotonic() - started < 2.0


def test_the_patterns_still_find_what_they_are_for():
    assert kernel_problems("[  1.0] rcu: INFO: rcu_sched detected stalls on CPUs/tasks:\n"
                           "[  2.0] ------------[ cut here ]------------\n"
                           "[  3.0] rcu: INFO: rcu_preempt self-detected stall on CPU\n") == [
        "[  1.0] rcu: INFO: rcu_sched detected stalls on CPUs/tasks:",
        "[  2.0] ------------[ cut here ]------------",
        "[  3.0] rcu: INFO: rcu_preempt self-detected stall on CPU"]
    assert panic_line("x\nKernel panic - not syncing: Attempted to kill init!", exited=False) is None
    assert panic_line("x\nKernel panic - not syncing: Attempted to kill init!\n", exited=False) == \
        "Kernel panic - not syncing: Attempted to kill init!"
    assert boot_state("qemu-lab: BOOT-FAILED: no swap\n", exited=False) == (BootState.FAILED,
                                                                             "qemu-lab: BOOT-FAILED: no swap")


def test_a_console_that_never_stops_is_capped_in_the_log_and_in_memory(tmp_path, monkeypatch):
    from lab import capture, console as console_module
    monkeypatch.setattr(capture, "LOG_CAP_BYTES", 1 << 20)
    monkeypatch.setattr(console_module, "MEMORY_KEEP_CHARS", 256 << 10)
    log = tmp_path / "console.log"
    # 8 MiB of console output, then a last line.
    child = pexpect.spawn("sh", ["-c", "head -c 8388608 /dev/zero | tr '\\0' x; printf '\\nlast line\\n'"],
                          timeout=None)
    console = Console(child, log)
    assert console.wait_eof(60)
    console.stop()
    child.close()
    text, end = console.text_and_end(0)
    assert end == (8 << 20) + len("\nlast line\n")
    assert len(text) <= 2 * (256 << 10) and text.endswith("x\nlast line\n")
    assert console.text(end - 5) == "line\n", "offsets stay absolute after the oldest text is dropped"
    data = log.read_bytes()  # raw bytes from the pty: each "\n" came as "\r\n"
    assert len(data) < (1 << 20) + 200
    assert data.endswith(b"[qemu-lab: output cut at 1048576 bytes; 7340045 more bytes were not kept]\n")
