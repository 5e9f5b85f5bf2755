import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def repo_copy(tmp_path) -> Path:
    """A writable copy of the repo's configs/testcases/images, for config-error tests."""
    root = tmp_path / "lab"
    for d in ("configs", "testcases", "images"):
        shutil.copytree(REPO / d, root / d)
    return root


@pytest.fixture
def fake_i686_gcc(tmp_path, monkeypatch) -> Path:
    """An i686 cross gcc on PATH that only answers --version (for builds by fake Makefiles)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    gcc = bindir / "i686-linux-gnu-gcc"
    gcc.write_text("#!/bin/sh\necho 'i686-linux-gnu-gcc (fake) 12.2.0'\n")
    gcc.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:/usr/bin:/bin")
    return gcc


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("LAB_CACHE", str(cache))
    return cache


def run_lab(*args: str, root: Path | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    """`lab ARGS` as a user runs it (from the repo, with the configs of `root` if given),
    its output printed for the test log."""
    env = {**os.environ, "LAB_ROOT": str(root)} if root else dict(os.environ)
    proc = subprocess.run([sys.executable, "-m", "lab", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=timeout, env=env)
    print(proc.stdout, proc.stderr)
    return proc


def qemu_processes() -> list[str]:
    """Command lines of running qemu-system-* processes (for orphan checks)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmd and os.path.basename(cmd[0].decode(errors="replace")).startswith("qemu-system-"):
            found.append(" ".join(c.decode(errors="replace") for c in cmd))
    return found


@pytest.fixture
def no_orphan_qemu():
    """The test leaves no QEMU behind (given 20 s to power off or be killed)."""
    import time
    before = set(qemu_processes())
    yield
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and set(qemu_processes()) - before:
        time.sleep(0.2)
    assert set(qemu_processes()) - before == set(), "a QEMU process was left behind"


FAKE_APT = Path(__file__).resolve().parent / "unit" / "data" / "fake_apt.py"
# What the fake archive offers by default: each guest source in the suite configs/lab.toml pins,
# and a newer openssh in a suite nobody pinned (it must never be picked).
DEFAULT_OFFERS = [
    ["busybox", "1:1.35.0-4+deb12u1", "bookworm", "Sources"],
    ["dropbear", "2022.83-1+deb12u3", "bookworm", "Sources"],
    ["dropbear", "2022.83-1+deb12u1", "bookworm", "Sources"],
    ["openssh", "1:9.2p1-2+deb12u10", "bookworm", "Sources"],
    ["openssh", "1:10.0p1-7~bpo12+1", "bookworm-backports", "Sources"],
    ["linux-source-6.12", "6.12.95-1~bpo12+1", "bookworm-backports", "Packages"],
]


class FakeApt:
    """The state behind the fake apt-cache/apt-get (tests/unit/data/fake_apt.py)."""

    def __init__(self, path: Path):
        self.path = path
        self.write(offers=DEFAULT_OFFERS, configured=[["bookworm", "deb-src"], ["bookworm-backports", "deb"]],
                   fetch=[])

    def write(self, **fields) -> None:
        state = json.loads(self.path.read_text()) if self.path.exists() else {}
        state.update(fields)
        self.path.write_text(json.dumps(state))

    @property
    def calls(self) -> list[str]:
        return json.loads(self.path.read_text()).get("calls", [])


@pytest.fixture
def fake_apt(tmp_path, monkeypatch) -> FakeApt:
    """apt-cache and apt-get on PATH answering from a JSON state; apt's resolutions forgotten around it."""
    from lab import apt, kernel_sources as sources
    bindir = tmp_path / "apt-bin"
    bindir.mkdir()
    for tool in ("apt-cache", "apt-get"):
        (bindir / tool).write_text(f"#!{sys.executable}\nimport runpy\nrunpy.run_path({str(FAKE_APT)!r}, "
                                   f"init_globals={{'TOOL': {tool!r}}}, run_name='__main__')\n")
        (bindir / tool).chmod(0o755)
    state = FakeApt(tmp_path / "apt-state.json")
    monkeypatch.setenv("FAKE_APT_STATE", str(state.path))
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    monkeypatch.setattr(apt, "RETRY_PAUSES_S", (0.01, 0.01))
    apt.resolve.cache_clear()
    sources.resolve.cache_clear()
    yield state
    apt.resolve.cache_clear()
    sources.resolve.cache_clear()


@pytest.fixture
def fake_host(tmp_path, repo_copy, isolated_cache, fake_apt, monkeypatch):
    """A lab root whose kernel tarballs are small fakes, and fake qemu/gcc/apt on PATH."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("qemu-system-i386", "i686-linux-gnu-gcc"):
        (bindir / tool).write_text("#!/bin/sh\necho 'fake 1.0'\n")
        (bindir / tool).chmod(0o755)
    fakes = []
    for version in ("6.1", "6.12"):
        fake = tmp_path / f"linux-{version}.tar.xz"
        fake.write_bytes(b"not really a tarball " + version.encode())
        fakes.append(fake)
    (repo_copy / "configs/lab.toml").write_text(f"""
[plan]
arches = ["i386-pae"]
kernels = ["6.1", "6.12"]
testcases = ["swp_exclusive"]
[kernels."6.1"]
tarball = "{fakes[0]}"
[kernels."6.12"]
tarball = "{fakes[1]}"
[kernels."0.0"]
debian_package = "linux-source-0.0"
[guest_sources]
busybox = {{ suite = "bookworm" }}
dropbear = {{ suite = "bookworm" }}
openssh = {{ suite = "bookworm" }}
""")
    monkeypatch.setenv("LAB_ROOT", str(repo_copy))
    monkeypatch.setenv("PATH", f"{bindir}:{tmp_path / 'apt-bin'}:/usr/bin:/bin")
    return repo_copy


@pytest.fixture(autouse=True)
def cache_holds_released():
    """Entries a test's builds held (lab.cache.Entry.hold) are let go, as at the end of a run."""
    from lab.cache import release_holds
    yield
    release_holds()
