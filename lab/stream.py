"""One way to stream a remote command's output: both streams into sinks until the
command ends, its connection is lost, or the deadline passes, the deadline checked on
every pass (a command that never stops printing always has output ready). Runs of a
testcase (lab.remote: into capped logs) and `lab shell -- CMD` (to the terminal) use it.
"""

from __future__ import annotations

import enum
import select
import time
from collections.abc import Callable
from dataclasses import dataclass

import paramiko

READ_CHUNK = 1 << 16
POLL_S = 0.5  # the longest a pass waits for output before it looks at the deadline again


class Ending(enum.Enum):
    EXITED = "exited"  # the command ended; its exit status is in StreamEnd.exit_code
    TIMED_OUT = "timed out"  # the deadline passed first
    LOST = "lost"  # the channel or the connection closed without an exit status


@dataclass(frozen=True)
class StreamEnd:
    ending: Ending
    exit_code: int | None = None


Sink = Callable[[bytes], object]


def stream(channel: paramiko.Channel, stdout: Sink, stderr: Sink, deadline: float) -> StreamEnd:
    """Move the command's stdout and stderr into the sinks until it ends (with what it
    printed read to the end), its connection is lost, or `deadline` (time.monotonic())."""
    sources = ((channel.recv_ready, channel.recv, stdout), (channel.recv_stderr_ready, channel.recv_stderr, stderr))
    while True:
        now = time.monotonic()
        if now >= deadline:
            return StreamEnd(Ending.TIMED_OUT)
        select.select([channel], [], [], min(POLL_S, deadline - now))
        for ready, receive, sink in sources:
            if ready():  # one chunk per stream per pass: the deadline is looked at between them
                sink(receive(READ_CHUNK))
        if channel.recv_ready() or channel.recv_stderr_ready():
            continue
        transport = channel.get_transport()
        connected = transport is not None and transport.is_active()
        if channel.exit_status_ready():
            # paramiko's -1: no exit-status came. With the connection up, the command was
            # killed by a signal (exit-signal, which paramiko does not read): it ended.
            status = channel.recv_exit_status()
            return StreamEnd(Ending.EXITED, status) if status != -1 or connected else StreamEnd(Ending.LOST)
        if channel.closed or not connected:
            return StreamEnd(Ending.LOST)
