"""lab run --kernel-image: a built image, checked against its arch's magic bytes and,
with a .config, against the fragments, before anything boots."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lab.config import load_lab
from lab.errors import BuildError, UserError
from lab.kernel_build import image_problem
from lab.kernel_images import config_beside, image_source
from lab.kconfig import fragments_for, wanted_options
from lab.kernels import ensure_kernel
from conftest import REPO

LAB = load_lab(REPO)


def _bzimage(path: Path, banner: bytes = b"") -> Path:
    """Enough of an x86 boot image for the magic check: boot flag and "HdrS"."""
    data = bytearray(0x400)
    data[0x1FE:0x200] = b"\x55\xaa"
    data[0x202:0x206] = b"HdrS"
    path.write_bytes(bytes(data) + banner)
    return path


def _config_text(arch: str, drop: str | None = None, module: str | None = None) -> str:
    """A .config with every option the fragments of `arch` set, one dropped or made a module."""
    wanted = wanted_options(fragments_for(LAB, LAB.arches[arch], LAB.kernels["6.1"]))
    lines = ["# Linux/x86 6.12.7 Kernel Configuration"]
    for sym, val in wanted.items():
        if sym == drop:
            lines.append(f"# {sym} is not set")
        elif sym == module:
            lines.append(f"{sym}=m")
        else:
            lines.append(f"# {sym} is not set" if val == "n" else f"{sym}={val}")
    return "\n".join(lines) + "\n"


def test_every_arch_of_the_plan_declares_its_image_magic():
    for name in LAB.plan.arches:
        assert LAB.arches[name].kernel.magic(), f"{name}: no kernel.image_magic"


def test_an_image_for_another_arch_is_refused_naming_the_bytes(tmp_path):
    image = _bzimage(tmp_path / "bzImage")
    assert image_problem(LAB.arches["i386-pae"], image) is None
    problem = image_problem(LAB.arches["arm64"], image)
    assert problem.startswith("not a kernel image for arm64 (virt boots Image): expected bytes 41524d64 at "
                              "offset 0x38")
    with pytest.raises(UserError, match=r"^--kernel-image .*bzImage: not a kernel image for sparc64"):
        image_source(image, LAB.arches["sparc64"], None)
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert "found end of file" in image_problem(LAB.arches["sparc64"], empty)


def test_the_config_is_found_where_builds_leave_it(tmp_path):
    build = tmp_path / "build"
    image = _bzimage((build / "arch/x86/boot").mkdir(parents=True) or build / "arch/x86/boot/bzImage")
    assert config_beside(image) is None
    (build / ".config").write_text("x\n")
    assert config_beside(image) == build / ".config"
    debian = tmp_path / "boot"
    debian.mkdir()
    vmlinuz = _bzimage(debian / "vmlinuz-6.1.0-13-686-pae")
    (debian / "config-6.1.0-13-686-pae").write_text("x\n")
    assert config_beside(vmlinuz) == debian / "config-6.1.0-13-686-pae"


def test_a_config_without_a_required_option_is_an_error_naming_it(tmp_path, isolated_cache):
    arch = LAB.arches["i386-pae"]
    image = _bzimage(tmp_path / "bzImage", banner=b"Linux version 6.12.7-dev (me@host) #1")
    config = tmp_path / "config"
    config.write_text(_config_text("i386-pae", drop="CONFIG_ZRAM", module="CONFIG_VIRTIO_NET"))
    source = image_source(image, arch, config)
    lab = LAB.with_kernel(source)
    with pytest.raises(BuildError, match=r"lacks options the lab's fragments require: CONFIG_ZRAM=y, "
                                         r"CONFIG_VIRTIO_NET=y$"):
        ensure_kernel(lab, arch, source)
    config.write_text(_config_text("i386-pae"))
    kernel = ensure_kernel(lab, arch, image_source(image, arch, config))
    assert kernel.version == "6.12.7-dev" and kernel.image.read_bytes() == image.read_bytes()
    facts = dict(kernel.provenance)
    assert facts["kernel_image"] == str(image) and len(facts["kernel_image_sha256"]) == 64
    assert source.name == f"image-{facts['kernel_image_sha256'][:12]}"


def test_an_image_without_a_config_boots_unchecked(tmp_path, isolated_cache):
    arch = LAB.arches["i386-pae"]
    source = image_source(_bzimage(tmp_path / "bzImage"), arch, None)
    kernel = ensure_kernel(LAB.with_kernel(source), arch, source)
    assert kernel.config is None and kernel.version == "unknown"
    assert dict(kernel.provenance)["kernel_config"] == "none: not checked"


@pytest.mark.parametrize("args, complaint", [
    (["--kernel-image", "I"], "--kernel-image needs exactly one --arch (got none)"),
    (["--kernel-image", "I", "--arch", "i386,x86_64"], "--kernel-image needs exactly one --arch (got i386, x86_64)"),
    (["--kernel-image", "I", "--arch", "i386", "--kernel", "6.1"],
     "--kernel and --kernel-image each say which kernel to boot: give one of them"),
    (["--kernel-config", "c"], "--kernel-config goes with --kernel-image"),
    (["--kernel-image", "/nonexistent/bzImage", "--arch", "i386"], "--kernel-image /nonexistent/bzImage: no such file"),
    (["--kernel-image", "I", "--arch", "arm64"], "--kernel-image I: not a kernel image for arm64"),
])
def test_bad_image_options_are_one_line(tmp_path, args, complaint):
    image = _bzimage(tmp_path / "bzImage")
    args = [str(image) if a == "I" else a for a in args]
    proc = subprocess.run([sys.executable, "-m", "lab", "run", "--dry-run", *args], capture_output=True,
                          text=True, cwd=REPO, timeout=60, env={**os.environ})
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("lab: error: " + complaint.replace(" I:", f" {image}:"))
    assert len(proc.stderr.strip().splitlines()) == 1


def test_dry_run_of_an_image_boots_that_file(tmp_path):
    image = _bzimage(tmp_path / "bzImage")
    proc = subprocess.run([sys.executable, "-m", "lab", "run", "--dry-run", "--kernel-image", str(image),
                           "--arch", "i386-pae", "--test", "swp_exclusive"], capture_output=True, text=True,
                          cwd=REPO, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert f"-kernel {image}" in proc.stdout and "# i386-pae/image-" in proc.stdout


@pytest.mark.parametrize("args, complaint", [
    (["--arch", "i386,x86_64"], "lab: error: lab shell needs exactly one --arch (got i386, x86_64)"),
    (["--arch", "i386", "--kernel", "6.1,6.12"], "lab: error: lab shell boots one kernel (got --kernel 6.1,6.12)"),
    (["--arch", "i386", "--console", "--", "ls"],
     "lab: error: --console attaches to the serial console: it runs no command (drop -- CMD or --console)"),
    (["--arch", "i386", "--tree", "/nonexistent"], "lab: error: --tree /nonexistent: not a kernel source tree "
                                                   "(expected Makefile, Kconfig, arch/ and mm/ at its top)"),
])
def test_bad_shell_options_are_one_line(args, complaint):
    proc = subprocess.run([sys.executable, "-m", "lab", "shell", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=60)
    assert proc.returncode == 2 and proc.stderr.strip() == complaint, proc.stderr


def test_the_wrong_magic_message_names_a_default_machine_by_its_binary(tmp_path):
    """Issue 27 item 17: it said "(None boots bzImage)" for arches on QEMU's default machine."""
    image = tmp_path / "Image"
    image.write_bytes(b"\0" * 4096)
    problem = image_problem(LAB.arches["i386-pae"], image)
    assert "(qemu-system-i386's default machine boots bzImage)" in problem and "None" not in problem


