"""The artifact cache: directories keyed by content hash, published atomically.

An entry is complete when its meta.json exists; builds happen in a temporary
directory beside it and are renamed into place, under a lock so that two lab
processes never build the same thing twice at once. `ensure` is that pattern,
written once for every kind of artifact.

A process that uses an entry holds it (a shared lock on <key>.use, whose mtime
says when it was last used) until it ends or calls release_holds(): `lab cache
prune` removes only entries nobody holds (lab.cache_admin).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from lab.errors import InfraError


def cache_root() -> Path:
    root = os.environ.get("LAB_CACHE") or Path.home() / ".cache" / "qemu-lab"
    return Path(root)


def content_key(*parts: str | bytes) -> str:
    """A short, stable hash of the given parts (order matters)."""
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()[:20]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_digest(path: Path) -> str:
    """sha256 of a (possibly large) file, memoised by its size and mtime."""
    st = path.stat()
    memo = cache_root() / "digests" / content_key(str(path.resolve()), str(st.st_size), str(st.st_mtime_ns))
    if memo.is_file():
        return memo.read_text().strip()
    value = sha256_file(path)
    memo.parent.mkdir(parents=True, exist_ok=True)
    memo.write_text(value + "\n")
    return value


_BUILD_DIR = re.compile(r".+\.tmp-(\d+)(?:-.*)?")


def sweep_abandoned_builds(directory: Path) -> list[Path]:
    """Remove the work directories (<key>.tmp-<pid>...) of builds whose process is gone,
    e.g. a lab killed mid-build; returns what was removed."""
    removed = []
    for path in directory.glob("*.tmp-*"):
        match = _BUILD_DIR.fullmatch(path.name)
        if match and path.is_dir() and not path.is_symlink() and not _alive(int(match.group(1))):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# Shared "in use" locks this process holds: the .use file's path -> its open descriptor.
_held: dict[Path, int] = {}


def release_holds() -> None:
    """Let go of every entry this process holds (the end of a run)."""
    while _held:
        _, fd = _held.popitem()
        os.close(fd)


class Entry:
    """One cache entry: cache_root()/<kind>/<key>/ with a meta.json when complete."""

    def __init__(self, kind: str, key: str):
        self.kind = kind
        self.key = key
        self.path = cache_root() / kind / key

    @property
    def meta_path(self) -> Path:
        return self.path / "meta.json"

    def meta(self) -> dict | None:
        """The entry's meta.json; None when it is absent or not a JSON object (a bad entry:
        rebuilt by ensure(), listed as bad and prunable by `lab cache`)."""
        try:
            meta = json.loads(self.meta_path.read_text())
        except (OSError, ValueError, RecursionError):
            return None
        return meta if isinstance(meta, dict) else None

    @property
    def use_path(self) -> Path:
        return self.path.parent / f"{self.key}.use"

    def hold(self) -> None:
        """Mark the entry used now and keep it from being pruned while this process runs.
        Waits only while a prune removes this very entry (then the caller rebuilds it)."""
        path = self.use_path
        if path not in _held:
            path.parent.mkdir(parents=True, exist_ok=True)
            _held[path] = lock_file(path, fcntl.LOCK_SH)
        os.utime(path)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = lock_file(self.path.parent / f"{self.key}.lock", fcntl.LOCK_EX)
        try:
            yield
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def building(self) -> Iterator[Path]:
        """A fresh work directory; on success the caller calls publish()."""
        sweep_abandoned_builds(self.path.parent)
        work = self.path.parent / f"{self.key}.tmp-{os.getpid()}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        try:
            yield work
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def publish(self, work: Path, meta: dict) -> None:
        """Write meta.json into `work` and move it into place as this entry."""
        (work / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        shutil.rmtree(self.path, ignore_errors=True)
        os.rename(work, self.path)


def lock_file(path: Path, operation: int) -> int:
    """An open descriptor of `path` holding flock(operation). Prune removes an entry's lock
    files while it holds them (so none are left behind), so a lock taken on a file that is
    no longer at `path` is let go and taken again on the file that is (a prune removes an
    entry once, so a few passes suffice; more means something keeps removing it)."""
    for _ in range(_LOCK_PASSES):
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        fcntl.flock(fd, operation)
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)
    raise InfraError(f"{path}: removed again each time the lab locked it ({_LOCK_PASSES} times)")


_LOCK_PASSES = 100


@dataclass(frozen=True)
class Workspace:
    """What a builder given to `ensure` works with."""

    work: Path  # scratch space, removed when the build ends
    result: Path  # becomes the entry: what the builder leaves here is published
    log: Path  # beside the entry while building (a failure can name it), then moved into it


def ensure(entry: Entry, build: Callable[[Workspace], dict], log_name: str = "build.log",
           current: Callable[[dict], bool] = lambda meta: True) -> dict:
    """The entry's meta: from the cache, or made now by `build` under the entry's lock.

    `build` fills `result` and returns the meta to publish; an exception from it
    publishes nothing and leaves the log beside the entry (<key>.<log_name>). An entry
    whose meta is not `current` (a recorded failure from before a field it now needs)
    is made again.
    """
    entry.hold()
    with entry.lock():
        meta = entry.meta()
        if meta is not None and current(meta):
            return meta
        log = entry.path.parent / f"{entry.key}.{log_name}"
        log.unlink(missing_ok=True)
        with entry.building() as work:
            result = work / "result"
            result.mkdir()
            meta = build(Workspace(work, result, log))
            if log.exists():
                shutil.move(log, result / log_name)
            entry.publish(result, meta)
            return meta
