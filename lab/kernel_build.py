"""Kernel build steps every built kind shares: the host tools, the compiler check, the
make command (through ccache), tinyconfig + fragments, and the image target. The kinds
(lab.source_kernels, lab.kernel_trees) call these; this module imports none of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lab import atomic, ccache
from lab.buildlog import jobs, run_logged
from lab.schema import Arch, KernelSource, Lab
from lab.errors import BuildError
from lab.hosttools import Compiler, compiler_for, known_miscompile, require_tool
from lab.kconfig import defined_symbols, merge_fragments, read_config, unmet_options, wanted_options
from lab.owner import Owner


@dataclass(frozen=True)
class KernelArtifact:
    arch: str
    kernel: str
    key: str
    image: Path
    config: Path | None  # None: a given image without a .config
    version: str  # `make kernelrelease` (of a given image: from its config or its banner)
    provenance: tuple[tuple[str, str], ...] = ()  # more facts for every cell (e.g. a tree's HEAD)
    modules: Path | None = None  # an initramfs archive of the modules the guest loads (Debian's kernels)


def image_problem(arch: Arch, image: Path) -> str | None:
    """Why `image` is not a kernel this arch's QEMU machine boots, or None."""
    magic = arch.kernel.magic()
    with image.open("rb") as fh:
        head = fh.read(max((offset + len(want) for offset, want in magic), default=0))
    for offset, want in magic:
        found = head[offset:offset + len(want)]
        if found != want:
            machine = arch.qemu.machine or f"{arch.qemu.binary}'s default machine"
            return (f"not a kernel image for {arch.name} ({machine} boots {arch.kernel.image_target}): "
                    f"expected bytes {want.hex()} at offset {offset:#x}, found {found.hex() or 'end of file'} "
                    f"(configs/arches/{arch.name}.toml kernel.image_magic)")
    return None


def build_compiler(arch: Arch, source: KernelSource) -> Compiler:
    """The cross compiler for `arch`, once the host tools of a kernel build are there;
    BuildError if the lab does not build with it (a known miscompile: checked before the
    cache too, since an earlier build by such a compiler is just as broken)."""
    require_tool("make", "make")
    require_tool("bc", "bc")
    require_tool("flex", "flex")
    require_tool("bison", "bison")
    compiler = compiler_for(arch)
    if why := known_miscompile(arch, compiler):
        raise BuildError(f"kernel {source.name} for {arch.name} not built: {why}", code="build.refused")
    return compiler


def link_tree(tree: Path, src: Path, log: Path, what: str) -> None:
    """The build's <work>/src: hard links to a cached source tree (every build, kernels
    and kselftests alike, sees the same relative paths, so ccache reuses objects)."""
    run_logged(["cp", "-al", str(tree), str(src)], log, what=what)


def make_command(src: Path, build: Path, arch: Arch, compiler: Compiler) -> list[str]:
    """make for the tree at `src`, building in `build`, through ccache."""
    build.mkdir(parents=True, exist_ok=True)
    return ["make", "-C", str(src), f"O={build}", f"ARCH={arch.kernel.make_arch}",
            f"CROSS_COMPILE={compiler.cross_compile}", f"CC={' '.join(ccache.compiler_prefix())} {compiler.gcc}",
            f"-j{jobs()}"]


def make_image(lab: Lab, arch: Arch, make: list[str], log: Path, what: str, stats_log: Path,
               owner: Owner | None = None) -> ccache.Stats:
    """make the arch's image target; ccache's hits and misses of this make, also in the log.
    With an owner (a --tree of another user), make runs as them with their own ccache."""
    stats_log.unlink(missing_ok=True)
    env = {**ccache.environment(stats_log, owner), **(owner.environment() if owner else {})}
    run_logged(make + [arch.kernel.image_target], log, what=f"{what}: make {arch.kernel.image_target}",
               timeout_s=lab.build.timeout_s, env=env)
    stats = ccache.read_stats(stats_log)
    with log.open("a") as fh:
        fh.write(f"lab: {stats}\n")
    return stats


def configure(lab: Lab, arch: Arch, src: Path, build: Path, make: list[str], log: Path, what: str,
              fragments: list[Path]) -> None:
    """tinyconfig plus the fragments; BuildError if an option of theirs did not take effect."""
    limit = lab.build.timeout_s
    run_logged(make + ["tinyconfig"], log, what=f"{what}: make tinyconfig", timeout_s=limit)
    wanted = wanted_options(fragments)
    dot_config = build / ".config"
    # The build directory may be a tree owner's: read and replaced, never followed (a link).
    atomic.write_text(dot_config, merge_fragments(read_config(dot_config), wanted))
    check_config(lab, arch, src, build, make, log, what, fragments)


def check_config(lab: Lab, arch: Arch, src: Path, build: Path, make: list[str], log: Path, what: str,
                 fragments: list[Path]) -> None:
    """olddefconfig, then BuildError if an option of the fragments did not take effect
    (after configure, and before every incremental build of a tree: a checkout of
    another version may have changed what the options depend on)."""
    run_logged(make + ["olddefconfig"], log, what=f"{what}: make olddefconfig", timeout_s=lab.build.timeout_s)
    wanted = wanted_options(fragments)
    defined = defined_symbols(src, arch.kernel.arch_dir)
    unknown = sorted(set(wanted) - defined)
    if unknown:
        with log.open("a") as fh:
            fh.write(f"lab: not defined by this kernel version, not checked: {' '.join(unknown)}\n")
    dot_config = build / ".config"
    unmet = unmet_options(read_config(dot_config), wanted, defined)
    if unmet:
        raise BuildError(f"{what}: config options did not take effect (unmet dependencies?): "
                         f"{', '.join(unmet)} (config: {dot_config}; log: {log})")
