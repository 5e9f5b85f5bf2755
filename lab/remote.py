"""SSH to a guest: pinned host key, the lab's client key, push and run.

The guest's host key is generated when its image is built and is the only key
accepted; a guest presenting any other key is refused (never auto-accepted).
"""

from __future__ import annotations

import shlex
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import fabric
import invoke
import paramiko
from paramiko.hostkeys import HostKeyEntry

from lab import procs
from lab.cache import Entry, cache_root
from lab.errors import InfraError, SshError
from lab.toolchain import require_tool


def client_key() -> tuple[Path, str]:
    """The lab's SSH client key (made once per cache, mode 0600) and its public line."""
    private = cache_root() / "keys" / "id_ed25519"
    entry = Entry("keys", "client")
    with entry.lock():
        if not private.is_file():
            require_tool("ssh-keygen", "openssh-client")
            private.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            made = procs.probe(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "qemu-lab", "-f", str(private)])
            if made.returncode != 0:
                raise InfraError(f"ssh-keygen could not make the lab's client key {private}: {made.stderr.strip()}")
        private.chmod(0o600)
    public = Path(f"{private}.pub").read_text().strip()
    return private, public


def wait_for_banner(port: int, timeout_s: float, alive=lambda: True) -> float:
    """Wait until sshd in the guest sends its banner; return the seconds it took.

    QEMU's user network accepts TCP on the forwarded port long before the guest
    listens, so a connect alone proves nothing: only an "SSH-" banner does.
    `alive` says whether the guest still exists: no point probing a dead one.
    """
    started = time.monotonic()
    deadline = started + timeout_s
    last_error = "no answer"
    while time.monotonic() < deadline:
        if not alive():
            raise SshError(f"QEMU exited while waiting for the SSH banner on 127.0.0.1:{port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2.0) as sock:
                sock.settimeout(max(0.1, min(3.0, deadline - time.monotonic())))
                data = sock.recv(256)
                if data.startswith(b"SSH-"):
                    return time.monotonic() - started
                last_error = f"unexpected reply {data[:40]!r}" if data else "connection closed without a banner"
        except OSError as exc:
            last_error = str(exc)
        # A short pause between probes, bounded by the deadline.
        time.sleep(max(0.0, min(0.25, deadline - time.monotonic())))
    raise SshError(f"no SSH banner on 127.0.0.1:{port} within {timeout_s:.0f} s ({last_error})")


@dataclass(frozen=True)
class CommandResult:
    exit_code: int | None  # None: timed out
    stdout: str
    stderr: str
    seconds: float

    @property
    def timed_out(self) -> bool:
        return self.exit_code is None


class Remote:
    """An SSH session to one guest."""

    def __init__(self, port: int, host_key: str, key_file: Path, timeout_s: float = 30.0):
        self.port = port
        client = paramiko.SSHClient()
        entry = HostKeyEntry.from_line(f"[127.0.0.1]:{port} {host_key}")
        if entry is None or entry.key is None:
            raise SshError(f"unusable pinned host key {host_key!r}")
        client.get_host_keys().add(f"[127.0.0.1]:{port}", entry.key.get_name(), entry.key)
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        # The user's ~/.ssh/config and ~/.fabric.* (agent forwarding, ProxyJump, other
        # keys) have no say over a guest connection: lazy config, an empty SSH config.
        config = fabric.Config(lazy=True, ssh_config=paramiko.SSHConfig())
        self.conn = fabric.Connection(
            "127.0.0.1", user="root", port=port, config=config, gateway=False, forward_agent=False,
            connect_timeout=int(timeout_s),
            connect_kwargs={"key_filename": str(key_file), "look_for_keys": False, "allow_agent": False,
                            "banner_timeout": timeout_s, "auth_timeout": timeout_s},
        )
        self.conn.client = client  # fabric's own client would auto-accept host keys

    def connect(self) -> None:
        try:
            self.conn.open()
        except paramiko.BadHostKeyException as exc:
            raise SshError(f"guest on port {self.port} presented a host key that is not the image's "
                           f"pinned key ({exc.key.get_name()})") from None
        except paramiko.SSHException as exc:
            if "not found in known_hosts" in str(exc):
                raise SshError(f"guest on port {self.port} presented a host key that is not the image's "
                               f"pinned key: {exc}") from None
            raise SshError(f"SSH login to 127.0.0.1:{self.port} failed: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - whatever the SSH stack raises, the guest is unreachable
            raise SshError(f"SSH login to 127.0.0.1:{self.port} failed: {exc}") from None

    def run(self, argv: list[str], timeout_s: float) -> CommandResult:
        """Run argv (quoted, never a shell string from data) and collect its output."""
        started = time.monotonic()
        command = shlex.join(argv)
        try:
            result = self.conn.run(command, hide=True, warn=True, timeout=timeout_s, in_stream=False, pty=False)
        except invoke.exceptions.CommandTimedOut as exc:
            res = exc.result
            return CommandResult(None, res.stdout, res.stderr, time.monotonic() - started)
        except Exception as exc:  # noqa: BLE001 - paramiko, socket and invoke's ThreadException alike
            raise SshError(f"running {command!r} over SSH failed: {type(exc).__name__}: {exc}") from None
        # -1: no exit status came back. With the connection gone that is the guest's
        # doing (infrastructure), not the command's; with it alive, a signal ended the command.
        transport = self.conn.client.get_transport()
        if result.exited == -1 and not (transport and transport.is_active()):
            raise SshError(f"running {command!r}: the SSH connection was lost before the command finished")
        return CommandResult(result.exited, result.stdout, result.stderr, time.monotonic() - started)

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
        """Copy a file over SFTP (with a deadline on every SFTP operation) and verify its sha256 in the guest."""
        try:
            self.conn.sftp().get_channel().settimeout(timeout_s)
            self.conn.put(str(local), remote=remote)
        except Exception as exc:  # noqa: BLE001 - the SFTP layer fails in many ways when the guest dies
            raise SshError(f"push of {local.name} to {remote} failed: {type(exc).__name__}: {exc}") from None
        seen = self.check(["sha256sum", remote], timeout_s).split()
        if not seen or seen[0] != sha256:
            raise SshError(f"push of {local.name}: sha256 in the guest is {seen[0] if seen else '?'}, expected {sha256}")
        self.check(["chmod", "0755", remote], timeout_s)

    def start_detached(self, argv: list[str]) -> None:
        """Start a command without waiting (e.g. power-off, which drops the connection)."""
        try:
            transport = self.conn.client.get_transport()
            if transport is None or not transport.is_active():
                return
            channel = transport.open_session(timeout=5.0)
            channel.exec_command(shlex.join(argv))
        except (paramiko.SSHException, OSError, EOFError):
            pass  # the guest may already be going down; QEMU is killed after a deadline anyway

    def close(self) -> None:
        try:
            self.conn.close()
        except Exception:  # noqa: BLE001 - closing a dead connection must never mask the real error
            pass
