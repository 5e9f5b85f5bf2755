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
