"""The configs' pins against this host's real apt lists (no network): nothing floats."""

import subprocess
from pathlib import Path

import pytest

from lab import apt
from lab.config import load_lab
from lab.hostdeps import OWN_SOURCES, apt_sources, host_sources, wanted_entries
from conftest import REPO

pytestmark = pytest.mark.integration
LAB = load_lab(REPO)


@pytest.mark.parametrize("package", sorted(LAB.guest_sources))
def test_every_guest_source_resolves_from_its_pinned_suite(package):
    pin = LAB.guest_sources[package]
    apt.resolve.cache_clear()
    offer = apt.resolve(pin, apt.SOURCE)
    assert offer.suite == pin.suite
    assert offer.version == (pin.version or offer.version)
    # apt's own choice for PKG/SUITE is the version the lab fetches (PKG=VERSION), not another suite's.
    uris = subprocess.run(["apt-get", "source", "--print-uris", "--only-source", f"{package}/{pin.suite}"],
                          capture_output=True, text=True, check=True, cwd="/tmp").stdout
    dsc = f"{package}_{offer.version.split(':', 1)[-1]}.dsc"
    assert f" {dsc} " in uris, uris


def test_kernel_package_pins_resolve_from_their_suites():
    for kernel in LAB.kernels.values():
        if kernel.apt_pin and kernel.apt_pin.suite:
            assert apt.resolve(kernel.apt_pin, apt.BINARY).suite == kernel.apt_pin.suite


def test_setup_wrote_exactly_what_the_configs_need():
    """./just setup (run before the tests) wrote the lab's apt entries: the pinned suites and no others."""
    own = Path("/etc/apt/sources.list.d") / f"{OWN_SOURCES}.sources"
    assert (own.read_text() if own.exists() else "") == apt_sources(host_sources(), wanted_entries(LAB))
