"""Debian's prebuilt kernels: which package, which modules, in which order (lab.debian_kernels)."""

import gzip
import os
import time
from pathlib import Path

import pytest

from lab import config as cfg
from lab.debian_kernels import (LOAD_LIST, MissingModule, abi_package, apt_conf_text, apt_state, apt_state_entry,
                                load_order, module_name,
                                modules_archive, resolve_package, sources_text, wanted_modules)
from lab.errors import BuildError
from lab.plan import newest_kernel, plan_jobs

DATA = Path(__file__).parent / "data"
LAB = cfg.load_lab()


def test_wanted_modules_follow_the_virtio_transport():
    assert wanted_modules(LAB.arches["i386-pae"]) == ["virtio_pci", "virtio_net", "virtio_blk", "virtio_rng", "zram"]
    assert wanted_modules(LAB.arches["arm64"])[0] == "virtio_mmio"
    assert wanted_modules(LAB.arches["s390x"]) == ["virtio_net", "virtio_blk", "virtio_rng", "zram"]


def test_load_order_puts_every_dependency_first_as_modprobe_would():
    order = load_order((DATA / "modules.dep-6.1-686-pae").read_text(), "", wanted_modules(LAB.arches["i386-pae"]))
    assert [module_name(p) for p in order] == [
        "virtio", "virtio_ring", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio_pci",
        "failover", "net_failover", "virtio_net", "virtio_blk", "virtio_rng", "zsmalloc", "zram"]
    assert "kernel/drivers/char/hw_random/virtio-rng.ko" in order, "the file keeps its dash"
    assert not any("scsi" in p or "e1000" in p for p in order), "nothing the guest does not need"


def test_built_in_modules_need_nothing_and_absent_ones_are_named():
    dep, builtin = (DATA / "modules.dep-6.1-s390x").read_text(), (DATA / "modules.builtin-6.1-s390x").read_text()
    order = load_order(dep, builtin, ["virtio", "virtio_net", "zram"])
    assert [module_name(p) for p in order] == ["failover", "net_failover", "virtio_net", "zsmalloc", "zram"]
    with pytest.raises(MissingModule, match=r"not in the package and not built in: virtio_mmio, 9p$"):
        load_order(dep, builtin, ["virtio_net", "virtio_mmio", "9p"])


def test_module_names_as_modprobe_spells_them():
    assert module_name("kernel/drivers/char/hw_random/virtio-rng.ko.xz") == "virtio_rng"
    assert module_name("kernel/mm/zsmalloc.ko") == "zsmalloc"


def test_the_modules_archive_holds_decompressed_modules_and_the_load_list(tmp_path):
    import lzma
    release = tmp_path / "6.12.95+deb12-arm64"
    (release / "kernel/mm").mkdir(parents=True)
    (release / "kernel/mm/zsmalloc.ko.xz").write_bytes(lzma.compress(b"\x7fELF zsmalloc"))
    (release / "kernel/zram.ko").write_bytes(b"\x7fELF zram")
    archive = gzip.decompress(modules_archive(release, ["kernel/mm/zsmalloc.ko.xz", "kernel/zram.ko"]))
    assert b"\x7fELF zsmalloc" in archive and b"\x7fELF zram" in archive
    listed = ("/lib/modules/6.12.95+deb12-arm64/kernel_mm_zsmalloc.ko\n"
              "/lib/modules/6.12.95+deb12-arm64/kernel_zram.ko\n").encode()
    assert LOAD_LIST.encode() in archive and listed in archive


def test_the_abi_package_comes_from_the_metapackage_depends():
    assert abi_package("linux-image-6.1.0-50-686-pae (= 6.1.176-1)", "686-pae") == "linux-image-6.1.0-50-686-pae"
    assert abi_package("linux-image-6.12.95+deb12-armmp-lpae (= 6.12.95-1~bpo12+1)", "armmp-lpae") == \
        "linux-image-6.12.95+deb12-armmp-lpae"
    assert abi_package("linux-image-6.1.0-50-armmp (= 6.1.176-1)", "armmp-lpae") is None, "another flavour"
    assert abi_package("kmod, linux-base", "686") is None