def test_a_cached_debian_kernel_is_keyed_by_the_image_magic_it_was_checked_against():
    """Item 17: a stale cached failure survived a fix of the arch's image_magic."""
    import dataclasses
    from lab.debian_kernels import DebianPackage, kernel_entry
    arch = LAB.arches["i386-pae"]
    package = DebianPackage("linux-image-6.1.0-50-686-pae", "6.1.176-1", "bookworm", "i386")
    fixed = dataclasses.replace(arch, kernel=dataclasses.replace(arch.kernel, image_magic=("0x202:48647253",)))
    assert kernel_entry(package, arch).key != kernel_entry(package, fixed).key


def test_a_kernel_image_run_can_be_resumed_and_a_changed_image_is_refused(tmp_path, isolated_cache, capsys,
                                                                           monkeypatch):
    """Issue 27 item 14: --resume of a --kernel-image (or --tree) run failed with "configs no
    longer declare it", and the option cannot be given again."""
    from lab import rundir
    from lab.cli import build_parser, main
    from lab.cmd_run import given_kernel as _given_kernel
    from lab.plan import new_plan, Request
    monkeypatch.setenv("LAB_ROOT", str(REPO))
    image = _bzimage(tmp_path / "bzImage")
    args = build_parser().parse_args(["run", "--arch", "i386-pae", "--kernel-image", str(image)])
    lab, kernel, recorded = _given_kernel(LAB, args)
    out = tmp_path / "run"
    out.mkdir()
    rundir.write(out, {**new_plan(lab, Request(arch="i386-pae", kernel=kernel)), "given_kernel": recorded})
    assert main(["run", "--resume", str(out), "--dry-run"]) == 0
    assert f"# i386-pae/{kernel}: " in capsys.readouterr().out
    image.write_bytes(image.read_bytes() + b"changed")
    assert main(["run", "--resume", str(out), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert f"the run's kernel was {kernel}; {image} is image-" in err and "(changed since): start a new run" in err


def test_run_json_given_kernel_is_checked(tmp_path, capsys, monkeypatch):
    from lab import rundir
    from lab.cli import main
    monkeypatch.setenv("LAB_ROOT", str(REPO))
    out = tmp_path / "run"
    out.mkdir()
    rundir.write(out, {"jobs": [["i386-pae", "6.1"]], "testcases": ["swp_exclusive"], "given_kernel": {"tree": 5}})
    assert main(["run", "--resume", str(out), "--dry-run"]) == 2
    assert "run.json: given_kernel: expected {tree, fragments}" in capsys.readouterr().err
