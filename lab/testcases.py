"""Testcases: C sources cross-compiled statically per arch, cached by content hash."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lab.buildlog import run_logged
from lab.cache import Entry, Workspace, content_key, ensure, sha256_file
from lab.config import Arch, Lab, Testcase
from lab.errors import BuildError
from lab.hosttools import compiler_for

# 64-bit file offsets so pagemap offsets do not overflow on 32-bit guests.
CFLAGS = ("-static", "-O2", "-Wall", "-Wextra", "-D_FILE_OFFSET_BITS=64", "-pthread")


@dataclass(frozen=True)
class TestcaseBinary:
    name: str
    path: Path
    sha256: str


def testcase_entry(lab: Lab, arch: Arch, case: Testcase) -> Entry:
    source = lab.testcases_dir / case.source
    headers = sorted(lab.testcases_dir.glob("*.h"))  # shared headers the sources include
    return Entry("testcases", content_key(source.read_bytes(), *(h.read_bytes() for h in headers), *CFLAGS,
                                          compiler_for(arch).version))


def ensure_testcase(lab: Lab, arch: Arch, case: Testcase) -> TestcaseBinary:
    compiler = compiler_for(arch)
    source = lab.testcases_dir / case.source
    entry = testcase_entry(lab, arch, case)

    def compile_(space: Workspace) -> dict:
        what = f"compiling testcase {case.name} for {arch.name}"
        binary = space.result / case.name
        run_logged([compiler.gcc, *CFLAGS, "-o", str(binary), str(source)], space.log, what=what)
        if not binary.is_file():
            raise BuildError(f"{what}: {compiler.gcc} exited 0 but wrote no binary (log: {space.log})")
        return {"testcase": case.name, "arch": arch.name, "compiler": compiler.version,
                "sha256": sha256_file(binary)}

    meta = ensure(entry, compile_)
    return TestcaseBinary(name=case.name, path=entry.path / case.name, sha256=meta["sha256"])