def test_resolve_package_asks_the_suite_for_the_flavour_of_that_arch(fake_apt, tmp_path):
    meta = "linux-image-686-pae:i386"
    fake_apt.write(offers=[[meta, "6.1.176-1", "bookworm", "Packages"], [meta, "6.1.170-1", "bookworm", "Packages"],
                           ["linux-image-amd64", "6.12.95-1~bpo12+1", "bookworm-backports", "Packages"]],
                   show={f"{meta}=6.1.176-1": "Depends: linux-image-6.1.0-50-686-pae (= 6.1.176-1)",
                         "linux-image-amd64:amd64=6.12.95-1~bpo12+1":
                             "Depends: linux-image-6.12.95+deb12-amd64 (= 6.12.95-1~bpo12+1)"})
    conf = tmp_path / "apt.conf"
    got = resolve_package(LAB.kernels["debian-6.1"], LAB.arches["i386-pae"], conf)
    assert str(got) == "linux-image-6.1.0-50-686-pae 6.1.176-1 (bookworm, i386)"
    native = resolve_package(LAB.kernels["debian-6.12"], LAB.arches["x86_64"], conf)
    assert native.name == "linux-image-6.12.95+deb12-amd64", "the host's own arch is named without :amd64"
    with pytest.raises(BuildError, match=r"kernels.debian-6.12 \(configs/arches/i386-pae.toml \[debian\]\): "
                                         r"linux-image-686-pae:i386 \(newest\) from suite 'bookworm-backports' is not "
                                         r"in apt's lists; they offer: 6.1.176-1 \(bookworm\), 6.1.170-1 \(bookworm\)"):
        resolve_package(LAB.kernels["debian-6.12"], LAB.arches["i386-pae"], conf)


def test_the_own_apt_state_lives_under_its_directory_and_uses_the_hosts_mirror(tmp_path):
    conf = apt_conf_text(tmp_path, ["amd64", "armhf", "i386"])
    assert f'Dir::State::Lists "{tmp_path}/lists";' in conf and 'APT::Architectures { "amd64"; "armhf"; "i386"; };' in conf
    assert 'Dir::Etc::SourceList "/dev/null";' in conf, "the host's sources are not read"
    host = [{"Types": "deb", "URIs": "http://deb.example/debian", "Suites": "bookworm bookworm-updates",
             "Signed-By": "/k.gpg"}]
    text = sources_text(["bookworm", "bookworm-backports"], host)
    assert text.count("URIs: http://deb.example/debian") == 2 and "Suites: bookworm-backports" in text


def test_debian_kernels_pair_only_with_arches_that_have_them():
    names = {(j.arch.name, j.kernel.name) for j in plan_jobs(LAB, list(LAB.arches), ["debian-6.1", "debian-6.12"],
                                                              ["swp_exclusive"], kernels_chosen=True)}
    assert ("sparc64", "debian-6.1") not in names and ("riscv64", "debian-6.12") not in names
    assert ("i386-pae", "debian-6.1") in names and ("i386-pae", "debian-6.12") not in names, "not in backports"
    assert ("armv7-lpae", "debian-6.12") in names
    assert newest_kernel(LAB, "arm64") == "6.12", "kselftests build from a kernel source, never a Debian image"


def test_a_debian_kernel_for_an_arch_without_one_is_one_line(repo_copy):
    path = repo_copy / "configs/lab.toml"
    path.write_text(path.read_text().replace('arches = ["armv7", "armv7-lpae", "x86_64"',
                                             'arches = ["riscv64", "armv7", "armv7-lpae", "x86_64"'))
    with pytest.raises(cfg.ConfigError, match=r"kernels.debian-6.12.arches: riscv64 has no Debian kernel "
                                              r"\(no \[debian\] in configs/arches/riscv64.toml\)"):
        cfg.load_lab(repo_copy)


def test_lab_list_says_why_an_arch_has_no_debian_kernel(isolated_cache, capsys):
    from lab.cli import main
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert ("kernel debian-6.1: not planned: Debian 12 ships no kernel for sparc64 "
            "(no [debian] in configs/arches/sparc64.toml)") in out
    assert ("kernel debian-6.12: not planned: bookworm-backports has no linux-image-686-pae:i386 "
            "(configs/lab.toml kernels.debian-6.12.arches)") in out
    assert "kernel debian-6.12: Debian's linux-image-armmp-lpae:armhf from bookworm-backports, fetched at run time" in out


def test_a_moved_cache_keeps_its_fresh_lists_and_apt_reads_them_where_they_are_now(tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_CACHE", str(tmp_path / "moved"))
    entry = apt_state_entry(LAB)
    entry.path.mkdir(parents=True)
    conf = entry.path / "apt.conf"
    conf.write_text(apt_conf_text(tmp_path / "elsewhere" / entry.path.name, ["amd64"]))
    fetched = time.time() - 60
    os.utime(conf, (fetched, fetched))
    monkeypatch.setattr("lab.debian_kernels.run_logged", lambda *a, **k: pytest.fail("lists are fresh: no update"))
    assert apt_state(LAB, lambda line: None) == conf
    assert f'Dir::State::Lists "{entry.path}/lists";' in conf.read_text() and "elsewhere" not in conf.read_text()
    assert conf.stat().st_mtime == pytest.approx(fetched), "the lists' fetch time is kept"
