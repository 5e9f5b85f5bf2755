"""Whose a kernel tree is, and running its steps as that user.

A developer's tree is read, built and bisected as the user who owns it, as git
itself would have it: its Makefile, its scripts and what its git configuration
names run with the owner's uid and groups, never with the lab's root. A tree
root owns is root's. The lab (root) stays in charge from outside: commands start
under lab.guardian, which keeps root to kill them at their deadline, and setpriv
(util-linux) drops to the owner just before the command itself runs.

The owner's build directories and compiler cache are the owner's own, in the
lab's cache: nothing the tree's code runs can write anywhere else in it. So the
cache must be reachable by the owner (every directory above it searchable).
"""

from __future__ import annotations

import os
import pwd
import stat
from dataclasses import dataclass
from pathlib import Path

from lab.errors import BuildError, UserError


@dataclass(frozen=True)
class Owner:
    uid: int
    gid: int
    groups: tuple[int, ...]
    name: str  # the user name, or "uid N" for a uid no account has

    @property
    def is_us(self) -> bool:
        """The lab's own user: commands run as they are, nothing is dropped."""
        return self.uid == os.geteuid()

    def argv(self, argv: list[str]) -> list[str]:
        """argv, run as the owner: setpriv with the owner's uid, gid and groups, no
        capabilities left, and no way to gain any (no_new_privs)."""
        if self.is_us:
            return argv
        groups = ",".join(map(str, self.groups)) if self.groups else None
        return ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}",
                f"--groups={groups}" if groups else "--clear-groups",
                "--inh-caps=-all", "--no-new-privs", "--", *argv]

    def environment(self) -> dict[str, str]:
        """What a command run as the owner needs in its environment besides the lab's:
        a HOME it may read (the lab's is root's), and no git configuration but the
        repository's own (whose programs the lab turns off, see lab.kernel_sources)."""
        if self.is_us:
            return {}
        return {"HOME": "/nonexistent", "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null",
                "XDG_CONFIG_HOME": "/nonexistent"}

    def own(self, path: Path) -> None:
        """Make `path` (a directory the lab just made for the owner) the owner's, without
        following a link there."""
        if not self.is_us:
            os.chown(path, self.uid, self.gid, follow_symlinks=False)

    def directory(self, path: Path) -> Path:
        """`path`, a directory of the owner's (made if missing; BuildError if something
        else, a link among them, is there)."""
        try:
            path.mkdir()
        except FileExistsError:
            if not stat.S_ISDIR(os.lstat(path).st_mode):
                raise BuildError(f"{path}: not a directory (one of {self}'s, made by the lab)") from None
        self.own(path)
        return path

    def can_reach(self, path: Path) -> bool:
        """Whether the owner may pass through every directory above `path` (search permission)."""
        for parent in [*reversed(path.parents)]:
            st = os.stat(parent)
            if st.st_uid == self.uid:
                bit = stat.S_IXUSR
            elif st.st_gid == self.gid or st.st_gid in self.groups:
                bit = stat.S_IXGRP
            else:
                bit = stat.S_IXOTH
            if not st.st_mode & bit:
                return False
        return True

    def __str__(self) -> str:
        return self.name


def owner_of(path: Path) -> Owner:
    """The user who owns `path` (not following a link), with their groups."""
    st = os.lstat(path)
    try:
        account = pwd.getpwuid(st.st_uid)
    except KeyError:
        return Owner(st.st_uid, st.st_gid, (st.st_gid,), f"uid {st.st_uid}")
    groups = tuple(sorted(set(os.getgrouplist(account.pw_name, account.pw_gid))))
    return Owner(st.st_uid, account.pw_gid, groups, f"{account.pw_name} (uid {st.st_uid})")


def require_reachable(owner: Owner, directory: Path, what: str) -> None:
    """UserError unless the owner can reach `directory` (the lab's cache)."""
    if owner.is_us or owner.can_reach(directory):
        return
    raise UserError(f"{what} belongs to {owner}, and is built as its owner, who cannot reach the lab's cache "
                    f"{directory} (a directory above it is not searchable by them): set LAB_CACHE to a "
                    f"directory every tree owner can pass through, e.g. /var/cache/qemu-lab")
