from lab.cell import summary as _summary
from lab.guest import PortAllocator


def test_summary_uses_the_tests_verdict_line():
    out = "page size 4096\nself-check: ok\nFAIL: page was replaced during COW\n"
    assert _summary("FAIL", 1, out, 60) == "FAIL: page was replaced during COW"
    assert _summary("PASS", 0, "no verdict here\n", 60) == "no verdict here"
    assert _summary("ERROR", 3, "ERROR: self-check: page was kept after fork\n", 60) == \
        "exit code 3: ERROR: self-check: page was kept after fork"
    assert _summary("ERROR", 139, "", 60) == "exit code 139: no output"
    assert _summary("TIMEOUT", None, "partial\n", 60) == "no result within 60 s"


def test_ports_are_never_handed_out_twice():
    ports = PortAllocator()
    taken = [ports.take() for _ in range(50)]
    assert len(set(taken)) == 50
    assert all(1024 <= p <= 65535 for p in taken)


def test_banner_wait_stops_when_the_guest_is_gone():
    import socket

    import pytest

    from lab.errors import SshError
    from lab.ssh import wait_for_banner
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed: nothing listens
    checks = iter([True, True, False])  # QEMU lives through two checks, then is gone
    with pytest.raises(SshError, match="QEMU exited while waiting for the SSH banner") as gone:
        wait_for_banner(port, 30, alive=lambda: next(checks))  # not the 30 s deadline's message
    assert gone.value.code == "boot.failed"
    with pytest.raises(SshError, match=r"no SSH banner on 127.0.0.1:\d+ within 1 s") as silent:
        wait_for_banner(port, 1)
    assert silent.value.code == "boot.no-ssh", "what a known ERROR of a guest whose SSH never answers names"


def test_a_signal_while_submitting_jobs_still_stops_the_running_ones(tmp_path, isolated_cache):
    """The interrupt lands between two submits: the running job must be told to stop at once."""
    import threading
    import time

    import pytest

    from lab.config import load_lab
    from lab.journal import Journal
    from lab.plan import plan_jobs
    from lab.runner import Runner
    from conftest import REPO

    lab = load_lab(REPO)
    jobs = plan_jobs(lab, ["i386-pae"], ["6.1", "6.12"], ["swp_exclusive"])
    runner = Runner(lab, tmp_path, Journal(tmp_path / "journal.jsonl"))
    started = threading.Event()

    def running_job(job, art):  # a guest that runs until the lab stops it (or 20 s)
        started.set()
        runner.stop.wait(20)

    class SignalOnSecondJob(dict):
        def __getitem__(self, name):
            if name == jobs[1].name:
                started.wait(5)
                raise KeyboardInterrupt  # what Python raises in the main thread on SIGINT
            return None

    runner.run_job = running_job
    begin = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        runner.run(jobs, SignalOnSecondJob(), parallel=2)
    assert runner.stop.is_set()
    assert time.monotonic() - begin < 5, "the running job was left to run to its end"
