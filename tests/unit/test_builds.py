"""Pure parts of the builds: config fragments, error lines, the cpio writer."""

import gzip
import os
import shutil
import stat
import subprocess

import pytest

from lab.buildlog import first_error_line, run_logged
from lab.cpio import CpioWriter
from lab.errors import BuildError
from lab.kconfig import merge_fragments, parse_fragment, unmet_options

SPARC_612_LOG = """\
  CC      fs/fcntl.o
In file included from ./include/linux/string.h:6,
./include/linux/compiler_types.h:449:45: note: in expansion of macro '__compiletime_assert'
fs/fcntl.c: In function 'fcntl_init':
./include/linux/compiler_types.h:537:45: error: call to '__compiletime_assert_517' declared with attribute error: BUILD_BUG_ON failed: 21 - 1 != HWEIGHT32( (VALID_OPEN_FLAGS & ~(O_NONBLOCK | O_NDELAY)) | __FMODE_EXEC | __FMODE_NONOTIFY)
make[4]: *** [scripts/Makefile.build:229: fs/fcntl.o] Error 1
"""


def test_first_error_line_prefers_the_compiler():
    line = first_error_line(SPARC_612_LOG)
    assert line.startswith("./include/linux/compiler_types.h:537:45: error: call to '__compiletime_assert_517'")
    assert first_error_line("make: *** No rule to make target 'foo'.  Stop.\n") == \
        "make: *** No rule to make target 'foo'.  Stop."
    assert first_error_line("all good\n") is None


def test_run_logged_names_log_and_error(tmp_path):
    log = tmp_path / "build.log"
    run_logged(["sh", "-c", "echo 'old.c:1:1: error: from an earlier step' >&2; exit 0"], log, what="step one")
    with pytest.raises(BuildError) as exc:
        run_logged(["sh", "-c", "echo 'x.c:3:7: error: boom' >&2; exit 2"], log, what="step two")
    assert str(exc.value) == f"step two failed: x.c:3:7: error: boom (log: {log})"


def test_fragments_merge_and_check():
    wanted = parse_fragment("# comment\nCONFIG_SWAP=y\n# CONFIG_64BIT is not set\nCONFIG_NR_CPUS=4\n")
    assert wanted == {"CONFIG_SWAP": "y", "CONFIG_64BIT": "n", "CONFIG_NR_CPUS": "4"}
    base = "CONFIG_64BIT=y\n# CONFIG_SWAP is not set\nCONFIG_NR_CPUS=1\nCONFIG_OTHER=y\n"
    merged = merge_fragments(base, wanted)
    assert parse_fragment(merged) == {**wanted, "CONFIG_OTHER": "y"}
    assert unmet_options("CONFIG_SWAP=y\nCONFIG_NR_CPUS=4\n", wanted) == []
    assert unmet_options("# CONFIG_SWAP is not set\nCONFIG_64BIT=y\nCONFIG_NR_CPUS=4\n", wanted) == [
        "CONFIG_SWAP=y", "# CONFIG_64BIT is not set"]
    # An option this kernel version does not define at all is not held against it.
    assert unmet_options("CONFIG_64BIT=y\n", wanted, defined={"CONFIG_64BIT"}) == ["# CONFIG_64BIT is not set"]


@pytest.mark.skipif(not shutil.which("cpio"), reason="cpio(1) not installed")
def test_cpio_archive_is_readable_by_cpio(tmp_path):
    w = CpioWriter()
    w.directory("etc")
    w.file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
    w.file("init", b"#!/bin/sh\n", 0o755)
    w.symlink("bin/sh", "/bin/busybox")
    w.char_device("dev/console", 5, 1)
    data = gzip.decompress(w.gzipped())
    listing = subprocess.run(["cpio", "-itv"], input=data, capture_output=True, check=True).stdout.decode()
    lines = listing.splitlines()
    assert any(line.startswith("-rwxr-xr-x") and line.endswith(" init") for line in lines)
    assert any(line.startswith("crw-------") and "dev/console" in line for line in lines)
    assert any("bin/sh -> /bin/busybox" in line for line in lines)
    assert all(" root " in line for line in lines)
    with pytest.raises(ValueError):
        w2 = CpioWriter()
        w2.file("a", b"")
        w2.file("a", b"")


def test_userland_key_takes_arch_build_arguments_only_where_there_are_any(tmp_path):
    from dataclasses import replace
    from lab.config import load_lab
    from lab.images import userland_key
    from lab.hosttools import Compiler
    from conftest import REPO
    lab = load_lab(REPO)
    compiler = Compiler("i686-linux-gnu", "i686-linux-gnu-gcc", "gcc 12")
    sources = {pkg: _source_package(tmp_path, pkg, "1.0-1") for pkg in ("busybox", "dropbear", "openssh")}
    pae, plain = lab.arches["i386-pae"], lab.arches["i386"]
    assert userland_key(lab, pae, compiler, sources) == userland_key(lab, plain, compiler, sources)
    hardened_off = replace(plain, toolchain=replace(plain.toolchain, openssh_configure=("--without-hardening",)))
    assert userland_key(lab, hardened_off, compiler, sources) != userland_key(lab, plain, compiler, sources)


