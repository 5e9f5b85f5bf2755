"""SSH to a guest: pinned host key, the lab's client key, push and run.

The guest's host key is generated when its image is built and is the only key
accepted; a guest presenting any other key is refused (never auto-accepted).
"""

from __future__ import annotations

import shlex
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import fabric
import paramiko
from paramiko.hostkeys import HostKeyEntry

from lab import procs
from lab.cache import Entry, cache_root
from lab.capture import BoundedOutput
from lab.errors import HostKeyMismatch, InfraError, NoSshAnswer, SshError
from lab.hosttools import require_tool
from lab.stream import Ending, stream


def client_key() -> tuple[Path, str]:
    """The lab's SSH client key (made once per cache, mode 0600) and its public line."""
    private = cache_root() / "keys" / "id_ed25519"
    # keys/ is private from its creation (before the lock file is made in it), and made
    # so if an older lab created it with the umask's mode.
    private.parent.parent.mkdir(parents=True, exist_ok=True)
    private.parent.mkdir(mode=0o700, exist_ok=True)
    private.parent.chmod(0o700)
    entry = Entry("keys", "client")
    with entry.lock():
        if not private.is_file():
            require_tool("ssh-keygen", "openssh-client")
            made = procs.probe(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "qemu-lab", "-f", str(private)])
            if made.returncode != 0:
                raise InfraError(f"ssh-keygen could not make the lab's client key {private}: {made.stderr.strip()}")
        private.chmod(0o600)
    public = Path(f"{private}.pub").read_text().strip()
    return private, public


def wait_for_banner(port: int, timeout_s: float, alive=lambda: True) -> None:
    """Wait until sshd in the guest sends its banner.

    QEMU's user network accepts TCP on the forwarded port long before the guest
    listens, so a connect alone proves nothing: only an "SSH-" banner does.
    `alive` says whether the guest still exists: no point probing a dead one.
    """
    deadline = time.monotonic() + timeout_s
    last_error = "no answer"
    while time.monotonic() < deadline:
        if not alive():
            raise SshError(f"QEMU exited while waiting for the SSH banner on 127.0.0.1:{port}", code="boot.failed")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2.0) as sock:
                sock.settimeout(max(0.1, min(3.0, deadline - time.monotonic())))
                data = sock.recv(256)
                if data.startswith(b"SSH-"):
                    return
                last_error = f"unexpected reply {data[:40]!r}" if data else "connection closed without a banner"
        except OSError as exc:
            last_error = str(exc)
        # A short pause between probes, bounded by the deadline.
        time.sleep(max(0.0, min(0.25, deadline - time.monotonic())))
    raise NoSshAnswer(f"no SSH banner on 127.0.0.1:{port} within {timeout_s:.0f} s ({last_error})")


class _RejectUnpinned(paramiko.MissingHostKeyPolicy):
    """A guest key that is not the pinned one is refused, never added (and typed, not a message)."""

    def missing_host_key(self, client, hostname, key) -> None:
        raise HostKeyMismatch(f"guest {hostname} presented a host key that is not the image's pinned key "
                              f"({key.get_name()} {key.get_base64()[:16]}...)")


@dataclass(frozen=True)
class CommandResult:
    exit_code: int | None  # None: timed out
    stdout: str  # excerpts (see lab.capture); the full streams are in the log files, if given
    stderr: str

    @property
    def timed_out(self) -> bool:
        return self.exit_code is None


class _StepDeadline:
    """Bounds one SSH step: past `seconds`, the transport is closed, which ends any wait
    paramiko is in (channel open, exec request, SFTP start); the step then raises SshError."""

    def __init__(self, transport: paramiko.Transport, seconds: float, what: str):
        self.transport, self.seconds, self.what = transport, seconds, what
        self.missed = threading.Event()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def _expire(self) -> None:
        self.missed.set()
        self.transport.close()

    def __enter__(self) -> "_StepDeadline":
        self._timer.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self._timer.cancel()
        if self.missed.is_set():
            raise SshError(f"{self.what}: no answer from the guest within {self.seconds:.0f} s "
                           f"(it accepts the connection but does not answer)") from None
        return False


