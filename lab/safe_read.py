"""Reading files the lab did not write itself, or not on this machine: run directories
from other agents (`lab merge`, `lab report`, `--baseline`, `--resume`), an earlier
results.json (`--shard-costs`).

Such a file is opened only if it is what it claims to be: a regular file, not a link
(O_NOFOLLOW: a link to /dev/zero is refused, not followed), not a FIFO or a device
(checked before opening, confirmed on the open descriptor, opened with O_NONBLOCK so
that nothing blocks in between), and read only up to a limit, so no file can block
`lab` for ever or exhaust its memory.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from lab.errors import RunDataError

MIB = 1 << 20


def _refuse(path: Path, why: str, error: type[Exception]) -> Exception:
    return error(f"{path}: {why}; expected a regular file written by the lab")


def read_bytes(path: Path, limit: int, error: type[Exception] = RunDataError) -> bytes:
    """The file's bytes; `error` naming the file if it is not a regular file or is over
    `limit` bytes. FileNotFoundError passes through (callers decide what absent means)."""
    try:
        before = os.lstat(path)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise _refuse(path, f"cannot be read ({exc.strerror})", error) from None
    if not stat.S_ISREG(before.st_mode):
        kind = "a symbolic link" if stat.S_ISLNK(before.st_mode) else "not a regular file"
        raise _refuse(path, f"is {kind}", error)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        why = "a symbolic link" if exc.errno == errno.ELOOP else exc.strerror
        raise _refuse(path, f"cannot be opened ({why})", error) from None
    with os.fdopen(fd, "rb") as fh:
        opened = os.fstat(fd)
        if not stat.S_ISREG(opened.st_mode) or (opened.st_dev, opened.st_ino) != (before.st_dev, before.st_ino):
            raise _refuse(path, "changed into something else while it was opened", error)
        data = fh.read(limit + 1)
    if len(data) > limit:
        size = f"{limit // MIB} MiB" if limit >= MIB else f"{limit} bytes"
        raise _refuse(path, f"larger than {size}, more than the lab reads from such a file", error)
    return data


def read_text(path: Path, limit: int, error: type[Exception] = RunDataError) -> str:
    """read_bytes() as text (UTF-8; undecodable bytes replaced, never an exception)."""
    return read_bytes(path, limit, error).decode("utf-8", errors="replace")
