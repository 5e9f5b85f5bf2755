"""A writer for the newc cpio format the kernel unpacks as an initramfs.

Written here rather than calling cpio(1) so that ownership, modes and device
nodes are exact without root or fakeroot, and archives are reproducible.
"""

from __future__ import annotations

import gzip
import io
import stat

_TRAILER = "TRAILER!!!"


class CpioWriter:
    def __init__(self) -> None:
        self._buf = io.BytesIO()
        self._ino = 1
        self._names: set[str] = set()

    def _entry(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> None:
        name = name.lstrip("/")
        if name in self._names:
            raise ValueError(f"duplicate cpio entry {name}")
        self._names.add(name)
        encoded = name.encode() + b"\0"
        fields = (self._ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(encoded), 0)
        header = "070701" + "".join(f"{v:08x}" for v in fields)
        self._ino += 1
        self._buf.write(header.encode() + encoded)
        self._pad()
        self._buf.write(data)
        self._pad()

    def _pad(self) -> None:
        self._buf.write(b"\0" * (-self._buf.tell() % 4))

    def directory(self, name: str, perm: int = 0o755) -> None:
        self._entry(name, stat.S_IFDIR | perm)

    def file(self, name: str, data: bytes, perm: int = 0o644) -> None:
        self._entry(name, stat.S_IFREG | perm, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def char_device(self, name: str, major: int, minor: int, perm: int = 0o600) -> None:
        self._entry(name, stat.S_IFCHR | perm, rdev=(major, minor))

    def gzipped(self) -> bytes:
        """The finished archive, gzip-compressed with a fixed timestamp."""
        self._entry(_TRAILER, 0)
        return gzip.compress(self._buf.getvalue(), compresslevel=6, mtime=0)
