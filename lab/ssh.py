"""The SSH connection to a guest: the lab's client key, the wait for the guest's SSH
server, login with the pinned host key, and a deadline on every SSH step.

The guest's host key is generated when its image is built and is the only key
accepted; a guest presenting any other key is refused (never auto-accepted).
What runs over the connection: lab.remote (commands, SFTP), lab.shell (the pty relay).
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import fabric
import paramiko
from paramiko.hostkeys import HostKeyEntry

from lab import procs
from lab.cache import Entry, cache_root
from lab.errors import HostKeyMismatch, InfraError, NoSshAnswer, SshError
from lab.hosttools import require_tool


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


class SshConnection:
    """One guest's SSH connection. Every step has a deadline: `timeout_s` for each SSH
    step (login, channel open, exec request, SFTP start) unless the caller gives one."""

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

    def transport(self) -> paramiko.Transport:
        transport = self.conn.client.get_transport()
        if transport is None or not transport.is_active():
            raise SshError(f"the SSH connection to 127.0.0.1:{self.port} is gone")
        return transport

    def step(self, what: str, seconds: float | None = None) -> _StepDeadline:
        """A context bounding one SSH step: past the deadline, SshError."""
        return _StepDeadline(self.transport(), seconds or self.step_timeout_s, what)

    def open_channel(self, what: str, seconds: float | None = None) -> paramiko.Channel:
        """A new session channel (bounded), for a command, a shell or SFTP."""
        with self.step(f"opening an SSH channel for {what}", seconds):
            return self.transport().open_session(timeout=seconds or self.step_timeout_s)

    def close(self) -> None:
        try:
            self.conn.close()
        except Exception:  # noqa: BLE001 - closing a dead connection must never mask the real error
            pass
