"""Host tools the lab runs: cross compilers (with their version, part of every cache key), QEMU
binaries (with their version, part of every provenance), and any other required program."""

from __future__ import annotations

import functools
import shutil
from dataclasses import dataclass

from lab import procs
from lab.schema import Arch
from lab.errors import MissingToolError


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
    out = procs.probe([gcc, "--version"]).stdout
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


@functools.cache
def qemu_version(binary: str) -> str:
    """First line of `qemu-system-X --version` (recorded with every result)."""
    out = procs.probe([binary, "--version"]).stdout
    return out.splitlines()[0] if out else "unknown"
