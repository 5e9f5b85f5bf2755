"""Exceptions, split by who must act. Only cli.py turns them into exit codes."""


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
    """The lab or the guest broke: no test answer could be had (cell status ERROR)."""


class BuildError(InfraError):
    """A kernel, image or testcase build failed; the message names log and first error."""


class BuildTimeout(BuildError):
    """A build step ran past its deadline and was killed: never a cached, deterministic failure."""


class ArchiveError(BuildError):
    """Debian's archive kept failing (5xx, timeouts, resets) while fetching a pinned package."""


class BootError(InfraError):
    """QEMU did not start, the guest did not boot or it crashed."""


class PortTakenError(BootError):
    """QEMU could not bind the SSH forward's host port: another process took it first."""


class SshError(InfraError):
    """The guest booted but SSH login, push or command execution failed."""


class HostKeyMismatch(SshError):
    """The guest presented a host key that is not its image's pinned key."""


class GuestOutputError(InfraError):
    """What a test printed cannot be judged (more than the lab reads, or too slow to read):
    its cell is ERROR, the run goes on."""
