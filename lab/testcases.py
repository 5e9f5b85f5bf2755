"""Testcases, cached by content hash per arch: our own C sources cross-compiled
statically, and kernel selftests (kselftest = "mm/cow") cross-built from a kernel
source after that source's headers are installed for the arch."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lab.buildlog import first_error_line, run_logged
from lab.cache import Entry, Workspace, content_key, ensure, sha256_file
from lab.schema import Arch, KernelSource, Lab, Testcase
from lab.errors import BuildError, BuildTimeout
from lab.hosttools import Compiler, compiler_for
from lab.kernel_build import link_tree
from lab.kernel_sources import resolve, source_tree
from lab.plan import newest_kernel
from lab.progress import Notify

# 64-bit file offsets so pagemap offsets do not overflow on 32-bit guests.
CFLAGS = ("-static", "-O2", "-Wall", "-Wextra", "-D_FILE_OFFSET_BITS=64", "-pthread")
KSELFTEST_RECIPE = "1"  # bump when the kselftest build below changes its output


@dataclass(frozen=True)
class TestcaseBinary:
    name: str
    path: Path
    sha256: str
    origin: str = ""  # a kselftest's: the kernel source it was built from


def kselftest_source(lab: Lab, arch: Arch, case: Testcase) -> KernelSource:
    """The kernel source a kselftest is built from: the testcase's choice, else the plan's
    newest kernel for the arch (as stable kernels are tested with the latest selftests)."""
    return lab.kernels[case.kselftest_kernel or newest_kernel(lab, arch.name)]


def testcase_entry(lab: Lab, arch: Arch, case: Testcase) -> Entry:
    compiler = compiler_for(arch)
    if case.kselftest:
        source = kselftest_source(lab, arch, case)
        return Entry("testcases", content_key(KSELFTEST_RECIPE, case.kselftest, resolve(source).identity,
                                              arch.kernel.make_arch, compiler.version))
    source_file = lab.testcases_dir / case.source
    headers = sorted(lab.testcases_dir.glob("*.h"))  # shared headers the sources include
    return Entry("testcases", content_key(source_file.read_bytes(), *(h.read_bytes() for h in headers), *CFLAGS,
                                          compiler.version))


def ensure_testcase(lab: Lab, arch: Arch, case: Testcase, progress: Notify = lambda _: None) -> TestcaseBinary:
    compiler = compiler_for(arch)
    entry = testcase_entry(lab, arch, case)
    if case.kselftest:
        source = kselftest_source(lab, arch, case)
        meta = ensure(entry, lambda space: _build_kselftest(arch, case, source, compiler, space, progress))
        if not meta["ok"]:
            raise BuildError(f"kselftest {case.kselftest} for {arch.name} from {source.name} did not build: "
                             f"{meta['error']} (log: {entry.path / 'build.log'})")
        origin = f"kselftest {case.kselftest} from {resolve(source).description}"
    else:
        meta = ensure(entry, lambda space: _compile_ours(lab, arch, case, compiler, space))
        origin = ""
    return TestcaseBinary(name=case.name, path=entry.path / case.name, sha256=meta["sha256"], origin=origin)


def _compile_ours(lab: Lab, arch: Arch, case: Testcase, compiler: Compiler, space: Workspace) -> dict:
    what = f"compiling testcase {case.name} for {arch.name}"
    binary = space.result / case.name
    run_logged([compiler.gcc, *CFLAGS, "-o", str(binary), str(lab.testcases_dir / case.source)], space.log,
               what=what)
    if not binary.is_file():
        raise BuildError(f"{what}: {compiler.gcc} exited 0 but wrote no binary (log: {space.log})")
    return {"ok": True, "testcase": case.name, "arch": arch.name, "compiler": compiler.version,
            "sha256": sha256_file(binary)}


def _build_kselftest(arch: Arch, case: Testcase, source: KernelSource, compiler: Compiler, space: Workspace,
                     progress: Notify) -> dict:
    """Headers for the arch, then the one test, static. A test that does not build for
    this arch (restricted in its Makefile, a missing library) is a cached result too."""
    what = f"kselftest {case.kselftest} for {arch.name}"
    src, build, out = space.work / "src", space.work / "build", space.work / "out"
    progress(f"building {what} from {source.name} (log: {space.log})")
    link_tree(source_tree(source, progress), src, space.log, f"{what}: linking")
    common = [f"ARCH={arch.kernel.make_arch}", f"CROSS_COMPILE={compiler.cross_compile}"]
    run_logged(["make", "-C", str(src), f"O={build}", *common, "headers"], space.log, what=f"{what}: make headers")
    directory, binary = case.kselftest.split("/")
    out.mkdir()
    try:
        run_logged(["make", "-C", str(src / "tools/testing/selftests" / directory), *common, "USERLDFLAGS=-static",
                    f"OUTPUT={out}", f"KHDR_INCLUDES=-isystem {build / 'usr/include'}", str(out / binary)],
                   space.log, what=f"{what}: make")
    except BuildTimeout:
        raise  # a slow or stuck host says nothing about the test: not kept as its result
    except BuildError:
        error = first_error_line(space.log.read_text(errors="replace")) or "make failed"
        return {"ok": False, "error": error, "testcase": case.name, "arch": arch.name}
    (out / binary).rename(space.result / case.name)
    return {"ok": True, "testcase": case.name, "arch": arch.name, "compiler": compiler.version,
            "kernel_source": source.name, "sha256": sha256_file(space.result / case.name)}
