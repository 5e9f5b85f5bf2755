"""Kernels built from a tree as it is on disk (`lab run --tree PATH`), incrementally.

Each (tree, arch, fragments, compiler) keeps its build directory in the cache
(tree-builds/<key>/build), so a run after a one-line edit recompiles what the
edit touched and relinks. The tree is seen through a fresh mirror of hard links
(tree-builds/<key>/src, a copy across file systems) taken at the start of each
build: the same layout as every other kernel build (lab.ccache), edits made
during a build do not reach it half-way, and nothing is ever written to the
user's tree. Builds of one tree for one arch are serialized by the entry's lock.
The image that boots is copied into its own entry, keyed by its content, so a
later build cannot change a kernel a run is about to boot.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

from lab import names
from lab.buildlog import run_logged
from lab.cache import Entry, Workspace, content_key, ensure, sha256_file
from lab.config import Arch, KernelSource, Lab
from lab.errors import UserError
from lab.hosttools import Compiler
from lab.kernel_sources import tree_state
from lab.kernels import KernelArtifact, configure, fragments_for, make_command, make_image
from lab.progress import Notify

RECIPE_VERSION = "1"
# What kbuild itself refuses for out-of-tree builds ("source tree is not clean").
_IN_TREE_OUTPUT = (".config", "include/config", "include/generated")
_COMPILED = re.compile(r"^\s+CC\s+\S+\.o$", re.MULTILINE)


def tree_source(path: Path, fragments: list[Path]) -> KernelSource:
    """The kernel source for --tree PATH: checked to be a clean kernel tree (UserError if not)."""
    tree = path.expanduser().resolve()
    if not all((tree / marker).exists() for marker in ("Makefile", "Kconfig", "arch", "mm")):
        raise UserError(f"--tree {path}: not a kernel source tree (expected Makefile, Kconfig, arch/ and mm/ "
                        f"at its top)")
    built = [m for m in _IN_TREE_OUTPUT if (tree / m).exists()]
    built += [str(p.relative_to(tree)) for p in tree.glob("arch/*/include/generated")]
    if built:
        raise UserError(f"--tree {path}: has in-tree build output ({built[0]}); the lab builds out of tree: "
                        f"run `make mrproper` in {tree} first")
    for fragment in fragments:
        if not fragment.is_file():
            raise UserError(f"--fragment {fragment}: no such file")
    if escaping := link_leaving(tree, path):
        raise UserError(escaping)
    state = tree_state(tree)
    label = re.sub(r"[^A-Za-z0-9._+-]", "_", tree.name).lstrip(".")[:32] or "tree"
    name = f"tree-{label}-{state.head[:8] if state.head else 'nogit'}{'+dirty' if state.dirty else ''}"
    assert names.is_valid(name), name
    return KernelSource(name=name, tree=str(tree), fragments=tuple(str(f.resolve()) for f in fragments))


def link_leaving(tree: Path, given: Path) -> str | None:
    """Why the tree holds a symbolic link that leads out of it (`mm/x.c -> /etc/shadow`,
    `include/r -> /`, `arch -> elsewhere`), or None. The build reads what the links name,
    and what it reads ends up in the kernel and its logs: the tree is everything it reads.
    Links inside the tree (the dts include-prefixes) are fine. .git is never built."""
    pending = [tree]
    while pending:
        with os.scandir(pending.pop()) as listing:
            for item in listing:
                if item.is_symlink():
                    target = Path(os.path.realpath(item.path))
                    if target != tree and tree not in target.parents:
                        return (f"--tree {given}: {Path(item.path).relative_to(tree)} is a symbolic link to "
                                f"{os.readlink(item.path)}, outside the tree; the lab builds only what is in it")
                elif item.is_dir(follow_symlinks=False) and not (item.name == ".git" and Path(item.path).parent == tree):
                    pending.append(Path(item.path))
    return None


def tree_build_entry(lab: Lab, arch: Arch, source: KernelSource, compiler: Compiler) -> Entry:
    return Entry("tree-builds", content_key(
        RECIPE_VERSION, source.tree, *(f.read_bytes() for f in fragments_for(lab, arch, source)),
        arch.kernel.make_arch, arch.kernel.image_target, arch.kernel.image_path, compiler.version))


def ensure_tree_kernel(lab: Lab, arch: Arch, source: KernelSource, compiler: Compiler,
                       progress: Notify) -> KernelArtifact:
    """Build the tree as it is now (incrementally) and return the image to boot."""
    entry = tree_build_entry(lab, arch, source, compiler)
    what = f"kernel {source.name} for {arch.name}"
    entry.hold()
    with entry.lock():
        entry.path.mkdir(parents=True, exist_ok=True)
        log = entry.path / "build.log"
        log.unlink(missing_ok=True)
        progress(f"building {what} from {source.tree} (log: {log})")
        started = time.monotonic()
        state = tree_state(Path(source.tree))
        src, build = entry.path / "src", entry.path / "build"
        _mirror(Path(source.tree), src, log, what)
        make = make_command(src, build, arch, compiler)
        configured = build / ".lab-configured"  # configured once: the fragments are part of the key
        if not configured.exists():
            configure(lab, arch, src, build, make, log, what, fragments_for(lab, arch, source))
            configured.touch()
        stats = make_image(lab, arch, make, log, what, entry.path / "ccache-stats.log")
        compiled = len(_COMPILED.findall(log.read_text(errors="replace")))
        release = (build / "include" / "config" / "kernel.release").read_text().strip()
        facts = {"tree": source.tree, "tree_head": state.head or "none", "tree_dirty": str(state.dirty).lower(),
                 "compiled_objects": str(compiled), "ccache_hits": str(stats.hits),
                 "ccache_misses": str(stats.misses), "tree_build_log": str(log)}
        booted = _keep_image(arch, build, log, release, facts)
    seconds = time.monotonic() - started
    progress(f"built {what}: {release} in {seconds:.1f} s ({compiled} objects compiled; {stats})")
    return KernelArtifact(arch=arch.name, kernel=source.name, key=booted.key, image=booted.path / "image",
                          config=booted.path / "config", version=release, provenance=tuple(facts.items()))


def _mirror(tree: Path, src: Path, log: Path, what: str) -> None:
    """A fresh mirror of the tree at `src`: hard links on the same file system, else a copy.
    Modification times are the tree's, so make rebuilds what changed since the last build."""
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir()
    same_fs = os.stat(tree).st_dev == os.stat(src).st_dev
    entries = sorted(str(p) for p in tree.iterdir() if p.name != ".git")
    run_logged(["cp", "-al" if same_fs else "-a", "--", *entries, str(src)], log, what=f"{what}: mirroring {tree}")


def _keep_image(arch: Arch, build: Path, log: Path, release: str, facts: dict) -> Entry:
    """The built image (and its config and log) in an entry of its own, keyed by content."""
    image = build / arch.kernel.image_path
    entry = Entry("tree-kernels", content_key(sha256_file(image), sha256_file(build / ".config")))

    def keep(space: Workspace) -> dict:
        shutil.copy(image, space.result / "image")
        shutil.copy(build / ".config", space.result / "config")
        shutil.copy(log, space.result / "tree-build.log")
        return {"ok": True, "version": release, "arch": arch.name, **facts}

    ensure(entry, keep)
    return entry
