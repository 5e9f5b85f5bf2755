"""Files written whole or not at all: a temporary file beside the target, fsynced,
then renamed over it. A crash or a full disk mid-write leaves the previous
version (or nothing), never half a run.json or half a report."""

from __future__ import annotations

import os
import threading
from pathlib import Path


def write_bytes(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write `data` to `path` atomically; the file has `mode` from its creation on."""
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    try:
        os.fchmod(fd, mode)  # whatever the umask
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str, mode: int = 0o644, errors: str = "strict") -> None:
    write_bytes(path, text.encode("utf-8", errors=errors), mode)
