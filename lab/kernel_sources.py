"""Kernel sources: from a Debian package, a tarball, or a git tree, unpacked once into the cache.

Each source resolves to an identity (what the tree's content depends on: a
tarball's sha256, a package version, a commit) that is part of every kernel
cache key built from it.
"""

from __future__ import annotations

import functools
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from lab import apt, procs
from lab.buildlog import run_logged
from lab.cache import Entry, Workspace, content_key, ensure, file_digest
from lab.progress import Notify
from lab.schema import DebianSourcePackage, GitRef, KernelSource, SourceTarball
from lab.errors import BuildError, MissingToolError, UserError
from lab.hosttools import require_tool
from lab.owner import Owner, owner_of


@dataclass(frozen=True)
class ResolvedSource:
    identity: str  # stable for the same content
    description: str  # for logs and reports, e.g. "linux-source-6.12 6.12.95-1~bpo12+1"
    pinned: str  # what unpacking uses: the git commit, the package version, or the tarball path


def _installed_tarball(source: KernelSource) -> Path:
    kind = source.kind
    path = Path(kind.path if isinstance(kind, SourceTarball) else f"/usr/src/{kind.package}.tar.xz")
    if not path.is_file():
        if isinstance(kind, DebianSourcePackage):
            raise MissingToolError(f"kernel source {path} (kernel {source.name})", kind.package)
        raise UserError(f"kernel {source.name}: tarball {path} does not exist")
    return path


def _git_commit(source: KernelSource, kind: GitRef) -> str:
    require_tool("git", "git")
    repo = Path(kind.repo)
    owner = owner_of(repo)
    proc = procs.probe([*safe_git_argv(repo, owner), "rev-parse", "--verify", f"{kind.ref}^{{commit}}"],
                       env={**os.environ, **owner.environment()})
    if proc.returncode != 0:
        raise UserError(f"kernel {source.name}: no commit '{kind.ref}' in git tree {kind.repo}")
    return proc.stdout.strip()


@dataclass(frozen=True)
class TreeState:
    """A kernel tree on disk: its git HEAD (if it is a git work tree) and whether it has edits."""

    head: str  # "" when the tree is not a git work tree
    dirty: bool

    def __str__(self) -> str:
        if not self.head:
            return "not a git tree"
        return f"HEAD {self.head[:12]}" + (", with uncommitted changes" if self.dirty else "")


# What a repository's configuration could make the lab's own reads run: hooks (the index
# is never written: --no-optional-locks, so no post-index-change either), the file-system
# monitor, an external diff, submodules' own configurations. Filters are turned off by
# name (safe_git_argv). Git runs as the tree's owner anyway (lab.owner): these keep even
# the owner's programs out of a read that should run nothing.
_GIT_RUNS_NOTHING = ("-c", "core.fsmonitor=false", "-c", "core.hooksPath=/dev/null", "-c", "diff.external=",
                     "-c", "core.untrackedCache=false", "--no-optional-locks")


def safe_git_argv(tree: Path, owner: Owner) -> list[str]:
    """git for the lab's reads of `tree`: as its owner, with every program its
    configuration names turned off (the filters found in it, by name)."""
    base = ["git", *_GIT_RUNS_NOTHING, "-C", str(tree)]
    listed = procs.probe(owner.argv([*base, "config", "--get-regexp", r"^filter\..*\.(clean|smudge|process)$"]),
                         env={**os.environ, **owner.environment()})
    keys = [line.split()[0] for line in listed.stdout.splitlines() if line.strip()]
    drivers = sorted({key[len("filter."):key.rindex(".")] for key in keys})  # a name may hold dots
    off = [word for name in drivers for word in ("-c", f"filter.{name}.clean=", "-c", f"filter.{name}.smudge=",
                                                 "-c", f"filter.{name}.process=", "-c", f"filter.{name}.required=false")]
    return owner.argv(["git", *_GIT_RUNS_NOTHING, *off, "-C", str(tree)])


