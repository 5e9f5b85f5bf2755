"""SSH to guests, without a guest: what the connection is configured from, and deadlines."""

import re
import socket
import subprocess
import threading
import time
from pathlib import Path

import paramiko
import pytest

from lab import capture
from lab.errors import SshError
from lab.remote import Remote

GUEST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"


def test_the_users_ssh_and_fabric_configs_have_no_say(tmp_path, monkeypatch):
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh/config").write_text("Host *\n  User alice\n  Port 2222\n  ProxyJump bastion.example\n"
                                      "  ForwardAgent yes\n  IdentityFile ~/.ssh/other\n")
    (home / ".fabric.yaml").write_text("forward_agent: true\nuser: bob\nconnect_kwargs:\n  allow_agent: true\n")
    monkeypatch.setenv("HOME", str(home))
    conn = Remote(10022, GUEST_KEY, tmp_path / "key").conn
    assert (conn.user, conn.port, conn.host) == ("root", 10022, "127.0.0.1")
    assert conn.gateway is False and conn.forward_agent is False
    assert dict(conn.ssh_config) == {"hostname": "127.0.0.1"}, "nothing from ~/.ssh/config"
    assert conn.connect_kwargs["allow_agent"] is False and conn.connect_kwargs["look_for_keys"] is False
    assert conn.connect_kwargs["key_filename"] == [str(tmp_path / "key")], "no IdentityFile from ~/.ssh/config"
    assert isinstance(conn.client.get_host_keys().lookup("[127.0.0.1]:10022")["ssh-ed25519"], paramiko.PKey)


# --- a fake guest sshd that authenticates, then stalls at one step -------------------------

def _keypair(tmp_path, name):
    path = tmp_path / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path, " ".join(Path(f"{path}.pub").read_text().split()[:2])


class FakeGuestSshd(paramiko.ServerInterface):
    """Accepts the lab's login; then never answers at `stall` ("open", "exec", "sftp"), or
    runs every command as `output` bytes on stdout and exit status 0."""

    def __init__(self, stall: str = "", output: int = 0):
        self.stall, self.output = stall, output
        self.release = threading.Event()
        self.asked = threading.Event()  # an exec request arrived
        self.commands: list[bytes] = []

    def get_allowed_auths(self, username):
        return "publickey"

    def check_auth_publickey(self, username, key):
        return paramiko.AUTH_SUCCESSFUL

    def check_channel_request(self, kind, chanid):
        if self.stall == "open":
            self.release.wait(60)
        return paramiko.OPEN_SUCCEEDED

    def check_channel_exec_request(self, channel, command):
        self.commands.append(command)
        self.asked.set()
        if self.stall == "exec":
            self.release.wait(60)
            return False
        threading.Thread(target=self._answer, args=(channel,), daemon=True).start()
        return True

    def _answer(self, channel):
        block = b"0123456789abcdef" * 4096
        if self.stall == "drop":  # some output, then the connection goes (a guest that died)
            channel.sendall(b"started\n")
            time.sleep(0.2)
            channel.get_transport().close()
            return
        if self.output < 0:  # a command that never stops printing (yes), until the channel closes
            while not channel.closed:
                try:
                    channel.sendall(block)
                except (OSError, EOFError, paramiko.SSHException):
                    return
            return
        sent = 0
        while sent < self.output:
            channel.sendall(block[:self.output - sent])
            sent += min(len(block), self.output - sent)
        channel.sendall_stderr(b"done\n")
        channel.send_exit_status(0)
        channel.close()

    def check_channel_subsystem_request(self, channel, name):
        if self.stall == "sftp":
            self.release.wait(60)
        return False