def _source_package(tmp_path, package, version):
    from lab.apt import Offer, SourcePackage
    where = tmp_path / f"{package}-{version}"
    (where / package).mkdir(parents=True)
    (where / f"{package}_{version}.dsc").write_text(f"Source: {package}\nVersion: {version}\n")
    return SourcePackage(Offer(package, version, "bookworm"), where / package, where / f"{package}_{version}.dsc")


def test_another_source_version_is_another_userland_and_image(tmp_path):
    """A pin that resolves to another version never reuses what the old version built."""
    from lab.config import load_lab
    from lab.images import image_key, userland_key
    from lab.hosttools import Compiler
    from conftest import REPO
    lab = load_lab(REPO)
    compiler = Compiler("i686-linux-gnu", "i686-linux-gnu-gcc", "gcc 12")
    arch = lab.arches["i386"]
    sources = {pkg: _source_package(tmp_path, pkg, "1.0-1") for pkg in ("busybox", "dropbear", "openssh")}
    older = {**sources, "dropbear": _source_package(tmp_path, "dropbear", "0.9-1")}
    assert userland_key(lab, arch, compiler, sources) != userland_key(lab, arch, compiler, older)
    assert image_key(lab, arch, compiler, sources) != image_key(lab, arch, compiler, older)


def test_a_compiler_listed_as_broken_is_named_with_its_reason_and_others_pass():
    from dataclasses import replace
    from lab.config import load_lab
    from lab.schema import BrokenCompiler
    from lab.hosttools import Compiler, known_miscompile
    from conftest import REPO
    arch = load_lab(REPO).arches["i386"]
    bad = Compiler("i686-linux-gnu", "i686-linux-gnu-gcc", "i686-linux-gnu-gcc (Debian 12.2.0-14) 12.2.0")
    good = replace(bad, version="i686-linux-gnu-gcc (Debian 12.2.0-15) 12.2.0")
    assert known_miscompile(arch, bad) is None  # nothing listed
    listed = replace(arch, toolchain=replace(arch.toolchain, broken=BrokenCompiler(
        versions=(bad.version,), reason="drops the tst of a loaded pointer")))
    assert known_miscompile(listed, bad) == (
        "i686-linux-gnu-gcc (Debian 12.2.0-14) 12.2.0 is known to miscompile i386 kernels: "
        "drops the tst of a loaded pointer")
    assert known_miscompile(listed, good) is None


def test_broken_compiler_table_is_validated(tmp_path):
    from conftest import REPO
    from lab.config import load_arch
    from lab.errors import ConfigError
    (tmp_path / "configs" / "kernel").mkdir(parents=True)
    shutil.copy(REPO / "configs" / "kernel" / "i386.config", tmp_path / "configs" / "kernel")
    text = (REPO / "configs" / "arches" / "i386.toml").read_text()
    arch_toml = tmp_path / "i386.toml"
    arch_toml.write_text(text.replace("[qemu]", '[toolchain.broken]\nversions = "gcc 12"\nreason = "x"\n\n[qemu]'))
    with pytest.raises(ConfigError, match=r"^i386.toml.toolchain.broken.versions: expected a list of strings"):
        load_arch(arch_toml, tmp_path)
    arch_toml.write_text(text.replace("[qemu]", '[toolchain.broken]\nversions = ["gcc 12"]\n\n[qemu]'))
    with pytest.raises(ConfigError, match=r"^i386.toml.toolchain.broken: missing required field 'reason'"):
        load_arch(arch_toml, tmp_path)


def test_the_client_key_and_its_directory_are_private_from_creation(isolated_cache):
    from lab.ssh import client_key
    old = os.umask(0o022)
    try:
        private, public = client_key()
    finally:
        os.umask(old)
    assert stat.S_IMODE((isolated_cache / "keys").stat().st_mode) == 0o700
    assert stat.S_IMODE(private.stat().st_mode) == 0o600 and public.startswith("ssh-ed25519 ")


def test_guest_images_holding_the_host_key_are_not_world_readable(isolated_cache, tmp_path):
    from lab.images import ImageArtifact, boot_initrd
    image = tmp_path / "initramfs.cpio.gz"
    image.write_bytes(CpioWriter().gzipped())
    image.chmod(0o644)  # as an older lab left it
    initrd = boot_initrd(ImageArtifact("x86_64", "k", image, "ssh-ed25519 AAAA", {}), "ssh-ed25519 BBBB lab")
    assert stat.S_IMODE(initrd.stat().st_mode) == 0o600


def test_a_build_directory_left_by_a_killed_build_is_removed_by_the_next_build(isolated_cache):
    from lab.cache import Entry
    dead = subprocess.Popen(["true"])
    dead.wait()
    kernels = isolated_cache / "kernels"
    abandoned = kernels / f"somekey.tmp-{dead.pid}"
    live = kernels / f"otherkey.tmp-{os.getppid()}"  # a build of a process that still runs
    for path in (abandoned / "build", live):
        path.mkdir(parents=True)
    entry = Entry("kernels", "newkey")
    with entry.lock(), entry.building() as work:
        assert work.is_dir()
    assert not abandoned.exists() and live.is_dir()
