from lab.scheduler import PortAllocator, _summary


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
    import time

    import pytest

    from lab.errors import SshError
    from lab.remote import wait_for_banner
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed: nothing listens
    started = time.monotonic()
    with pytest.raises(SshError, match="QEMU exited while waiting for the SSH banner"):
        wait_for_banner(port, 30, alive=lambda: time.monotonic() - started < 0.5)
    assert time.monotonic() - started < 3
    with pytest.raises(SshError, match=r"no SSH banner on 127.0.0.1:\d+ within 1 s"):
        wait_for_banner(port, 1)