def tree_state(tree: Path) -> TreeState:
    """HEAD and edits of a tree, read by git as the tree's owner (lab.owner), which
    needs no safe.directory and runs nothing the repository's configuration names."""
    if not shutil.which("git"):
        return TreeState("", False)
    owner = owner_of(tree)
    env = {**os.environ, **owner.environment()}
    git = safe_git_argv(tree, owner)
    head = procs.probe([*git, "rev-parse", "--verify", "-q", "HEAD"], env=env)
    if head.returncode != 0:
        return TreeState("", False)
    status = procs.probe([*git, "status", "--porcelain", "--untracked-files=no", "--ignore-submodules=all"],
                         env=env)
    return TreeState(head.stdout.strip(), bool(status.stdout.strip()) or status.returncode != 0)


@functools.cache
def resolve(source: KernelSource) -> ResolvedSource:
    """What a source archive (SOURCE_KINDS: a Debian source package, a tarball, a git
    ref) is, without unpacking it (cheap: run at every `lab run`).

    Resolved once per process: every job, cache key and report of a run sees the
    same commit or package version, even if a ref or a suite moves meanwhile.
    """
    if isinstance(source.kind, GitRef):
        commit = _git_commit(source, source.kind)
        return ResolvedSource(f"git:{commit}", f"{source.kind.repo} {commit[:12]}", commit)
    if source.apt_pin:
        offer = apt.resolve(source.apt_pin, apt.BINARY)
        return ResolvedSource(f"deb:{offer.package}={offer.version}", f"{offer.package} {offer}", offer.version)
    tarball = _installed_tarball(source)
    description = str(tarball)
    if isinstance(source.kind, DebianSourcePackage):
        package = source.kind.package
        version = procs.probe(["dpkg-query", "-W", "-f=${Version}", package]).stdout.strip()
        description = f"{package} {version or '(version unknown)'} ({tarball})"
    # The bare sha256 (no prefix) keeps kernel cache keys of tarball sources stable.
    return ResolvedSource(file_digest(tarball), description, str(tarball))


def source_tree(source: KernelSource, progress: Notify) -> Path:
    """The unpacked source tree, shared by every arch that builds it."""
    resolved = resolve(source)
    entry = Entry("kernel-sources", content_key(resolved.identity))

    def unpack(space: Workspace) -> dict:
        progress(f"unpacking kernel {source.name} ({resolved.description})")
        _unpack(source, resolved.pinned, space)
        return {"kernel": source.name, "source": resolved.description}

    ensure(entry, unpack, log_name="unpack.log")
    return entry.path


# --force-local: a tarball path with a ':' in it is a file here, never "host:path" for rsh.
TAR_EXTRACT = ("tar", "--force-local", "-xf")


def _unpack(source: KernelSource, pinned: str, space: Workspace) -> None:
    what = f"unpacking kernel {source.name}"
    tree, log = space.result, space.log
    if isinstance(source.kind, GitRef):
        commit = pinned
        repo = Path(source.kind.repo)
        owner = owner_of(repo)
        # git as the repository's owner, running nothing its configuration names (filters
        # apply to archives too); tar, the lab's, extracts into the cache. A fixed script:
        # the git argv, commit and directory are its arguments, never part of it.
        run_logged(["bash", "-c", 'set -o pipefail; tree=$1; commit=$2; shift 2; "$@" archive --format=tar '
                    '"$commit" | tar -x -C "$tree"', "git-archive", str(tree), commit,
                    *safe_git_argv(repo, owner)], log, what=f"{what}: git archive {commit[:12]}",
                   env=owner.environment())
        return
    if source.apt_pin:
        debs = space.work / "deb"
        debs.mkdir()
        apt.fetch(source.apt_pin, apt.BINARY, debs, log)
        (deb,) = debs.glob("*.deb")
        run_logged(["dpkg-deb", "-x", str(deb), str(debs / "root")], log, what=f"unpacking {deb.name}")
        tarball = debs / "root" / "usr" / "src" / f"{source.apt_pin.package}.tar.xz"
        if not tarball.is_file():
            raise BuildError(f"{what}: {deb.name} has no usr/src/{source.apt_pin.package}.tar.xz")
        run_logged([*TAR_EXTRACT, str(tarball), "-C", str(tree), "--strip-components=1"], log, what=what)
        return
    run_logged([*TAR_EXTRACT, pinned, "-C", str(tree), "--strip-components=1"], log, what=what)
