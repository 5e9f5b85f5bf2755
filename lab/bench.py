"""Benchmark a run: `python -m lab.bench [--arch ..] [-j N]` (or `./just bench`).

`--dev-loop` measures the developer loop on a kernel tree instead (lab.devloop),
`--debian` Debian's prebuilt kernels, cold and against ours (lab.debianbench).

Runs the plan like `lab run`, then prints per cell the time from QEMU start to
the ready marker, to SSH login, and to the end of the test, plus the run's wall
time and what the cached builds cost when they were made.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from lab import cli, exitcodes, rundir
from lab import config as cfg
from lab import schema
from lab.cache import cache_root
from lab.images import built_image
from lab.kernels import kernel_entry


def _arch_costs(lab: schema.Lab, arches: list[str], kernels: list[str], cells: list[dict]) -> list[str]:
    """Per arch: kernel build times (when they were built), userland build time, boot to ready/SSH."""
    rows = []
    for a in arches:
        builds = []
        for k in kernels:
            meta = kernel_entry(lab, lab.arches[a], lab.kernels[k]).meta()
            if meta:
                builds.append(f"{k} {meta.get('seconds', '?')}{'' if meta['ok'] else ' (failed)'}")
        userland = "-"
        image = built_image(lab, lab.arches[a])
        if image:
            key = json.loads((image.parent / "meta.json").read_text())["userland"]
            userland = str(json.loads((cache_root() / "userland" / key / "meta.json").read_text())["seconds"])
        boots = [c["timings"] for c in cells if c["arch"] == a and "ssh_s" in c["timings"]]
        ready = f"{statistics.median(t['ready_s'] for t in boots):.2f}" if boots else "-"
        ssh = f"{statistics.median(t['ssh_s'] for t in boots):.2f}" if boots else "-"
        rows.append((a, ", ".join(builds) or "-", userland, ready, ssh))
    width = max([len("kernel builds (s)")] + [len(r[1]) for r in rows])
    lines = [f"  {'arch':10} {'kernel builds (s)':{width}} {'userland (s)':>12} {'ready (s)':>9} {'ssh (s)':>8}"]
    lines += [f"  {a:10} {b:{width}} {u:>12} {r:>9} {s:>8}" for a, b, u, r, s in rows]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.bench", allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument("--arch")
    parser.add_argument("--kernel")
    parser.add_argument("--test")
    parser.add_argument("-j", "--jobs", default=str(os.cpu_count() or 1),
                        help="guests at once; a list such as 1,2 runs the plan once per value and "
                             "compares wall times (parallel efficiency)")
    parser.add_argument("--out", help="result directory (default: a new temporary directory)")
    parser.add_argument("--dev-loop", action="store_true",
                        help="measure the developer loop instead (lab run --tree: cold build, edit to matrix, "
                             "one more fragment option) for --arch (default: i386-pae,sparc64)")
    parser.add_argument("--debian", action="store_true",
                        help="measure Debian's kernels instead: a cold run from a cache holding only the guest's "
                             "compiled parts, and boot-to-SSH against tinyconfig kernels (default: every arch "
                             "Debian has a kernel for)")
    args = parser.parse_args(argv)
    if args.debian:
        from lab import debianbench
        return debianbench.main(args.arch.split(",") if args.arch else None)
    if args.dev_loop:
        from lab import devloop  # builds kernels: only when asked
        return devloop.main(args.arch.split(",") if args.arch else list(devloop.DEFAULT_ARCHES))
    walls = {}
    for jobs in [int(j) for j in args.jobs.split(",")]:
        code, wall, out = _run(args, jobs)
        walls[jobs] = wall
    if len(walls) > 1:
        base_jobs, base = min(walls.items())
        print("\nparallel efficiency (same plan, warm cache):")
        for jobs, wall in sorted(walls.items()):
            speedup = base / wall
            print(f"  -j {jobs}: {wall:6.1f} s, speed-up {speedup:.2f}x over -j {base_jobs}, "
                  f"efficiency {speedup / (jobs / base_jobs):.0%}")
    # A FAIL is a finding, not a benchmark failure; an ERROR means the numbers are incomplete.
    return exitcodes.PROBLEM if code == exitcodes.PROBLEM else exitcodes.OK


def _run(args, jobs: int) -> tuple[int, float, str]:
    out = args.out if args.out and "," not in args.jobs else tempfile.mkdtemp(prefix="lab-bench-")
    run_args = ["run", "--out", out, "-j", str(jobs)]
    for flag in ("arch", "kernel", "test"):
        if getattr(args, flag):
            run_args += [f"--{flag}", getattr(args, flag)]
    started = time.monotonic()
    code = cli.main(run_args)
    wall = time.monotonic() - started
    results = Path(out) / rundir.RESULTS
    if not results.is_file():
        print(f"bench: the run wrote no results (exit {code})")
        return code or exitcodes.PROBLEM, wall, out
    data = json.loads(results.read_text())
    print("\nper cell, seconds after QEMU start:")
    print(f"  {'cell':36} {'status':8} {'ready':>7} {'ssh':>7} {'done':>7} {'test':>7}")
    for c in data["cells"]:
        t = c["timings"]
        cols = [f"{t[k]:7.2f}" if k in t else f"{'-':>7}" for k in ("ready_s", "ssh_s", "test_done_s")]
        print(f"  {c['arch'] + '/' + c['kernel'] + ' ' + c['testcase']:36} {c['status']:8} {' '.join(cols)} "
              f"{c['duration_s']:7.2f}")
    print(f"\nwall time of the run (-j {jobs}): {wall:.1f} s, exit code {code}")
    lab = cfg.load_lab()
    print("per arch: cached build costs (measured when built) and boot times (median over this run's boots):")
    print("\n".join(_arch_costs(lab, data["run"]["arches"], data["run"]["kernels"], data["cells"])))
    return code, wall, out


if __name__ == "__main__":
    raise SystemExit(main())
