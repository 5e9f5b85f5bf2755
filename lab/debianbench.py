"""Debian's kernels, measured: `python -m lab.bench --debian [--arch A,B]`.

1. Cold: `lab run --kernel debian-6.1,debian-6.12 --test swp_exclusive` with a cache
   that holds only what is compiled for the guest (userland and testcase binaries,
   and the guest's Debian sources), copied from the current cache by hard links:
   the apt lists, the kernel packages, their modules and the images are all new.
2. Warm: the same arches with the plan's tinyconfig 6.1 and Debian's 6.1 kernel on
   the warm cache; boot-to-SSH per arch for each, and their ratio.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from lab import cli, rundir
from lab import config as cfg
from lab.cache import cache_root

# What the cold run may find: only what compiling for the guest made.
SEEDED_KINDS = ("userland", "testcases", "debian-sources")
KERNELS = ("debian-6.1", "debian-6.12")


def _run(args: list[str], cache: Path | None = None) -> tuple[int, float, list[dict]]:
    """`lab run ARGS` in-process (with LAB_CACHE=cache if given): exit code, wall time, cells."""
    out = tempfile.mkdtemp(prefix="lab-debian-bench-")
    previous = os.environ.get("LAB_CACHE")
    if cache:
        os.environ["LAB_CACHE"] = str(cache)
    try:
        started = time.monotonic()
        code = cli.main(["run", "--out", out, *args])
        wall = time.monotonic() - started
    finally:
        if cache:
            os.environ.pop("LAB_CACHE") if previous is None else os.environ.update(LAB_CACHE=previous)
    results = Path(out) / rundir.RESULTS
    cells = json.loads(results.read_text())["cells"] if results.is_file() else []
    shutil.rmtree(out, ignore_errors=True)
    return code, wall, cells


def _seeded_cache() -> Path:
    cache = Path(tempfile.mkdtemp(prefix="lab-debian-cold-cache-"))
    for kind in SEEDED_KINDS:
        if (cache_root() / kind).is_dir():
            shutil.copytree(cache_root() / kind, cache / kind, copy_function=os.link,
                            ignore=shutil.ignore_patterns("*.lock"))
    return cache


def _ssh_by_arch(cells: list[dict], kernel: str) -> dict[str, float]:
    boots: dict[str, list[float]] = {}
    for c in cells:
        if c["kernel"] == kernel and "ssh_s" in c["timings"]:
            boots.setdefault(c["arch"], []).append(c["timings"]["ssh_s"])
    return {arch: statistics.median(times) for arch, times in boots.items()}


def main(arches: list[str] | None) -> int:
    lab = cfg.load_lab()
    debian_arches = arches or [a for a in lab.plan.arches if lab.arches[a].debian]
    selection = ["--arch", ",".join(debian_arches), "--test", "swp_exclusive"]
    cache = _seeded_cache()
    try:
        code, wall, cells = _run(["--kernel", ",".join(KERNELS), *selection], cache)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    statuses = ", ".join(f"{c['arch']}/{c['kernel']} {c['status']}" for c in cells)
    print(f"\ncold (seeded with {', '.join(SEEDED_KINDS)} only): {wall:.1f} s for {len(cells)} cells, "
          f"exit {code}\n  {statuses}")
    code, wall, cells = _run(["--kernel", "6.1,debian-6.1", *selection])
    ours, debian = _ssh_by_arch(cells, "6.1"), _ssh_by_arch(cells, "debian-6.1")
    print(f"\nwarm boot to SSH, seconds after QEMU start (run wall time {wall:.1f} s):")
    print(f"  {'arch':10} {'tinyconfig 6.1':>14} {'debian-6.1':>10} {'ratio':>6}")
    for arch in debian_arches:
        if arch in ours and arch in debian:
            print(f"  {arch:10} {ours[arch]:14.2f} {debian[arch]:10.2f} {debian[arch] / ours[arch]:5.1f}x")
        else:
            print(f"  {arch:10} {ours.get(arch, '-'):>14} {debian.get(arch, '-'):>10}      -")
    return 0
