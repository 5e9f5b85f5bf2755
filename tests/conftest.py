import os
import shutil
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
def isolated_cache(tmp_path, monkeypatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("LAB_CACHE", str(cache))
    return cache


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
