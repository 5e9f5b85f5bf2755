"""What the cache holds and what the plan needs: `lab cache` and `lab cache prune`.

An entry is needed when the default plan (configs/lab.toml) would use it: its
kernels and their unpacked sources, its images with their userlands and boot
initrds, its testcase binaries, the Debian kernels and guest sources its pins
resolve to now, and the Debian apt state. Kernels of --tree and --kernel-image
one-shots are never needed. Pruning removes entries the plan does not need, least
recently used first, and never one that a running lab holds (lab.cache.Entry.hold).
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from lab import apt, kernels
from lab.cache import Entry, cache_root, content_key
from lab.schema import Lab
from lab.errors import LabError, UserError
from lab.images import known_image_key, resolved_sources
from lab.kernel_sources import resolve
from lab.plan import Job, plan_jobs
from lab.testcases import kselftest_source, testcase_entry

# Kinds whose entries prune may remove. keys (the client key), digests (a few bytes
# each) and ccache (bounded by its own max_size) are shown but never pruned.
PRUNABLE = ("kernels", "kernel-sources", "images", "userland", "boot-initrds", "testcases", "debian-kernels",
            "debian-sources", "debian-apt", "tree-builds", "tree-kernels", "given-kernels")
_ENTRY_NAME = re.compile(r"[0-9a-f]{12,64}")  # content keys (older labs wrote shorter ones)
_BAD = "(bad entry:"
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


@dataclass(frozen=True)
class CachedEntry:
    kind: str
    key: str
    what: str  # from its meta.json
    size: int  # bytes on disk
    last_used: float  # seconds since the epoch
    needed: bool

    @property
    def path(self) -> Path:
        return cache_root() / self.kind / self.key


def parse_size(text: str) -> int:
    """"60G", "500M", "1.5T" or a number of bytes; UserError otherwise."""
    match = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)\s*([KMGT]?)i?B?", text.strip(), re.I)
    if not match:
        raise UserError(f"--max-size {text!r}: expected a size such as 60G, 500M or 1.5T")
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


def human(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def disk_usage(path: Path) -> int:
    """Bytes on disk under `path`, symlinks not followed. A file hard-linked n times (a
    tree build shares the unpacked source's files) counts 1/n here, so that the sizes of
    entries add up to what the disk holds."""
    total = 0.0
    stack = [path]
    while stack:
        try:
            with os.scandir(stack.pop()) as it:
                for item in it:
                    st = item.stat(follow_symlinks=False)
                    is_dir = item.is_dir(follow_symlinks=False)
                    total += st.st_blocks * 512 / (1 if is_dir else max(st.st_nlink, 1))
                    if is_dir:
                        stack.append(Path(item.path))
        except (FileNotFoundError, NotADirectoryError):
            continue
    return int(total)


def _meta(path: Path) -> dict:
    return Entry(path.parent.name, path.name).meta() or {}


def _what(kind: str, path: Path) -> str:
    """A short description from the entry's meta.json."""
    meta = Entry(kind, path.name).meta()
    if meta is None and (path / "meta.json").exists():
        return f"{_BAD} its meta.json is not a JSON object; prune removes it)"
    meta = meta or {}
    fields = ("kernel", "arch", "testcase", "package", "version", "package_version", "source", "tree",
              "kernel_image")
    text = " ".join(str(meta[f]) for f in fields if meta.get(f) not in (None, ""))
    return text[:100] or ("(in progress or unpublished)" if kind != "debian-apt" else "apt lists of Debian's kernels")


def _last_used(kind_dir: Path, key: str) -> float:
    for candidate in (kind_dir / f"{key}.use", kind_dir / key / "meta.json", kind_dir / key):
        try:
            return candidate.stat().st_mtime
        except FileNotFoundError:
            continue
    return 0.0


def list_entries(needed: dict[str, set[str] | None]) -> list[CachedEntry]:
    """Every entry of every prunable kind, with its size and when it was last used."""
    found = []
    for kind in PRUNABLE:
        kind_dir = cache_root() / kind
        if not kind_dir.is_dir():
            continue
        for path in sorted(kind_dir.iterdir()):
            if not (_ENTRY_NAME.fullmatch(path.name) and path.is_dir() and not path.is_symlink()):
                continue  # lock and use files, logs, work directories of running builds
            keep = needed.get(kind, set())
            what = _what(kind, path)
            usable = not what.startswith(_BAD)  # a bad entry is rebuilt anyway: never kept for the plan
            found.append(CachedEntry(kind, path.name, what, disk_usage(path), _last_used(kind_dir, path.name),
                                     usable and (keep is None or path.name in keep)))
    return found


def other_usage() -> list[tuple[str, int]]:
    """What the cache holds besides entries: ccache, keys, digests."""
    return [(name, disk_usage(cache_root() / name)) for name in ("ccache", "keys", "digests")
            if (cache_root() / name).is_dir()]


# --- what the plan needs ---------------------------------------------------------------------


def _kept_by_kernels(cache_kind: str) -> Callable[[Lab, list[Job], dict], set[str]]:
    """A finder that asks the kernels' kind modules (lab.kernels) what they keep of `cache_kind`."""
    return lambda lab, jobs, _: kernels.kept_entries(lab, jobs, cache_kind)


def _kernel_sources(lab: Lab, jobs: list[Job], needed: dict) -> set[str]:
    """The kernels' own sources, and those the kselftests are built from."""
    kselftest_sources = {s.name: s for j in jobs for case in j.testcases if case.kselftest
                         for s in [kselftest_source(lab, j.arch, case)]}
    return (kernels.kept_entries(lab, jobs, "kernel-sources")
            | {content_key(resolve(source).identity) for source in kselftest_sources.values()})


def _testcases(lab: Lab, jobs: list[Job], _: dict) -> set[str]:
    return {testcase_entry(lab, j.arch, case).key for j in jobs for case in j.testcases}


def _images(lab: Lab, jobs: list[Job], _: dict) -> set[str]:
    keys = {known_image_key(lab, j.arch) for j in jobs}
    if None in keys:
        raise LabError("the guest sources are not fetched yet, so the image keys are unknown")
    return keys


def _userland(lab: Lab, jobs: list[Job], needed: dict) -> set[str]:
    """The userlands the needed images were assembled from (their meta says which)."""
    if needed["images"] is None:
        raise LabError("the images needed are unknown")
    return {_meta(cache_root() / "images" / key).get("userland", "") for key in needed["images"]} - {""}


def _boot_initrds(lab: Lab, jobs: list[Job], needed: dict) -> set[str]:
    """The boot initrds made from a needed image (their meta says which)."""
    if needed["images"] is None:
        raise LabError("the images needed are unknown")
    kind_dir = cache_root() / "boot-initrds"
    paths = kind_dir.iterdir() if kind_dir.is_dir() else []
    return {p.name for p in paths if _meta(p).get("image") in needed["images"]}


def _debian_sources(lab: Lab, jobs: list[Job], _: dict) -> set[str]:
    return {apt.source_entry(offer).key for offer in resolved_sources(lab).values()}


# In order: a finder may use the kinds found before it. None for a kind: not judged, keep it all.
_FINDERS: tuple[tuple[str, Callable[[Lab, list[Job], dict], set[str]]], ...] = (
    ("kernels", _kept_by_kernels("kernels")), ("kernel-sources", _kernel_sources), ("testcases", _testcases),
    ("images", _images), ("userland", _userland), ("boot-initrds", _boot_initrds),
    ("debian-kernels", _kept_by_kernels("debian-kernels")),
    ("debian-apt", _kept_by_kernels("debian-apt")), ("debian-sources", _debian_sources),
)


def needed_keys(lab: Lab) -> tuple[dict[str, set[str] | None], list[str]]:
    """The keys of each kind the default plan needs, and why a kind could not be judged."""
    jobs = plan_jobs(lab, list(lab.plan.arches), list(lab.plan.kernels), list(lab.plan.testcases))
    needed: dict[str, set[str] | None] = {kind: set() for kind in PRUNABLE}
    unjudged = []
    for kind, find in _FINDERS:
        try:
            needed[kind] = find(lab, jobs, needed)
        except (LabError, OSError) as exc:
            needed[kind] = None
            unjudged.append(f"{kind}: kept whole ({exc})")
    return needed, unjudged


# --- pruning ---------------------------------------------------------------------------------


def _remove_unless_held(entry: CachedEntry) -> bool:
    """Remove the entry if no lab holds or builds it; False if one does."""
    kind_dir = entry.path.parent
    with open(kind_dir / f"{entry.key}.use", "a") as use, open(kind_dir / f"{entry.key}.lock", "a") as build:
        try:
            fcntl.flock(use, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(build, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        # Renamed first: a half-removed tree is never taken for an entry.
        doomed = kind_dir / f"{entry.key}.tmp-{os.getpid()}-pruned"
        os.rename(entry.path, doomed)
        shutil.rmtree(doomed, ignore_errors=True)
        for log in kind_dir.glob(f"{entry.key}.*.log"):
            log.unlink(missing_ok=True)
        # Removed while held: a lab waiting on them finds them gone and takes new ones (cache.lock_file).
        (kind_dir / f"{entry.key}.use").unlink(missing_ok=True)
        (kind_dir / f"{entry.key}.lock").unlink(missing_ok=True)
    return True


@dataclass(frozen=True)
class PruneResult:
    removed: list[CachedEntry]
    held: list[CachedEntry]  # not needed, but a running lab holds them
    size_before: int
    size_after: int


def prune(entries: list[CachedEntry], other: int, max_size: int | None,
          progress: Callable[[str], None]) -> PruneResult:
    """Remove entries the plan does not need, least recently used first, until the cache
    (entries plus `other`) is at most max_size (with None: every one of them)."""
    before = total = sum(e.size for e in entries) + other
    removed, held = [], []
    for entry in sorted((e for e in entries if not e.needed), key=lambda e: e.last_used):
        if max_size is not None and total <= max_size:
            break
        if _remove_unless_held(entry):
            removed.append(entry)
            total -= entry.size
            progress(f"removed {entry.kind}/{entry.key} ({human(entry.size)}, last used "
                     f"{time.strftime('%Y-%m-%d', time.localtime(entry.last_used))}): {entry.what}")
        else:
            held.append(entry)
    return PruneResult(removed, held, before, total)