class Remote:
    """An SSH session to one guest. Every step has a deadline: `timeout_s` for each SSH
    step (open, exec request, SFTP start), the caller's for a command or a push."""

    def __init__(self, port: int, host_key: str, key_file: Path, timeout_s: float = 30.0):
        self.port = port
        self.step_timeout_s = timeout_s
        self._sftp: paramiko.SFTPClient | None = None
        client = paramiko.SSHClient()
        entry = HostKeyEntry.from_line(f"[127.0.0.1]:{port} {host_key}")
        if entry is None or entry.key is None:
            raise SshError(f"unusable pinned host key {host_key!r}")
        client.get_host_keys().add(f"[127.0.0.1]:{port}", entry.key.get_name(), entry.key)
        client.set_missing_host_key_policy(_RejectUnpinned())
        # The user's ~/.ssh/config and ~/.fabric.* (agent forwarding, ProxyJump, other
        # keys) have no say over a guest connection: lazy config, an empty SSH config.
        config = fabric.Config(lazy=True, ssh_config=paramiko.SSHConfig())
        self.conn = fabric.Connection(
            "127.0.0.1", user="root", port=port, config=config, gateway=False, forward_agent=False,
            connect_timeout=int(timeout_s),
            connect_kwargs={"key_filename": str(key_file), "look_for_keys": False, "allow_agent": False,
                            "banner_timeout": timeout_s, "auth_timeout": timeout_s,
                            "channel_timeout": timeout_s},
        )
        self.conn.client = client  # fabric's own client would auto-accept host keys

    def connect(self) -> None:
        try:
            self.conn.open()
        except paramiko.BadHostKeyException as exc:  # the pinned type, another key
            raise HostKeyMismatch(f"guest on port {self.port} presented a host key that is not the image's "
                                  f"pinned key ({exc.key.get_name()})") from None
        except HostKeyMismatch:  # a key of another type
            raise
        except paramiko.SSHException as exc:
            raise SshError(f"SSH login to 127.0.0.1:{self.port} failed: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - whatever the SSH stack raises, the guest is unreachable
            raise SshError(f"SSH login to 127.0.0.1:{self.port} failed: {exc}") from None

    def _transport(self) -> paramiko.Transport:
        transport = self.conn.client.get_transport()
        if transport is None or not transport.is_active():
            raise SshError(f"the SSH connection to 127.0.0.1:{self.port} is gone")
        return transport

    def _step(self, what: str, seconds: float | None = None) -> _StepDeadline:
        return _StepDeadline(self._transport(), seconds or self.step_timeout_s, what)

    def _start(self, command: str) -> paramiko.Channel:
        """A channel with `command` started in it (both steps bounded)."""
        try:
            with self._step(f"opening an SSH channel for {command!r}"):
                channel = self._transport().open_session(timeout=self.step_timeout_s)
            with self._step(f"starting {command!r}"):
                channel.exec_command(command)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise SshError(f"starting {command!r} over SSH failed: {type(exc).__name__}: {exc}") from None
        return channel

    def start(self, argv: list[str]) -> paramiko.Channel:
        """Start argv (quoted) and hand its channel to the caller, who reads it with a deadline."""
        return self._start(shlex.join(argv))

    def open_shell(self, term: str, columns: int, lines: int) -> paramiko.Channel:
        """A login shell with a terminal of that type and size (`lab shell`)."""
        try:
            with self._step("opening an SSH channel for a shell"):
                channel = self._transport().open_session(timeout=self.step_timeout_s)
            with self._step("starting a shell with a terminal"):
                channel.get_pty(term=term, width=columns, height=lines)
                channel.invoke_shell()
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise SshError(f"starting a shell over SSH failed: {type(exc).__name__}: {exc}") from None
        return channel

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
            with self._step(f"push of {local.name} to {remote}", timeout_s):
                # One SFTP session per connection, kept open: seen here, closing it and at
                # once starting the next command made dropbear answer "Channel closed".
                if self._sftp is None:
                    self._sftp = paramiko.SFTPClient.from_transport(self._transport())
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
            with self._step(f"starting {argv[0]}", timeout_s):
                channel = self._transport().open_session(timeout=timeout_s)
                channel.exec_command(shlex.join(argv))
        except (SshError, paramiko.SSHException, OSError, EOFError):
            pass  # the guest may already be going down; QEMU is killed after a deadline anyway

    def close(self) -> None:
        try:
            self.conn.close()
        except Exception:  # noqa: BLE001 - closing a dead connection must never mask the real error
            pass

