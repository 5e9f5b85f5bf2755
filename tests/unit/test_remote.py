"""SSH to guests, without a guest: what the connection is configured from, and deadlines."""

import paramiko

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
