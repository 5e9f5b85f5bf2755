"""QEMU command lines per arch, compared with golden files.

A missing golden file is a failure, as is a difference. Writing them is explicit,
for a new arch or after an intended change, and someone reads the files before
committing them: LAB_REGEN_GOLDEN=1 pytest tests/unit/test_qemu_argv.py
"""

import os
import shlex
from pathlib import Path

import pytest

from lab.config import load_lab
from lab.qemu import QEMU_USER, qemu_argv
from conftest import REPO

LAB = load_lab(REPO)
GOLDEN = Path(__file__).parent / "golden"


def _argv(name, **kw):
    return qemu_argv(LAB.arches[name], kernel=Path("/k/image"), initrd=Path("/i/initrd.cpio.gz"),
                     ssh_port=10022, **kw)


@pytest.mark.parametrize("name", sorted(LAB.arches))
def test_argv_golden(name):
    """As a root agent runs it: confined, and dropped to QEMU_USER."""
    line = shlex.join(_argv(name, run_as=QEMU_USER)) + "\n"
    golden = GOLDEN / f"argv-{name}.txt"
    if os.environ.get("LAB_REGEN_GOLDEN"):
        golden.write_text(line)
    assert golden.is_file(), (f"no golden argv for {name}: write it with LAB_REGEN_GOLDEN=1, read it, and "
                              f"commit it if it is right")
    assert line == golden.read_text(), f"argv of {name} differs from {golden} (LAB_REGEN_GOLDEN=1 if intended)"


@pytest.mark.parametrize("name", sorted(LAB.arches))
def test_argv_invariants(name):
    argv = _argv(name)
    assert all(isinstance(a, str) and a for a in argv), "no empty or non-string arguments"
    netdev = argv[argv.index("-netdev") + 1]
    assert "hostfwd=tcp:127.0.0.1:10022-:22" in netdev, "SSH must be forwarded from loopback only"
    assert netdev.split(",")[:3] == ["user", "id=n0", "restrict=on"], "the guest reaches nothing but the forward"
    assert argv.count("-netdev") == 1 and not any(a.startswith("-nic") for a in argv)
    assert "-no-reboot" in argv
    assert "panic=-1" in argv[argv.index("-append") + 1]


@pytest.mark.parametrize("name", sorted(LAB.arches))
def test_every_guest_runs_in_the_sandbox_and_as_root_drops_to_the_lab_user(name):
    as_root, as_user = _argv(name, run_as=QEMU_USER), _argv(name)
    assert as_root[-4:] == ["-sandbox", "on,obsolete=deny,spawn=deny,resourcecontrol=deny", "-runas", QEMU_USER]
    assert as_user[-2:] == ["-sandbox", "on,obsolete=deny,spawn=deny,resourcecontrol=deny,elevateprivileges=deny"]
    assert "-runas" not in as_user


def test_accel_and_binary_are_respected():
    argv = _argv("i386-pae", accel="kvm", binary="/opt/qemu/bin/qemu-system-i386")
    assert argv[0] == "/opt/qemu/bin/qemu-system-i386"
    assert argv[argv.index("-accel") + 1] == "kvm"


@pytest.mark.parametrize("name", sorted(LAB.arches))
def test_scratch_disk_is_attached_with_the_arch_disk_model(name):
    argv = _argv(name, scratch_disk=Path("/run/x/disk.img"))
    arch = LAB.arches[name]
    assert argv[argv.index("-drive") + 1] == "file=/run/x/disk.img,if=none,format=raw,id=scratch"
    assert f"{arch.qemu.disk},drive=scratch" in argv
    assert "-drive" not in _argv(name)


def test_a_comma_in_the_scratch_disk_path_cannot_add_drive_options():
    argv = _argv("x86_64", scratch_disk=Path("/runs/a,file.locking=off,readonly=off/disk.img"))
    drive = argv[argv.index("-drive") + 1]
    assert drive == "file=/runs/a,,file.locking=off,,readonly=off/disk.img,if=none,format=raw,id=scratch"


@pytest.mark.parametrize("port", [0, 1, 2])
def test_console_on_a_later_serial_port_leaves_earlier_ports_unconnected(port):
    from dataclasses import replace
    arch = LAB.arches["x86_64"]
    arch = replace(arch, qemu=replace(arch.qemu, console_port=port))
    argv = qemu_argv(arch, kernel=Path("/k"), initrd=Path("/i"), ssh_port=1)
    serials = [argv[i + 1] for i, a in enumerate(argv) if a == "-serial"]
    assert serials == ["null"] * port + ["stdio"]


def test_setup_creates_the_user_qemu_runs_as():
    assert f"qemu_user={QEMU_USER}\n" in (REPO / "scripts/setup-host").read_text()


def test_a_root_lab_without_the_qemu_user_says_to_run_setup(monkeypatch):
    from lab import qemu
    from lab.errors import UserError
    monkeypatch.setattr(qemu, "QEMU_USER", "qemu-lab-missing-user")
    monkeypatch.setattr(qemu.os, "geteuid", lambda: 0)
    with pytest.raises(UserError, match="the user qemu-lab-missing-user, which QEMU runs as .* run ./just setup"):
        qemu.qemu_user()
    monkeypatch.setattr(qemu.os, "geteuid", lambda: 1000)
    assert qemu.qemu_user() is None
