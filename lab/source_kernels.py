"""Kernels the lab builds from a source archive: a Debian source package, a tarball or
a git ref (config.SOURCE_KINDS). tinyconfig + config fragments, cross-compiled,
cached by content hash.

Every build runs in one layout, <work>/src (hard links to the cached source tree)
beside <work>/build (make O=), through ccache (lab.ccache): the same relative paths
for every source, so a slightly different tree reuses the objects of unchanged files.

One of the kind modules lab.kernels maps kinds to: entry, ensure, planned_image,
describe, listing, kept, resolve.
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

from lab import kernel_sources
from lab.cache import Entry, Workspace, content_key, ensure as ensure_entry
from lab.schema import Arch, DebianSourcePackage, GitRef, KernelSource, Lab
from lab.errors import BuildError, BuildTimeout
from lab.hosttools import Compiler, compiler_for
from lab.buildlog import compiler_diagnostic
from lab.kconfig import fragments_for
from lab.kernel_build import KernelArtifact, build_compiler, configure, link_tree, make_command, make_image
from lab.kernel_sources import ResolvedSource, source_tree
from lab.progress import Notify

# Bump when the build procedure changes in a way that changes its output.
RECIPE_VERSION = "1"


def kernel_key(lab: Lab, arch: Arch, source: KernelSource, compiler: Compiler) -> str:
    return content_key(
        RECIPE_VERSION,
        kernel_sources.resolve(source).identity,
        *(p.read_bytes() for p in fragments_for(lab, arch, source)),
        arch.kernel.make_arch, arch.kernel.image_target, arch.kernel.image_path,
        compiler.version,
    )


def entry(lab: Lab, arch: Arch, source: KernelSource) -> Entry:
    """The cache entry of a kernel, built or not (no building here)."""
    return Entry("kernels", kernel_key(lab, arch, source, compiler_for(arch)))


def ensure(lab: Lab, arch: Arch, source: KernelSource, progress: Notify) -> KernelArtifact:
    """The built kernel for (arch, source): from the cache, or built now.

    A build that failed with a compiler error is cached as failed too (the same
    inputs fail the same way), and raises BuildError with that first error line.
    """
    compiler = build_compiler(arch, source)
    cached = entry(lab, arch, source)
    meta = ensure_entry(cached, lambda space: _build(lab, arch, source, compiler, space, progress))
    if not meta["ok"]:
        # Paths in the kernel tree read best relative to it (as in the kernel's own messages).
        error = re.sub(r"\S*/(?:kernel-sources/[0-9a-f]+|src)/", "", meta["error"])
        raise BuildError(f"kernel {source.name} for {arch.name} failed to build: {error} "
                         f"(log: {cached.path / 'build.log'})")
    return KernelArtifact(arch=arch.name, kernel=source.name, key=cached.key, image=cached.path / "image",
                          config=cached.path / "config", version=meta["version"])


def _build(lab: Lab, arch: Arch, source: KernelSource, compiler: Compiler, space: Workspace,
           progress: Notify) -> dict:
    """Configure and build into `space`; the meta of the result (a compiler error is a result too)."""
    tree = source_tree(source, progress)
    what = f"kernel {source.name} for {arch.name}"
    log, src, build = space.log, space.work / "src", space.work / "build"
    started = time.monotonic()
    progress(f"building {what} (log: {log})")
    link_tree(tree, src, log, f"{what}: linking the source tree")
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


def planned_image(lab: Lab, arch: Arch, source: KernelSource) -> Path:
    """Where the image to boot is (or will be once built): for `lab run --dry-run`."""
    return entry(lab, arch, source).path / "image"


def describe(source: KernelSource) -> str:
    """Where the source comes from, as configured (no lookup): for `lab list`."""
    kind = source.kind
    if isinstance(kind, DebianSourcePackage):
        pinned = f" from {kind.suite}" if kind.suite else f" {kind.version}" if kind.version else " (installed)"
        return f"Debian package {kind.package}{pinned}"
    if isinstance(kind, GitRef):
        return f"git tree {kind.repo} at {kind.ref}"
    return f"tarball {kind.path}"


def listing(lab: Lab, arch: Arch, source: KernelSource) -> tuple[str | None, dict | None]:
    """What `lab list` shows: the image or why its build failed (None: not built), and
    the ccache hits and misses of the build that made it."""
    meta = entry(lab, arch, source).meta()
    if not meta:
        return None, None
    shown = str(entry(lab, arch, source).path / "image") if meta["ok"] else f"build failed: {meta['error']}"
    return shown, meta.get("ccache")


KEPT_KINDS: tuple[str, ...] = ("kernels", "kernel-sources")  # the cache kinds kept() judges


def kept(lab: Lab, jobs: list) -> dict[str, set[str]]:
    """The cache entries `lab cache prune` keeps for these jobs: the kernels and their sources."""
    return {"kernels": {entry(lab, j.arch, j.kernel).key for j in jobs},
            "kernel-sources": {content_key(kernel_sources.resolve(j.kernel).identity) for j in jobs}}


def resolve(source: KernelSource) -> ResolvedSource:
    return kernel_sources.resolve(source)
