"""Runs one command as the leader of its own process group, and takes the whole
group down when the lab dies.

A build is a tree: make starts gcc, gcc starts cc1. The kernel's parent-death
signal reaches only the lab's direct child, so that child is this guardian: the
lab starts it with PR_SET_PDEATHSIG = SIGTERM (see lab.procs), and on SIGTERM,
SIGHUP or SIGINT it SIGKILLs its process group, itself included. So a build
dies with the lab even when the lab is SIGKILLed (as Jenkins does on abort).

Usage (by lab.procs only): python -I -S guardian.py COMMAND [ARG...]
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys


def _take_the_group_down(signum, frame) -> None:
    os.killpg(0, signal.SIGKILL)


def main(argv: list[str]) -> int:
    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(signum, _take_the_group_down)
    try:
        child = subprocess.Popen(argv)  # same stdio, same process group
    except OSError as exc:
        print(f"{argv[0]}: {exc.strerror}", file=sys.stderr)
        return 127
    status = child.wait()
    return status if status >= 0 else 128 - status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
