"""Console classification on canned logs, and the follower on a real pty."""

from pathlib import Path

import pexpect

from lab.console import READY_MARKER, BootState, Console, boot_state, kernel_problems, panic_line

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
