"""Kernels built from a tree as it is on disk (`lab run --tree PATH`), incrementally.

Each (tree, arch, fragments, compiler) keeps its build directory in the cache
(tree-builds/<key>/build), so a run after a one-line edit recompiles what the
edit touched and relinks. The tree is seen through a fresh mirror of hard links
(tree-builds/<key>/src, a copy across file systems) taken at the start of each
build: the same layout as every other kernel build (lab.ccache), edits made
during a build do not reach it half-way, and nothing is ever written to the
user's tree. Builds of one tree for one arch are serialized by the entry's lock.
Every step on the tree (its git reads, the mirror, make) runs as the tree's owner
(lab.owner), in src/ and build/ that are theirs, with a compiler cache of their
own; the lab reads what the build made as regular files only, never through a link.
The image that boots is copied into its own entry, keyed by its content, so a
later build cannot change a kernel a run is about to boot.

The module of the WorkingTree kind (lab.kernels): entry, ensure, planned_image,
describe, listing, kept, resolve.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import time
from pathlib import Path

from lab import ccache, names, safe_read
from lab.buildlog import run_logged
from lab.cache import Entry, Workspace, cache_root, content_key, ensure as ensure_entry
from lab.schema import Arch, KernelSource, Lab, WorkingTree
from lab.errors import BuildError, UserError
from lab.hosttools import Compiler
from lab.kconfig import fragments_for
from lab.kernel_build import KernelArtifact, build_compiler, check_config, configure, make_command, make_image
from lab.kernel_sources import ResolvedSource, tree_state
from lab.owner import Owner, owner_of, require_reachable
from lab.progress import Notify

RECIPE_VERSION = "2"  # 2: src/ and build/ are the tree owner's; the lab's files beside them
IMAGE_MAX_BYTES = 512 * safe_read.MIB  # an allyesconfig vmlinux is about 300 MiB
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
    return KernelSource(name=name, kind=WorkingTree(str(tree)), fragments=tuple(str(f.resolve()) for f in fragments))


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


def _tree(source: KernelSource) -> str:
    assert isinstance(source.kind, WorkingTree), source
    return source.kind.path


def tree_build_entry(lab: Lab, arch: Arch, source: KernelSource, compiler: Compiler) -> Entry:
    return Entry("tree-builds", content_key(
        RECIPE_VERSION, _tree(source), *(f.read_bytes() for f in fragments_for(lab, arch, source)),
        arch.kernel.make_arch, arch.kernel.image_target, arch.kernel.image_path, compiler.version))


def entry(lab: Lab, arch: Arch, source: KernelSource) -> None:
    """No entry is known before the build: the image's is keyed by what the build makes."""
    return None


def ensure(lab: Lab, arch: Arch, source: KernelSource, progress: Notify) -> KernelArtifact:
    """Build the tree as it is now (incrementally), as its owner, and return the image to boot."""
    compiler = build_compiler(arch, source)
    owner = owner_of(Path(_tree(source)))
    require_reachable(owner, cache_root(), f"--tree {_tree(source)}")
    entry = tree_build_entry(lab, arch, source, compiler)
    what = f"kernel {source.name} for {arch.name}"
    entry.hold()
    with entry.lock():
        entry.path.mkdir(parents=True, exist_ok=True)  # the lab's: the log and the configured mark
        log = entry.path / "build.log"
        log.unlink(missing_ok=True)
        progress(f"building {what} from {_tree(source)} as {owner} (log: {log})")
        started = time.monotonic()
        state = tree_state(Path(_tree(source)))
        stats = _build(lab, arch, source, compiler, owner, entry.path, log, what)
        build = entry.path / "build"
        compiled = len(_COMPILED.findall(log.read_text(errors="replace")))
        release = _owners_file(build / "include" / "config" / "kernel.release").decode(errors="replace").strip()
        facts = {"tree": _tree(source), "tree_owner": str(owner), "tree_head": state.head or "none",
                 "tree_dirty": str(state.dirty).lower(), "compiled_objects": str(compiled),
                 "ccache_hits": str(stats.hits), "ccache_misses": str(stats.misses), "tree_build_log": str(log)}
        booted = _keep_image(arch, build, log, release, facts)
    seconds = time.monotonic() - started
    progress(f"built {what}: {release} in {seconds:.1f} s ({compiled} objects compiled; {stats})")
    return KernelArtifact(arch=arch.name, kernel=source.name, key=booted.key, image=booted.path / "image",
                          config=booted.path / "config", version=release, provenance=tuple(facts.items()))