@pytest.fixture
def fake_guest(tmp_path):
    host_key, host_public = _keypair(tmp_path, "host")
    client_key, _ = _keypair(tmp_path, "client")
    listener = socket.create_server(("127.0.0.1", 0))
    servers = []

    def start(server):
        def serve():
            conn, _ = listener.accept()
            transport = paramiko.Transport(conn)
            transport.add_server_key(paramiko.Ed25519Key.from_private_key_file(str(host_key)))
            transport.start_server(server=server)
            servers.append(transport)
        threading.Thread(target=serve, daemon=True).start()
        # Login under load (key exchange on a busy 2-core agent) may take seconds: it
        # has a long deadline. The steps under test then have 1 s each.
        remote = Remote(listener.getsockname()[1], host_public, client_key, timeout_s=60.0)
        remote.connect()
        remote.step_timeout_s = 1.0
        return remote

    yield start
    for transport in servers:
        transport.close()
    listener.close()


@pytest.mark.parametrize("stall, step", [("open", "opening an SSH channel for 'true'"), ("exec", "starting 'true'")])
def test_a_guest_that_stops_answering_at_a_command_step_is_an_ssh_error_at_the_deadline(fake_guest, stall, step):
    server = FakeGuestSshd(stall=stall)
    remote = fake_guest(server)
    started = time.monotonic()
    with pytest.raises(SshError, match=re.escape(step) + ": no answer from the guest within 1 s"):
        remote.run(["true"], timeout_s=600)
    assert time.monotonic() - started < 10
    server.release.set()


def test_a_guest_that_never_starts_sftp_fails_the_push_at_its_deadline(fake_guest, tmp_path):
    server = FakeGuestSshd(stall="sftp")
    remote = fake_guest(server)
    (tmp_path / "binary").write_bytes(b"x")
    started = time.monotonic()
    with pytest.raises(SshError, match="push of binary to /tmp/binary: no answer from the guest within 2 s"):
        remote.push(tmp_path / "binary", "/tmp/binary", "0" * 64, timeout_s=2)
    assert time.monotonic() - started < 10
    server.release.set()


def test_power_off_does_not_wait_for_a_guest_that_stopped_answering(fake_guest):
    server = FakeGuestSshd(stall="exec")
    remote = fake_guest(server)
    started = time.monotonic()
    remote.start_detached(["poweroff", "-f"], timeout_s=1)
    assert time.monotonic() - started < 5
    assert server.asked.wait(10) and server.commands == [b"poweroff -f"], "the power-off was asked for"
    server.release.set()


def test_output_is_logged_up_to_the_cap_and_only_an_excerpt_is_kept(fake_guest, tmp_path, monkeypatch):
    monkeypatch.setattr(capture, "LOG_CAP_BYTES", 1 << 20)
    remote = fake_guest(FakeGuestSshd(output=5 << 20))
    result = remote.run(["flood"], timeout_s=120, stdout_log=tmp_path / "stdout.txt", stderr_log=tmp_path / "stderr.txt")
    assert result.exit_code == 0 and result.stderr == "done\n"
    cut = (5 << 20) - 2 * capture.EXCERPT_BYTES
    assert len(result.stdout) < 2 * capture.EXCERPT_BYTES + 200
    assert f"[qemu-lab: {cut} bytes cut here; the full output is in stdout.txt (its first 1 MiB)]" in result.stdout
    log = (tmp_path / "stdout.txt").read_bytes()
    assert len(log) < (1 << 20) + 200 and log.endswith(b"[qemu-lab: output cut at 1048576 bytes; "
                                                        b"4194304 more bytes were not kept]\n")


def test_a_guest_that_accepts_tcp_and_never_sends_a_banner_fails_login_at_the_deadline(tmp_path):
    _, host_public = _keypair(tmp_path, "host")
    client_key, _ = _keypair(tmp_path, "client")
    silent = socket.create_server(("127.0.0.1", 0))  # the kernel accepts; nobody ever answers
    started = time.monotonic()
    with pytest.raises(SshError, match="SSH login to 127.0.0.1:.* failed"):
        Remote(silent.getsockname()[1], host_public, client_key, timeout_s=1.0).connect()
    assert time.monotonic() - started < 10
    silent.close()


