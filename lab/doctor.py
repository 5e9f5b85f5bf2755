"""`lab doctor`: what this host lacks for the plan's arches, and what provides it."""

from __future__ import annotations

import shutil
from dataclasses import dataclass

from lab import procs
from lab.cache import cache_root
from lab.schema import Lab
from lab.errors import UserError
from lab.hostdeps import BASE_PACKAGES
from lab.images import source_states
from lab.kernels import resolve
from lab.qemu import qemu_user
from lab.hosttools import compiler_for, known_miscompile

# A tinyconfig kernel build tree is ~1.5 GB, an unpacked source tree as much again.
MIN_FREE_BYTES = 10 << 30


@dataclass(frozen=True)
class Check:
    scope: str  # "host" or an arch name
    what: str
    ok: bool
    fix: str = ""  # e.g. "apt-get install qemu-system-sparc"
    problem: str = "MISSING"  # what a failed check is called: MISSING, or BROKEN for a known-bad tool


def _installed(package: str) -> bool:
    out = procs.probe(["dpkg-query", "-W", "-f=${Status}", package]).stdout
    return "install ok installed" in out


def _tool(scope: str, binary: str, package: str) -> Check:
    return Check(scope, f"{binary} ({package})", shutil.which(binary) is not None, f"apt-get install {package}")


def checks(lab: Lab, arches: list[str], kernels: list[str]) -> list[Check]:
    out = [Check("host", f"package {p}", _installed(p), f"apt-get install {p}") for p in BASE_PACKAGES]
    for pkg, state in source_states(lab).items():
        if isinstance(state, UserError):
            out.append(Check("host", str(state), False, "./just setup (or fix configs/lab.toml)"))
        else:
            out.append(Check("host", f"guest source {pkg} {state} (pinned: {lab.guest_sources[pkg]})", True))
    try:
        user = qemu_user()
        out.append(Check("host", f"QEMU runs as {user or 'the lab user'}, in its seccomp sandbox", True))
    except UserError as exc:
        out.append(Check("host", str(exc), False, "./just setup"))
    cache = cache_root()
    cache.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(cache).free
    out.append(Check("host", f"free disk in {cache}: {free / 2**30:.1f} GiB (want {MIN_FREE_BYTES / 2**30:.0f})",
                     free >= MIN_FREE_BYTES, "free disk space or set LAB_CACHE"))
    for name in kernels:
        source = lab.kernels[name]
        try:
            resolved = resolve(source)
            out.append(Check("host", f"kernel {name}: {resolved.description}", True))
        except UserError as exc:
            fix = (f"apt-get install {source.installed_package}" if source.installed_package
                   else "./just setup (or fix configs/lab.toml)")
            out.append(Check("host", f"kernel {name}: {exc}", False, fix))
    for name in arches:
        arch = lab.arches[name]
        out.append(_tool(name, arch.qemu.binary, arch.qemu.package))
        out.append(_tool(name, f"{arch.toolchain.triple}-gcc", arch.toolchain.package))
        if arch.toolchain.broken and shutil.which(f"{arch.toolchain.triple}-gcc"):
            why = known_miscompile(arch, compiler_for(arch))
            out.append(Check(name, why or f"{arch.toolchain.triple}-gcc is not a build known to miscompile",
                             why is None, f"another {arch.toolchain.triple}-gcc build (configs/arches/{name}.toml)",
                             problem="BROKEN"))
        out.append(Check(name, f"static C library ({arch.toolchain.libc_package})",
                         _installed(arch.toolchain.libc_package), f"apt-get install {arch.toolchain.libc_package}"))
    return out


def render(results: list[Check]) -> str:
    lines = []
    for c in results:
        mark = "ok" if c.ok else c.problem
        lines.append(f"{mark:7} {c.scope:10} {c.what}" + ("" if c.ok else f"  -> {c.fix}"))
    failed = [c.problem for c in results if not c.ok]
    counts = [f"{failed.count(p)} {p.lower()}" for p in dict.fromkeys(["MISSING", *failed])]
    lines.append(f"\n{len(results) - len(failed)} ok, {', '.join(counts)}")
    return "\n".join(lines)
