"""Host tools: cross compilers, QEMU binaries and Debian source packages."""

from __future__ import annotations

import functools
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from lab.cache import Entry, content_key
from lab.config import Arch
from lab.errors import BuildError, MissingToolError


def require_tool(binary: str, package: str) -> str:
    path = shutil.which(binary)
    if not path:
        raise MissingToolError(binary, package)
    return path


@dataclass(frozen=True)
class Compiler:
    triple: str
    gcc: str
    version: str  # first line of `gcc --version`: part of every cache key

    @property
    def cross_compile(self) -> str:
        return f"{self.triple}-"


@functools.cache
def _gcc_version(gcc: str) -> str:
    out = subprocess.run([gcc, "--version"], capture_output=True, text=True, check=False).stdout
    return out.splitlines()[0] if out else "unknown"


def compiler_for(arch: Arch) -> Compiler:
    gcc = require_tool(f"{arch.toolchain.triple}-gcc", arch.toolchain.package)
    return Compiler(triple=arch.toolchain.triple, gcc=gcc, version=_gcc_version(gcc))


def known_miscompile(arch: Arch, compiler: Compiler) -> str | None:
    """Why this compiler cannot build a working kernel for the arch, if the arch's TOML says so."""
    broken = arch.toolchain.broken
    if broken and compiler.version in broken.versions:
        return f"{compiler.version} is known to miscompile {arch.name} kernels: {broken.reason}"
    return None


def qemu_binary(arch: Arch) -> str:
    return require_tool(arch.qemu.binary, arch.qemu.package)


def debian_source(package: str, fetch: bool = True) -> Path | None:
    """The unpacked Debian source of `package` (apt-get source), fetched once into the cache.

    Returns the source directory; its .dsc sits beside it and names the exact version.
    With fetch=False, returns None instead of fetching.
    """
    entry = Entry("debian-sources", package)
    meta = entry.meta()
    if meta:
        return entry.path / meta["dir"]
    if not fetch:
        return None
    require_tool("dpkg-source", "dpkg-dev")
    with entry.lock():
        meta = entry.meta()
        if meta:
            return entry.path / meta["dir"]
        with entry.building() as work:
            proc = subprocess.run(["apt-get", "source", "--only-source", "-q", package], cwd=work,
                                  capture_output=True, text=True, stdin=subprocess.DEVNULL)
            if proc.returncode != 0:
                last = (proc.stderr.strip().splitlines() or ["apt-get source failed"])[-1]
                raise BuildError(f"apt-get source {package} failed: {last} "
                                 "(are deb-src entries configured? ./just setup adds them)")
            dirs = [p.name for p in work.iterdir() if p.is_dir()]
            dscs = sorted(p.name for p in work.glob("*.dsc"))
            if len(dirs) != 1 or not dscs:
                raise BuildError(f"apt-get source {package}: unexpected result {sorted(dirs)} {dscs}")
            entry.publish(work, {"dir": dirs[0], "dsc": dscs[0]})
        return entry.path / dirs[0]


def source_identity(source_dir: Path) -> str:
    """A key for an unpacked Debian source: the content of its .dsc (names every file's hash)."""
    dscs = sorted(source_dir.parent.glob("*.dsc"))
    return content_key(*(p.read_bytes() for p in dscs))


@functools.cache
def qemu_version(binary: str) -> str:
    """First line of `qemu-system-X --version` (recorded with every result)."""
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False,
                         stdin=subprocess.DEVNULL).stdout
    return out.splitlines()[0] if out else "unknown"
