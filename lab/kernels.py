"""Kernel builds: tinyconfig + config fragments, cross-compiled, cached by content hash.

Every build runs in one layout, <work>/src (hard links to the cached source tree)
beside <work>/build (make O=), through ccache (lab.ccache): the same relative paths
for every source, so a slightly different tree reuses the objects of unchanged files.
"""

from __future__ import annotations

import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from lab import atomic, ccache, safe_read
from lab.buildlog import compiler_diagnostic, jobs, run_logged
from lab.cache import Entry, Workspace, content_key, ensure
from lab.progress import Notify
from lab.config import Arch, KernelSource, Lab
from lab.errors import BuildError, BuildTimeout
from lab.kernel_sources import resolve, source_tree
from lab.hosttools import Compiler, compiler_for, known_miscompile, require_tool
from lab.owner import Owner

# Bump when the build procedure changes in a way that changes its output.
RECIPE_VERSION = "1"
CONFIG_MAX_BYTES = 4 * safe_read.MIB  # an allmodconfig .config is about 300 KiB



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


def fragments_for(lab: Lab, arch: Arch, source: KernelSource) -> list[Path]:
    """The fragments applied over tinyconfig, in order: common, the arch's, then the source's own."""
    return [lab.kernel_fragments_dir / "common.config", lab.kernel_fragments_dir / arch.kernel.fragment,
            *(Path(f) for f in source.fragments)]


def wanted_options(fragments: list[Path]) -> dict[str, str]:
    """Every option the fragments set, a later fragment overriding an earlier one."""
    wanted: dict[str, str] = {}
    for fragment in fragments:
        wanted.update(parse_fragment(fragment.read_text()))
    return wanted


def kernel_key(lab: Lab, arch: Arch, source: KernelSource, compiler: Compiler) -> str:
    return content_key(
        RECIPE_VERSION,
        resolve(source).identity,
        *(p.read_bytes() for p in fragments_for(lab, arch, source)),
        arch.kernel.make_arch, arch.kernel.image_target, arch.kernel.image_path,
        compiler.version,
    )


def parse_fragment(text: str) -> dict[str, str]:
    """CONFIG_X=val and '# CONFIG_X is not set' (value 'n') lines of a config fragment."""
    wanted: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if m := re.fullmatch(r"(CONFIG_\w+)=(.*)", line):
            wanted[m.group(1)] = m.group(2)
        elif m := re.fullmatch(r"# (CONFIG_\w+) is not set", line):
            wanted[m.group(1)] = "n"
    return wanted


def merge_fragments(base_config: str, wanted: dict[str, str]) -> str:
    """Replace every symbol named in `wanted` in a .config by the wanted value."""
    kept = [
        line for line in base_config.splitlines()
        if not (m := re.match(r"(?:# )?(CONFIG_\w+)[= ]", line)) or m.group(1) not in wanted
    ]
    added = [f"# {sym} is not set" if val == "n" else f"{sym}={val}" for sym, val in wanted.items()]
    return "\n".join(kept + added) + "\n"


def unmet_options(final_config: str, wanted: dict[str, str], defined: set[str] | None = None) -> list[str]:
    """Options of the fragments that olddefconfig did not keep (a dependency is missing).

    Symbols this kernel version does not define (not in `defined`) are not checked:
    fragments may name both the old and the new name of an option.
    """
    actual = parse_fragment(final_config)
    return [
        f"{sym}={val}" if val != "n" else f"# {sym} is not set"
        for sym, val in wanted.items()
        if actual.get(sym, "n") != val and (defined is None or sym in defined)
    ]


_KCONFIG_SYMBOL = re.compile(r"^\s*(?:menu)?config\s+(\w+)\s*$", re.MULTILINE)


def defined_symbols(tree: Path, arch_dir: str) -> set[str]:
    """Every CONFIG_ symbol the Kconfig files for this arch define (other arches' are not seen)."""
    symbols: set[str] = set()
    for kconfig in tree.rglob("Kconfig*"):
        parts = kconfig.relative_to(tree).parts
        if parts[0] == "arch" and len(parts) > 2 and parts[1] != arch_dir:
            continue
        if kconfig.is_file() and not kconfig.is_symlink():  # a tree's: never followed out of it
            symbols.update("CONFIG_" + s for s in _KCONFIG_SYMBOL.findall(kconfig.read_text(errors="replace")))
    return symbols


