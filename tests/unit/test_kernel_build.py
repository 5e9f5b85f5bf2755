"""ensure_kernel() against a fake kernel source tree (a Makefile that acts like Kbuild)."""

import dataclasses
import tarfile

import pytest

from lab.config import load_lab
from lab.schema import SourceTarball
from lab.errors import BuildError
from lab.kernels import ensure_kernel
from conftest import REPO

MAKEFILE = """\
tinyconfig:
\tprintf 'CONFIG_64BIT=y\\nCONFIG_SWAP=n\\n' > $(O)/.config
olddefconfig:
\t@if [ -e $(CURDIR)/DROP ]; then sed -i '/^CONFIG_TMPFS=y/d' $(O)/.config; fi
bzImage:
\techo bzImage >> $$LAB_FAKE_CALLS
\t@if [ -e $(CURDIR)/FAIL ]; then echo '  CC      fs/fcntl.o'; \\
\t  echo 'fs/fcntl.c:1033:9: error: BUILD_BUG_ON failed: 21 - 1 != HWEIGHT32(...)' >&2; \\
\t  echo 'make[2]: *** [fs/fcntl.o] Error 1'; exit 2; fi
\tmkdir -p $(O)/arch/x86/boot $(O)/include/config
\techo kernel > $(O)/arch/x86/boot/bzImage
\techo 6.1.999-fake > $(O)/include/config/kernel.release
"""


@pytest.fixture
def fake_kernel(tmp_path, isolated_cache, fake_i686_gcc, monkeypatch):
    monkeypatch.setenv("LAB_FAKE_CALLS", str(tmp_path / "calls"))

    def make_tarball(name, marker):
        tree = tmp_path / f"src-{name}" / "linux"
        tree.mkdir(parents=True)
        (tree / "Makefile").write_text(MAKEFILE)
        (tree / "Kconfig").write_text("config TMPFS\n\tbool\n\nmenuconfig SWAP\n\tbool \"swap\"\n")
        if marker:
            (tree / marker).write_text("")
        tarball = tmp_path / f"{name}.tar.xz"
        with tarfile.open(tarball, "w:xz") as tar:
            tar.add(tree, arcname="linux-source")
        return tarball

    lab = load_lab(REPO)
    arch = lab.arches["i386-pae"]

    def source(name, marker=None):
        return dataclasses.replace(lab.kernels["6.1"], name=name, kind=SourceTarball(str(make_tarball(name, marker))))

    return lab, arch, source, tmp_path / "calls"


def _image_builds(calls):
    return len(calls.read_text().split()) if calls.exists() else 0


def test_build_then_cache_hit(fake_kernel):
    lab, arch, source, calls = fake_kernel
    src = source("good")
    art = ensure_kernel(lab, arch, src)
    assert art.image.read_text() == "kernel\n"
    assert art.version == "6.1.999-fake"
    assert "CONFIG_SWAP=y" in art.config.read_text()  # fragments merged over tinyconfig
    mtime = art.image.stat().st_mtime_ns
    again = ensure_kernel(lab, arch, src)
    assert again.image == art.image and again.image.stat().st_mtime_ns == mtime
    assert _image_builds(calls) == 1


def test_compiler_error_is_reported_and_cached(fake_kernel):
    lab, arch, source, calls = fake_kernel
    src = source("bad", "FAIL")
    with pytest.raises(BuildError) as first:
        ensure_kernel(lab, arch, src)
    message = str(first.value)
    assert "fs/fcntl.c:1033:9: error: BUILD_BUG_ON failed" in message
    assert "build.log" in message
    log = message.rsplit("(log: ", 1)[1].rstrip(")")
    assert "BUILD_BUG_ON failed" in open(log).read()
    # Same inputs, same failure: the second call answers from the cache, without make.
    with pytest.raises(BuildError) as second:
        ensure_kernel(lab, arch, src)
    assert str(second.value) == message
    assert _image_builds(calls) == 1


def test_unmet_fragment_option_is_an_error_and_not_cached(fake_kernel):
    lab, arch, source, calls = fake_kernel
    src = source("unmet", "DROP")  # olddefconfig drops CONFIG_TMPFS, as a missing dependency would
    for _ in range(2):
        with pytest.raises(BuildError, match=r"config options did not take effect .*: CONFIG_TMPFS=y"):
            ensure_kernel(lab, arch, src)
    assert _image_builds(calls) == 0