def _build(lab: Lab, arch: Arch, source: KernelSource, compiler: Compiler, owner: Owner, place: Path,
           log: Path, what: str) -> ccache.Stats:
    """Mirror, configure (once; checked again before every build: a checkout may have changed
    what the options depend on) and make, every step as the tree's owner in their own
    src/ and build/ under `place`."""
    src, build = owner.directory(place / "src"), owner.directory(place / "build")
    _mirror(Path(_tree(source)), src, log, what, owner)
    make = owner.argv(make_command(src, build, arch, compiler))
    fragments = fragments_for(lab, arch, source)
    configured = place / "configured"  # configured once: the fragments are part of the key
    if configured.exists():
        check_config(lab, arch, src, build, make, log, what, fragments)
    else:
        configure(lab, arch, src, build, make, log, what, fragments)
        configured.touch()
    return make_image(lab, arch, make, log, what, build / ".lab-ccache-stats.log", owner)


def _owners_file(path: Path) -> bytes:
    """A file the owner's build made, read by the lab: a regular file, never a link, bounded."""
    return safe_read.read_bytes(path, IMAGE_MAX_BYTES, BuildError)


def _mirror(tree: Path, src: Path, log: Path, what: str, owner: Owner) -> None:
    """A fresh mirror of the tree at `src`, made by the owner: hard links on the same file
    system, else a copy. Modification times are the tree's, so make rebuilds what changed."""
    for item in list(src.iterdir()):
        if item.is_dir() and not item.is_symlink():
            shutil.rmtree(item)  # which never follows a link
        else:
            item.unlink()
    same_fs = os.stat(tree).st_dev == os.stat(src).st_dev
    entries = sorted(str(p) for p in tree.iterdir() if p.name != ".git")
    run_logged(owner.argv(["cp", "-al" if same_fs else "-a", "--", *entries, str(src)]), log,
               what=f"{what}: mirroring {tree}")


def _keep_image(arch: Arch, build: Path, log: Path, release: str, facts: dict) -> Entry:
    """The built image (and its config and log) in an entry of its own, keyed by content:
    read from the owner's build directory as regular files, never through a link."""
    image, config = _owners_file(build / arch.kernel.image_path), _owners_file(build / ".config")
    entry = Entry("tree-kernels", content_key(hashlib.sha256(image).hexdigest(), hashlib.sha256(config).hexdigest()))

    def keep(space: Workspace) -> dict:
        (space.result / "image").write_bytes(image)
        (space.result / "config").write_bytes(config)
        shutil.copy(log, space.result / "tree-build.log")
        return {"ok": True, "version": release, "arch": arch.name, **facts}

    ensure_entry(entry, keep)
    return entry


def planned_image(lab: Lab, arch: Arch, source: KernelSource) -> Path:
    return Path(f"<kernel: built from {_tree(source)} at run time>")


def describe(source: KernelSource) -> str:
    return f"kernel tree {_tree(source)} as it is on disk"


def listing(lab: Lab, arch: Arch, source: KernelSource) -> tuple[str | None, dict | None]:
    return f"built from {_tree(source)} at run time", None


KEPT_KINDS: tuple[str, ...] = ()  # the cache kinds kept() judges


def kept(lab: Lab, jobs: list) -> dict[str, set[str]]:
    """Nothing: a tree's build directories and images are not the default plan's."""
    return {}


def resolve(source: KernelSource) -> ResolvedSource:
    tree = _tree(source)
    return ResolvedSource(f"tree:{tree}", f"{tree} ({tree_state(Path(tree))})", tree)