@pytest.mark.parametrize("other", ["ed25519", "rsa"])
def test_a_guest_with_another_host_key_is_refused_with_a_typed_error(tmp_path, other):
    from lab.errors import HostKeyMismatch
    host_key, _ = _keypair(tmp_path, "host")
    _, pinned = _keypair(tmp_path, "pinned") if other == "ed25519" else (None, "ssh-rsa " + paramiko.RSAKey.generate(
        1024).get_base64())
    client_key, _ = _keypair(tmp_path, "client")
    listener = socket.create_server(("127.0.0.1", 0))

    def serve():
        conn, _ = listener.accept()
        transport = paramiko.Transport(conn)
        transport.add_server_key(paramiko.Ed25519Key.from_private_key_file(str(host_key)))
        transport.start_server(server=FakeGuestSshd())
    threading.Thread(target=serve, daemon=True).start()
    with pytest.raises(HostKeyMismatch, match="host key that is not the image's pinned key"):
        Remote(listener.getsockname()[1], pinned, client_key, timeout_s=5.0).connect()
    listener.close()


def test_a_command_that_never_stops_printing_times_out_at_its_deadline(fake_guest, tmp_path):
    """Issue 27 item 4: the pump looked at the deadline only after 0.5 s without output,
    so `for (;;) printf(...)` with timeout_s = 10 was never timed out."""
    remote = fake_guest(FakeGuestSshd(output=-1))
    started = time.monotonic()
    result = remote.run(["yes"], timeout_s=2, stdout_log=tmp_path / "stdout.txt")
    assert result.timed_out and time.monotonic() - started < 8


def test_lab_shell_command_that_never_stops_printing_exits_124(fake_guest, capfd):
    from lab.shell import run_command
    remote = fake_guest(FakeGuestSshd(output=-1))
    started = time.monotonic()
    assert run_command(remote, ["yes"], timeout_s=2) == 124
    assert time.monotonic() - started < 8
    assert "lab shell: yes did not finish within 2 s" in capfd.readouterr().err


@pytest.mark.parametrize("signal_name", ["Terminated", "HungUp"])
def test_a_signal_during_login_or_push_stays_a_signal(fake_guest, tmp_path, monkeypatch, signal_name):
    """Issue 27 item 17: SIGTERM/SIGHUP during lab shell's login or push exited 2 (the SSH
    layer's `except Exception` turned the signal into an SshError), not 143/129."""
    from lab import exitcodes
    signal_class = getattr(exitcodes, signal_name)

    def signalled(*args, **kwargs):
        raise signal_class()

    remote = Remote(1, GUEST_KEY, tmp_path / "key")
    monkeypatch.setattr(remote.conn, "open", signalled)
    with pytest.raises(signal_class):
        remote.connect()
    connected = fake_guest(FakeGuestSshd())
    monkeypatch.setattr(paramiko.SFTPClient, "from_transport", signalled)
    (tmp_path / "binary").write_bytes(b"x")
    with pytest.raises(signal_class):
        connected.push(tmp_path / "binary", "/tmp/binary", "0" * 64, timeout_s=5)
    code, _ = exitcodes.for_exception(signal_class())
    assert code == {"Terminated": 143, "HungUp": 129}[signal_name]


def test_a_connection_lost_mid_command_is_an_ssh_error_for_runs_and_lab_shell_alike(fake_guest, tmp_path, capfd):
    from lab.shell import run_command
    remote = fake_guest(FakeGuestSshd(stall="drop"))
    with pytest.raises(SshError, match="the SSH connection was lost before the command finished"):
        remote.run(["test"], timeout_s=60, stdout_log=tmp_path / "stdout.txt")
    assert (tmp_path / "stdout.txt").read_text() == "started\n", "what it printed before is kept"
    remote = fake_guest(FakeGuestSshd(stall="drop"))
    with pytest.raises(SshError, match="the SSH connection was lost while test ran in the guest"):
        run_command(remote, ["test"], timeout_s=60)
    assert capfd.readouterr().out == "started\n"
