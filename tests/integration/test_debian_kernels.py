"""Debian's own kernels under real QEMU: fetched from the archive (nothing built), booted
with their modules, and judged against the expectations of configs/lab.toml."""

import json

import pytest

from lab import config as cfg
from lab import debian_kernels
from lab.errors import BuildError
from lab.kernels import ensure_kernel
from conftest import run_lab

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_orphan_qemu")]


@pytest.fixture(scope="module")
def debian_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("debian") / "run"
    proc = run_lab("run", "--arch", "i386-pae,arm64", "--kernel", "debian-6.1,debian-6.12", "--test", "swp_exclusive",
                   "--out", str(out), timeout=1800)
    cells = {(c["arch"], c["kernel"]): c for c in json.loads((out / "results.json").read_text())["cells"]}
    return proc, cells


def test_debian_61_loses_the_marker_on_i386_pae_and_keeps_it_on_arm64(debian_run):
    proc, cells = debian_run
    # bookworm-backports has no i386 kernels: that pair is not planned at all.
    assert set(cells) == {("i386-pae", "debian-6.1"), ("arm64", "debian-6.1"), ("arm64", "debian-6.12")}
    assert cells["i386-pae", "debian-6.1"]["status"] == "XFAIL", cells["i386-pae", "debian-6.1"]["message"]
    assert "page was replaced during COW" in cells["i386-pae", "debian-6.1"]["message"]
    assert cells["arm64", "debian-6.1"]["status"] == "PASS"
    assert cells["arm64", "debian-6.12"]["status"] == "PASS"
    assert proc.returncode == 0, proc.stderr


def test_every_cell_names_the_package_it_booted(debian_run):
    _, cells = debian_run
    for (arch, kernel), cell in cells.items():
        facts = cell["provenance"]
        suite = "bookworm-backports" if kernel == "debian-6.12" else "bookworm"
        assert facts["debian_kernel_package"].startswith("linux-image-"), facts
        assert f"({suite}, " in facts["debian_kernel_package"], facts
        assert "zram" in facts["debian_kernel_modules"].split(), "swap needs zram, a module in Debian's kernels"
        assert facts["kernel_release"].endswith(("-686-pae", "-arm64")), facts


def test_a_flavour_the_archive_lacks_is_an_error_cell_and_the_others_run(repo_copy, tmp_path):
    toml = repo_copy / "configs/arches/i386.toml"
    toml.write_text(toml.read_text().replace('flavour = "686"', 'flavour = "686-nonexistent"'))
    out = tmp_path / "run"
    proc = run_lab("run", "--arch", "i386,i386-pae", "--kernel", "debian-6.1", "--test", "swp_exclusive",
                   "--out", str(out), root=repo_copy, timeout=900)
    cells = {c["arch"]: c for c in json.loads((out / "results.json").read_text())["cells"]}
    assert cells["i386"]["status"] == "ERROR" and cells["i386"]["error_code"] == "kernel.unavailable"
    assert "linux-image-686-nonexistent:i386 (newest) from suite 'bookworm' is not in apt's lists" in \
        cells["i386"]["message"]
    assert cells["i386-pae"]["status"] == "XFAIL", cells["i386-pae"]["message"]
    assert proc.returncode == 2, "an ERROR cell"


def test_a_module_the_package_lacks_is_named(monkeypatch):
    monkeypatch.setattr(debian_kernels, "GUEST_MODULES", ("virtio_net", "zram", "no_such_module"))
    lab = cfg.load_lab()
    with pytest.raises(BuildError, match=r"a module the guest needs is not in the package and not built in: "
                                         r"no_such_module") as missing:
        ensure_kernel(lab, lab.arches["i386-pae"], lab.kernels["debian-6.1"])
    assert missing.value.code == "kernel.missing-module"
