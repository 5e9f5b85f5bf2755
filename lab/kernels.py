"""Kernel kinds → the module that gets each kind's kernel: the one table.

A kernel comes from a Debian source package, a tarball or a git ref (built here by
lab.source_kernels), a working tree (lab.kernel_trees: built incrementally as its
owner), a built image (lab.kernel_images: booted as it is) or Debian's binary
package (lab.debian_kernels: fetched). The kind is a tagged union (lab.schema
KernelKind). Each kind's module has the same functions:

    entry(lab, arch, source)         its cache entry, known without building (or None)
    ensure(lab, arch, source, progress) -> KernelArtifact   get it: cached, built or fetched
    planned_image(lab, arch, source) where the image is or will be (`lab run --dry-run`)
    describe(source)                 where it comes from, as configured (`lab list`)
    listing(lab, arch, source)       what the cache holds of it (`lab list`), and ccache counts
    kept(lab, jobs)                  the cache entries `lab cache prune` keeps for these jobs,
                                     by cache kind (of those the module's KEPT_KINDS names)
    resolve(source)                  what it is now (identity, description): provenance, keys

Adding a kind is its dataclass in lab.schema, its module, and a row here. Shared
steps live below the kinds, never above them: lab.kconfig (fragments, the option
check) and lab.kernel_build (tools, make, configure, the image check).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from types import ModuleType

from lab import debian_kernels, kernel_images, kernel_trees, source_kernels
from lab.cache import Entry
from lab.schema import (Arch, BuiltImage, DebianBinary, DebianSourcePackage, GitRef, KernelSource, Lab,
                        SourceTarball, WorkingTree)
from lab.kernel_build import KernelArtifact
from lab.kernel_sources import ResolvedSource
from lab.progress import Notify

KIND_MODULES: dict[type, ModuleType] = {
    DebianSourcePackage: source_kernels,
    SourceTarball: source_kernels,
    GitRef: source_kernels,
    WorkingTree: kernel_trees,
    BuiltImage: kernel_images,
    DebianBinary: debian_kernels,
}


def module_for(source: KernelSource) -> ModuleType:
    return KIND_MODULES[type(source.kind)]


def ensure_kernel(lab: Lab, arch: Arch, source: KernelSource, progress: Notify = lambda _: None) -> KernelArtifact:
    """The kernel for (arch, source): from the cache, or built or fetched now (BuildError if not)."""
    return module_for(source).ensure(lab, arch, source, progress)


def kernel_entry(lab: Lab, arch: Arch, source: KernelSource) -> Entry | None:
    """The cache entry of the kernel, when it is known without building (no building here)."""
    return module_for(source).entry(lab, arch, source)


def planned_image(lab: Lab, arch: Arch, source: KernelSource) -> Path:
    return module_for(source).planned_image(lab, arch, source)


def describe(source: KernelSource) -> str:
    return module_for(source).describe(source)


def listing(lab: Lab, arch: Arch, source: KernelSource) -> tuple[str | None, dict | None]:
    return module_for(source).listing(lab, arch, source)


def resolve(source: KernelSource) -> ResolvedSource:
    return module_for(source).resolve(source)


def kept_entries(lab: Lab, jobs: Iterable, cache_kind: str) -> set[str]:
    """The keys of `cache_kind` the jobs' kernels need: each module that keeps that cache
    kind asked for its own jobs (so a module that cannot judge fails only its kinds)."""
    by_module: dict[ModuleType, list] = {}
    for job in jobs:
        by_module.setdefault(module_for(job.kernel), []).append(job)
    return {key for module, its_jobs in by_module.items() if cache_kind in module.KEPT_KINDS
            for key in module.kept(lab, its_jobs).get(cache_kind, set())}
