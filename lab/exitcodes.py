"""The exit-code contract of `lab` and of the lab's tools (hostdeps, bench, browser),
in one table. cli.main applies it to exceptions; the tools' mains use it too.
Standard library only: hostdeps runs before the lab's Python packages exist.

    0    nothing unexpected
    1    a test FAILed, XPASSed or TIMEOUTed (a finding, not a lab problem)
    2    the user must act (usage, configs, input) or the lab got no answer (an ERROR)
    124  `lab shell -- CMD`: CMD ran past its deadline (as timeout(1) says it);
         otherwise `lab shell` exits with the guest shell's or command's status
    129  hung up (SIGHUP: the terminal closed)
    130  interrupted (SIGINT, Ctrl-C)
    143  terminated (SIGTERM)
"""

from __future__ import annotations

from lab.errors import InfraError, LabError, UserError

OK = 0
FINDING = 1
PROBLEM = 2
COMMAND_TIMEOUT = 124
HUNG_UP = 129
INTERRUPTED = 130
TERMINATED = 143


class Terminated(BaseException):
    """SIGTERM arrived: stop like on Ctrl-C. A BaseException, as KeyboardInterrupt is, so
    that no `except Exception` on the way (the SSH layer's, a build's) turns the signal
    into an error: the lab exits 143 (129 for SIGHUP) wherever the signal found it."""


class HungUp(Terminated):
    """SIGHUP arrived (the terminal closed): stop like on SIGTERM."""


# Who must act, and the code that tells them; the first matching class wins.
FOR_EXCEPTION: tuple[tuple[type[BaseException], int, str], ...] = (
    (UserError, PROBLEM, "error"),  # the user: usage, configs, input from elsewhere
    (InfraError, PROBLEM, "ERROR"),  # the host or the lab's infrastructure: build, boot, SSH
    (LabError, PROBLEM, "error"),
    (KeyboardInterrupt, INTERRUPTED, "interrupted"),
    (HungUp, HUNG_UP, "hung up"),
    (Terminated, TERMINATED, "terminated"),
)


def for_exception(exc: BaseException) -> tuple[int, str] | None:
    """(exit code, label for the message) for an exception the contract names, else None."""
    for kind, code, label in FOR_EXCEPTION:
        if isinstance(exc, kind):
            return code, label
    return None
