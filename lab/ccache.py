"""The compiler cache of kernel builds (Debian's ccache): one cache per lab cache,
paths made relative so that builds in different directories share objects, and
hits and misses counted per build from ccache's own stats log.

Kernel builds run in one layout, <work>/src beside <work>/build (lab.kernels), so
the relative paths ccache hashes are the same for every tree: a git ref one
commit later, a fragment with one more option or a point release find the
objects of the files they did not change.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from lab import safe_read
from lab.cache import cache_root
from lab.errors import BuildError
from lab.hosttools import require_tool
from lab.owner import Owner

STATS_MAX_BYTES = 64 * safe_read.MIB  # a line per compile: a full kernel writes about 1 MiB
MAX_SIZE = "20G"  # about 60 tinyconfig kernel builds of distinct sources
_HIT_COUNTERS = ("direct_cache_hit", "preprocessed_cache_hit")
_MISS_COUNTERS = ("cache_miss",)


@dataclass(frozen=True)
class Stats:
    hits: int
    misses: int

    @property
    def hit_rate(self) -> float:
        calls = self.hits + self.misses
        return self.hits / calls if calls else 0.0

    def __str__(self) -> str:
        return f"ccache: {self.hits} hits, {self.misses} misses ({self.hit_rate:.0%} hit rate)"

    def to_dict(self) -> dict:
        return {"hits": self.hits, "misses": self.misses, "hit_rate": round(self.hit_rate, 3)}


def compiler_prefix() -> list[str]:
    """The words before the compiler in CC=... (ccache is a host tool like make)."""
    return [require_tool("ccache", "ccache")]


def directory(owner: Owner | None = None) -> Path:
    """The compiler cache: in the lab's cache, unless LAB_CCACHE_DIR names another
    (the dev-loop benchmark starts from an empty one). A tree owner other than the lab's
    user has one of their own (made theirs here), so that nothing their tree's build runs
    can poison the objects of the lab's own builds."""
    if owner is not None and not owner.is_us:
        users = cache_root() / "ccache-users"
        users.mkdir(parents=True, exist_ok=True)
        return owner.directory(users / str(owner.uid))
    return Path(os.environ.get("LAB_CCACHE_DIR") or cache_root() / "ccache")


def environment(stats_log: Path, owner: Owner | None = None) -> dict[str, str]:
    """ccache's settings for one build; its counters go to `stats_log` only."""
    return {
        "CCACHE_DIR": str(directory(owner)),
        # Absolute paths under / become relative to the build directory: identical for
        # identical layouts, wherever the work directory is.
        "CCACHE_BASEDIR": "/",
        "CCACHE_NOHASHDIR": "1",
        "CCACHE_MAXSIZE": MAX_SIZE,
        "CCACHE_STATSLOG": str(stats_log),
    }


def read_stats(stats_log: Path) -> Stats:
    """Hits and misses in a stats log ("# file" lines, then one counter name per line)."""
    try:  # in a tree owner's build directory: never followed, bounded
        lines = safe_read.read_text(stats_log, STATS_MAX_BYTES, BuildError).splitlines()
    except FileNotFoundError:
        return Stats(0, 0)
    counters = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    return Stats(hits=sum(counters.count(name) for name in _HIT_COUNTERS),
                 misses=sum(counters.count(name) for name in _MISS_COUNTERS))
