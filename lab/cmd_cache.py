"""`lab cache` and `lab cache prune`: what the cache holds, and pruning it."""

from __future__ import annotations

import sys
import time

from lab import config as cfg
from lab import cache_admin, exitcodes


def cmd_cache(args) -> int:
    """What the cache holds: an entry per line, what the plan needs, what prune would free."""
    needed, unjudged = cache_admin.needed_keys(cfg.load_lab())
    entries = cache_admin.list_entries(needed)
    print(f"{'kind':<15} {'key':<20} {'size':>10}  {'last used':<16} {'plan':<6} what")
    for e in sorted(entries, key=lambda e: (e.kind, -e.last_used)):
        used = time.strftime("%Y-%m-%d %H:%M", time.localtime(e.last_used))
        print(f"{e.kind:<15} {e.key:<20} {cache_admin.human(e.size):>10}  {used:<16} "
              f"{'needs' if e.needed else '-':<6} {e.what}")
    other = cache_admin.other_usage()
    for name, size in other:
        print(f"{name:<15} {'':<20} {cache_admin.human(size):>10}  (never pruned)")
    for note in unjudged:
        print(f"note: {note}")
    total = sum(e.size for e in entries) + sum(size for _, size in other)
    spare = sum(e.size for e in entries if not e.needed)
    print(f"\n{cache_admin.cache_root()}: {cache_admin.human(total)} in {len(entries)} entries; the plan needs "
          f"{cache_admin.human(total - spare)}; `lab cache prune` would free {cache_admin.human(spare)}")
    return exitcodes.OK


def cmd_cache_prune(args) -> int:
    """Remove what the default plan does not need, least recently used first, down to --max-size."""
    max_size = cache_admin.parse_size(args.max_size) if args.max_size else None
    if max_size is not None and (size := cache_admin.disk_usage(cache_admin.cache_root())) <= max_size:
        print(f"cache: {cache_admin.human(size)}, at most --max-size {args.max_size}: nothing to prune")
        return exitcodes.OK
    needed, unjudged = cache_admin.needed_keys(cfg.load_lab())
    for note in unjudged:
        print(f"note: {note}")
    entries = cache_admin.list_entries(needed)
    other = sum(size for _, size in cache_admin.other_usage())
    result = cache_admin.prune(entries, other, max_size, progress=print)
    for entry in result.held:
        print(f"kept {entry.kind}/{entry.key}: a running lab holds it")
    print(f"cache: {cache_admin.human(result.size_before)} -> {cache_admin.human(result.size_after)} "
          f"({len(result.removed)} entries removed)")
    if max_size is not None and result.size_after > max_size:
        print(f"lab cache prune: still {cache_admin.human(result.size_after - max_size)} over --max-size "
              f"{args.max_size}: the plan needs the rest", file=sys.stderr)
    return exitcodes.OK
