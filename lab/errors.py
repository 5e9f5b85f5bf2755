"""Exceptions, split by who must act. Only cli.py turns them into exit codes.

Every infrastructure error has a stable code (ERROR_CODES): a cell that got no answer
records it, the journal, JUnit and the reports carry it, and a known ERROR in
configs/lab.toml names it (`error = "boot.no-ssh"`). Messages may be reworded; a code
is never renamed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ERROR_CODES = {
    "build.failed": "a kernel, image or testcase build failed (the message has the compiler's or make's line)",
    "build.timeout": "a build step ran past its deadline and was killed",
    "build.archive": "Debian's archive kept failing while the lab fetched a pinned package",
    "build.refused": "the lab does not build this kernel with this compiler (a known miscompile)",
    "kernel.unavailable": "Debian's package lists do not have the kernel package the arch's flavour names",
    "kernel.missing-module": "a module the guest needs is neither in the kernel package nor built in",
    "kernel.bad-image": "the kernel image is not what the arch boots (its magic bytes do not match)",
    "boot.failed": "QEMU did not start, or the guest did not reach its ready line",
    "boot.port-taken": "QEMU could not bind the SSH forward's host port",
    "boot.no-ssh": "the guest booted, but its SSH server never answered",
    "ssh.failed": "SSH login, a push or a command failed, or the connection was lost",
    "ssh.host-key": "the guest presented a host key that is not its image's pinned key",
    "guest.crash": "the guest crashed (a kernel panic, or QEMU gone) while the test ran",
    "guest.output": "what the test printed cannot be judged (too much, or too slow to read)",
    "test.exit-code": "the test exited with a code that is no verdict (not 0, 1 or 4)",
    "testcase.missing": "the testcase has no binary for this arch",
    "lab.timeout": "a host command of the lab ran past its deadline",
    "lab.error": "another failure of the lab itself",
}
# What a code read from elsewhere (a journal of another machine) may look like.
CODE_PATTERN = re.compile(r"[a-z]{1,20}(?:\.[a-z-]{1,30}){1,2}")


class LabError(Exception):
    """Base of every error the lab reports as a clean one-line message."""


class UserError(LabError):
    """The user must act: bad arguments, bad config, a missing host tool (exit 2)."""


class ConfigError(UserError):
    """A config or testcase file is malformed; the message names file and field."""


class PinError(ConfigError):
    """A pinned Debian package cannot be had as pinned (suite not configured, version gone)."""


class RunDataError(UserError):
    """A run directory's file (run.json, journal, results.json), maybe from another machine,
    is malformed; the message names the file, the line or field, and what is allowed."""


class MissingToolError(UserError):
    """A host program or file is missing; the message names the Debian package."""

    def __init__(self, what: str, package: str):
        super().__init__(f"{what} not found: install the Debian package '{package}' (or run ./just setup)")
        self.package = package


class HostSetupError(UserError):
    """The host's own setup (its apt sources) lacks what the lab's setup builds on."""


class InfraError(LabError):
    """The lab or the guest broke: no test answer could be had (cell status ERROR).
    `code` says which failure it is (ERROR_CODES): each class has one; a raise site
    may name a narrower one (code=...)."""

    code = "lab.error"

    def __init__(self, *args, code: str | None = None):
        super().__init__(*args)
        if code is not None:
            if code not in ERROR_CODES:
                raise ValueError(f"unknown error code {code!r}")
            self.code = code


@dataclass(frozen=True)
class Failure:
    """An infrastructure error as data, for a cell that got no answer because of it."""

    code: str
    message: str

    @classmethod
    def of(cls, exc: InfraError) -> Failure:
        return cls(exc.code, str(exc))


class BuildError(InfraError):
    """A kernel, image or testcase build failed; the message names log and first error."""

    code = "build.failed"


class BuildTimeout(BuildError):
    """A build step ran past its deadline and was killed: never a cached, deterministic failure."""

    code = "build.timeout"


class ArchiveError(BuildError):
    """Debian's archive kept failing (5xx, timeouts, resets) while fetching a pinned package."""

    code = "build.archive"


class BootError(InfraError):
    """QEMU did not start, the guest did not boot or it crashed."""

    code = "boot.failed"


class PortTakenError(BootError):
    """QEMU could not bind the SSH forward's host port: another process took it first."""

    code = "boot.port-taken"


class SshError(InfraError):
    """The guest booted but SSH login, push or command execution failed."""

    code = "ssh.failed"


class NoSshAnswer(SshError):
    """The guest booted, but its SSH server never answered (no banner)."""

    code = "boot.no-ssh"


class HostKeyMismatch(SshError):
    """The guest presented a host key that is not its image's pinned key."""

    code = "ssh.host-key"


class GuestOutputError(InfraError):
    """What a test printed cannot be judged (more than the lab reads, or too slow to read):
    its cell is ERROR, the run goes on."""

    code = "guest.output"
