"""Commands and files over a guest's SSH connection (lab.ssh): run a command with its
output streamed into capped logs (lab.stream), start one detached (power-off), and
push a file over SFTP, its sha256 checked in the guest.
"""

from __future__ import annotations

import shlex
import time
from dataclasses import dataclass
from pathlib import Path

import paramiko

from lab.capture import BoundedOutput
from lab.errors import SshError
from lab.ssh import SshConnection
from lab.stream import Ending, stream


@dataclass(frozen=True)
class CommandResult:
    exit_code: int | None  # None: timed out
    stdout: str  # excerpts (see lab.capture); the full streams are in the log files, if given
    stderr: str

    @property
    def timed_out(self) -> bool:
        return self.exit_code is None


class Remote(SshConnection):
    """A guest's SSH connection with what the lab does over it: commands and SFTP."""

    def __init__(self, port: int, host_key: str, key_file: Path, timeout_s: float = 30.0):
        super().__init__(port, host_key, key_file, timeout_s)
        self._sftp: paramiko.SFTPClient | None = None

    def _start(self, command: str) -> paramiko.Channel:
        """A channel with `command` started in it (both steps bounded)."""
        try:
            channel = self.open_channel(repr(command))
            with self.step(f"starting {command!r}"):
                channel.exec_command(command)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise SshError(f"starting {command!r} over SSH failed: {type(exc).__name__}: {exc}") from None
        return channel

    def start(self, argv: list[str]) -> paramiko.Channel:
        """Start argv (quoted) and hand its channel to the caller, who reads it with a deadline."""
        return self._start(shlex.join(argv))

    def run(self, argv: list[str], timeout_s: float, stdout_log: Path | None = None,
            stderr_log: Path | None = None) -> CommandResult:
        """Run argv (quoted, never a shell string from data); its output goes to the logs
        (capped) and, as excerpts, into the result (lab.stream). exit_code None: it ran
        past timeout_s; SshError: the connection was lost before it ended."""
        started = time.monotonic()
        command = shlex.join(argv)
        out, err = BoundedOutput(stdout_log), BoundedOutput(stderr_log)
        try:
            channel = self._start(command)
            try:
                end = stream(channel, out.add, err.add, started + timeout_s)
            finally:
                channel.close()
        finally:
            out.close()
            err.close()
        if end.ending is Ending.LOST:  # no exit status: the guest's doing (infrastructure)
            raise SshError(f"running {command!r}: the SSH connection was lost before the command finished")
        return CommandResult(end.exit_code, out.text(), err.text())

    def check(self, argv: list[str], timeout_s: float = 30.0) -> str:
        """Run a lab-side helper command that must succeed; return its stdout."""
        res = self.run(argv, timeout_s)
        if res.exit_code != 0:
            detail = (res.stderr or res.stdout).strip().splitlines()
            raise SshError(f"{shlex.join(argv)} failed in the guest "
                           f"({'timed out' if res.timed_out else f'exit {res.exit_code}'}): "
                           f"{detail[-1] if detail else 'no output'}")
        return res.stdout

    def push(self, local: Path, remote: str, sha256: str, timeout_s: float = 60.0) -> None:
        """Copy a file over SFTP (the whole push bounded by timeout_s) and verify its sha256 in the guest."""
        try:
            with self.step(f"push of {local.name} to {remote}", timeout_s):
                # One SFTP session per connection, kept open: seen here, closing it and at
                # once starting the next command made dropbear answer "Channel closed".
                if self._sftp is None:
                    self._sftp = paramiko.SFTPClient.from_transport(self.transport())
                self._sftp.get_channel().settimeout(timeout_s)
                self._sftp.put(str(local), remote)
        except SshError:
            raise
        except Exception as exc:  # noqa: BLE001 - the SFTP layer fails in many ways when the guest dies
            raise SshError(f"push of {local.name} to {remote} failed: {type(exc).__name__}: {exc}") from None
        seen = self.check(["sha256sum", remote], timeout_s).split()
        if not seen or seen[0] != sha256:
            raise SshError(f"push of {local.name}: sha256 in the guest is {seen[0] if seen else '?'}, expected {sha256}")
        self.check(["chmod", "0755", remote], timeout_s)

    def start_detached(self, argv: list[str], timeout_s: float = 5.0) -> None:
        """Start a command without waiting for it (e.g. power-off, which drops the connection)."""
        try:
            channel = self.open_channel(argv[0], timeout_s)
            with self.step(f"starting {argv[0]}", timeout_s):
                channel.exec_command(shlex.join(argv))
        except (SshError, paramiko.SSHException, OSError, EOFError):
            pass  # the guest may already be going down; QEMU is killed after a deadline anyway