def ensure_kernel(lab: Lab, arch: Arch, source: KernelSource, progress: Notify = lambda _: None) -> KernelArtifact:
    """The built kernel for (arch, source): from the cache, or built now.

    A build that failed with a compiler error is cached as failed too (the same
    inputs fail the same way), and raises BuildError with that first error line.
    """
    if source.image:
        from lab.kernel_images import given_kernel  # nothing to build
        return given_kernel(lab, arch, source)
    if source.debian_kernel:
        from lab.debian_kernels import ensure_debian_kernel  # fetched, not built
        return ensure_debian_kernel(lab, arch, source, progress)
    require_tool("make", "make")
    require_tool("bc", "bc")
    require_tool("flex", "flex")
    require_tool("bison", "bison")
    compiler = compiler_for(arch)
    # Checked before the cache too: an earlier build by such a compiler is just as broken.
    if why := known_miscompile(arch, compiler):
        raise BuildError(f"kernel {source.name} for {arch.name} not built: {why}", code="build.refused")
    if source.tree:
        from lab.kernel_trees import ensure_tree_kernel  # it builds on this module's steps
        return ensure_tree_kernel(lab, arch, source, compiler, progress)
    entry = kernel_entry(lab, arch, source)
    key = entry.key
    meta = ensure(entry, lambda space: _build(lab, arch, source, compiler, space, progress))
    if not meta["ok"]:
        # Paths in the kernel tree read best relative to it (as in the kernel's own messages).
        error = re.sub(r"\S*/(?:kernel-sources/[0-9a-f]+|src)/", "", meta["error"])
        raise BuildError(f"kernel {source.name} for {arch.name} failed to build: {error} "
                         f"(log: {entry.path / 'build.log'})")
    return KernelArtifact(arch=arch.name, kernel=source.name, key=key, image=entry.path / "image",
                          config=entry.path / "config", version=meta["version"])


def _build(lab: Lab, arch: Arch, source: KernelSource, compiler: Compiler, space: Workspace,
           progress: Notify) -> dict:
    """Configure and build into `space`; the meta of the result (a compiler error is a result too)."""
    tree = source_tree(source, progress)
    what = f"kernel {source.name} for {arch.name}"
    log, src, build = space.log, space.work / "src", space.work / "build"
    started = time.monotonic()
    progress(f"building {what} (log: {log})")
    run_logged(["cp", "-al", str(tree), str(src)], log, what=f"{what}: linking the source tree")
    make = make_command(src, build, arch, compiler)
    # A configuration failure is raised, never cached: only the compiler's verdict on
    # the image build is deterministic for these inputs.
    configure(lab, arch, src, build, make, log, what, fragments_for(lab, arch, source))
    try:
        stats = make_image(lab, arch, make, log, what, space.work / "ccache-stats.log")
    except BuildTimeout:
        raise  # the host was slow or the build hung: not a property of these inputs
    except BuildError:
        error = compiler_diagnostic(log.read_text(errors="replace"))
        if error is None:
            raise  # not a compiler failure of the kernel itself: show it, do not cache it
        # A compiler error is deterministic for these inputs: cache the failure.
        shutil.copy(build / ".config", space.result / "config")
        return {"ok": False, "error": error, "seconds": round(time.monotonic() - started, 1)}
    release = (build / "include" / "config" / "kernel.release").read_text().strip()
    shutil.copy(build / arch.kernel.image_path, space.result / "image")
    shutil.copy(build / ".config", space.result / "config")
    meta = {"ok": True, "version": release, "arch": arch.name, "kernel": source.name,
            "compiler": compiler.version, "seconds": round(time.monotonic() - started, 1),
            "ccache": stats.to_dict()}
    progress(f"built {what}: {release} in {meta['seconds']} s ({stats})")
    return meta


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
    atomic.write_text(dot_config, merge_fragments(_read_config(dot_config), wanted))
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
    unmet = unmet_options(_read_config(dot_config), wanted, defined)
    if unmet:
        raise BuildError(f"{what}: config options did not take effect (unmet dependencies?): "
                         f"{', '.join(unmet)} (config: {dot_config}; log: {log})")


def _read_config(path: Path) -> str:
    return safe_read.read_text(path, CONFIG_MAX_BYTES, BuildError)


def planned_image(lab: Lab, arch: Arch, source: KernelSource) -> Path:
    """Where the image to boot is (or will be once built): for `lab run --dry-run`."""
    if source.image:
        return Path(source.image)
    if source.tree:
        return Path(f"<kernel: built from {source.tree} at run time>")
    if source.debian_kernel:
        return Path(f"<kernel: Debian's from {source.debian_kernel}, fetched at run time>")
    return kernel_entry(lab, arch, source).path / "image"


def kernel_entry(lab: Lab, arch: Arch, source: KernelSource) -> Entry:
    """The cache entry of a kernel, built or not (no building here)."""
    return Entry("kernels", kernel_key(lab, arch, source, compiler_for(arch)))
