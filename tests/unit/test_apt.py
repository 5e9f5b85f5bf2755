"""Pinned Debian packages: resolution from apt's lists, fetches with retries, the cache that follows the pin.

apt-cache and apt-get are fakes on PATH (tests/unit/data/fake_apt.py); the
integration tests resolve and fetch the real pins with the real apt.
"""

import time

import pytest

from lab import apt
from lab.config import load_lab
from lab.schema import AptPin
from lab.errors import ArchiveError, BuildError, ConfigError, InfraError, PinError, UserError

from conftest import REPO

OPENSSH = AptPin("openssh", "bookworm", where="configs/lab.toml: guest_sources.openssh")


def test_a_suite_pin_takes_the_newest_of_that_suite_never_another_suite(fake_apt):
    # bookworm-backports offers a newer openssh: a suite pin must not float to it.
    assert apt.resolve(OPENSSH, apt.SOURCE) == apt.Offer("openssh", "1:9.2p1-2+deb12u10", "bookworm")
    # Newest by Debian version order, not by the order apt prints.
    assert apt.resolve(AptPin("dropbear", "bookworm"), apt.SOURCE).version == "2022.83-1+deb12u3"
    # Binary and source entries are told apart.
    assert apt.resolve(AptPin("linux-source-6.12", "bookworm-backports"), apt.BINARY).version == "6.12.95-1~bpo12+1"
    with pytest.raises(PinError):
        apt.resolve(AptPin("linux-source-6.12", "bookworm-backports"), apt.SOURCE)


def test_an_exact_version_pin(fake_apt):
    pin = AptPin("dropbear", "bookworm", "2022.83-1+deb12u1", where="configs/lab.toml: guest_sources.dropbear")
    assert apt.resolve(pin, apt.SOURCE).version == "2022.83-1+deb12u1"
    gone = AptPin("dropbear", "bookworm", "2020.81-3", where="configs/lab.toml: guest_sources.dropbear")
    with pytest.raises(PinError) as exc:
        apt.resolve(gone, apt.SOURCE)
    assert str(exc.value) == (
        "configs/lab.toml: guest_sources.dropbear: dropbear 2020.81-3 from suite 'bookworm' is not in apt's lists; "
        "they offer: 2022.83-1+deb12u3 (bookworm), 2022.83-1+deb12u1 (bookworm)")


def test_a_suite_not_configured_names_the_setup_step(fake_apt):
    pin = AptPin("openssh", "bookworm-security", where="configs/lab.toml: guest_sources.openssh")
    with pytest.raises(PinError) as exc:
        apt.resolve(pin, apt.SOURCE)
    message = str(exc.value)
    assert message.startswith("configs/lab.toml: guest_sources.openssh: suite 'bookworm-security' has no deb-src "
                              "entry in apt's sources")
    assert "./just setup writes it" in message and "qemu-lab.sources" in message
    assert isinstance(exc.value, UserError), "exit 2: the user must act"


def test_fetch_asks_for_exactly_the_resolved_version(fake_apt, tmp_path):
    offer = apt.fetch(OPENSSH, apt.SOURCE, tmp_path, tmp_path / "fetch.log")
    assert offer.version == "1:9.2p1-2+deb12u10"
    assert fake_apt.calls == ["openssh=1:9.2p1-2+deb12u10"]
    assert "Acquire::Retries=0" in (tmp_path / "fetch.log").read_text(), "apt's own retries are off: ours count"


def test_transient_archive_errors_are_retried(fake_apt, tmp_path):
    fake_apt.write(fetch=["503", "503"])
    apt.fetch(OPENSSH, apt.SOURCE, tmp_path, tmp_path / "fetch.log")
    assert len(fake_apt.calls) == 3
    log = (tmp_path / "fetch.log").read_text()
    assert log.count("# transient archive error (http://mirror.example/debian/pool/main/o/openssh/"
                     "openssh_1:9.2p1-2+deb12u10.dsc: 503  Service Unavailable [IP: 192.0.2.1 80])") == 2


def test_persistent_archive_errors_are_an_infrastructure_error_naming_the_url(fake_apt, tmp_path):
    fake_apt.write(fetch=["503"] * 5)
    with pytest.raises(ArchiveError) as exc:
        apt.fetch(OPENSSH, apt.SOURCE, tmp_path, tmp_path / "fetch.log")
    assert len(fake_apt.calls) == 1 + len(apt.RETRY_PAUSES_S)
    assert isinstance(exc.value, BuildError) and isinstance(exc.value, InfraError), "a cell ERROR, not exit-2 usage"
    assert str(exc.value).startswith(
        "fetching openssh 1:9.2p1-2+deb12u10 failed 3 times, last: http://mirror.example/debian/pool/main/o/openssh/"
        "openssh_1:9.2p1-2+deb12u10.dsc: 503  Service Unavailable")


def test_a_404_is_not_retried_and_names_package_version_suite_and_offers(fake_apt, tmp_path):
    fake_apt.write(fetch=["404"])
    with pytest.raises(PinError) as exc:
        apt.fetch(OPENSSH, apt.SOURCE, tmp_path, tmp_path / "fetch.log")
    assert len(fake_apt.calls) == 1
    assert str(exc.value) == (
        "configs/lab.toml: guest_sources.openssh: the archive no longer has openssh 1:9.2p1-2+deb12u10 "
        "(pinned: openssh from bookworm; 404 for http://mirror.example/debian/pool/main/o/openssh/"
        "openssh_1:9.2p1-2+deb12u10.dsc); apt's lists offer: 1:10.0p1-7~bpo12+1 (bookworm-backports), "
        "1:9.2p1-2+deb12u10 (bookworm)")


def test_a_hanging_fetch_meets_its_deadline_and_is_retried(fake_apt, tmp_path):
    fake_apt.write(fetch=["hang"])
    started = time.monotonic()
    apt.fetch(OPENSSH, apt.SOURCE, tmp_path, tmp_path / "fetch.log", deadline_s=1.0)
    assert time.monotonic() - started < 10
    assert len(fake_apt.calls) == 2
    assert "no answer within 1 s" in (tmp_path / "fetch.log").read_text()


def test_the_source_cache_follows_the_pin(fake_apt, isolated_cache):
    first = apt.source_package(OPENSSH)
    assert (first.path / "VERSION").read_text() == "1:9.2p1-2+deb12u10\n"
    assert first.offer.version == "1:9.2p1-2+deb12u10" and first.dsc.name == "openssh_1:9.2p1-2+deb12u10.dsc"
    assert apt.source_package(OPENSSH) == first and len(fake_apt.calls) == 1, "fetched once"
    # A pin to another version fetches that version; the old one is not reused.
    older = AptPin("dropbear", "bookworm", "2022.83-1+deb12u1")
    newer = AptPin("dropbear", "bookworm")
    assert apt.source_package(older, allow_fetch=False) is None
    assert (apt.source_package(older).path / "VERSION").read_text() == "2022.83-1+deb12u1\n"
    assert apt.source_package(newer, allow_fetch=False) is None
    assert (apt.source_package(newer).path / "VERSION").read_text() == "2022.83-1+deb12u3\n"
    assert fake_apt.calls[1:] == ["dropbear=2022.83-1+deb12u1", "dropbear=2022.83-1+deb12u3"]
    # A new version in the pinned suite (after apt-get update) is fetched, not the cached older one.
    fake_apt.write(offers=[["openssh", "1:9.2p1-2+deb12u11", "bookworm", "Sources"]])
    apt.resolve.cache_clear()
    assert (apt.source_package(OPENSSH).path / "VERSION").read_text() == "1:9.2p1-2+deb12u11\n"


def test_a_fetch_of_another_version_than_asked_is_refused(fake_apt, isolated_cache):
    fake_apt.write(fetch=["wrong-version"])
    with pytest.raises(BuildError, match=r"apt-get source openssh=1:9.2p1-2\+deb12u10 fetched version 0.0-wrong"):
        apt.source_package(OPENSSH)
    assert apt.source_package(OPENSSH, allow_fetch=False) is None, "nothing was published"


def test_kernel_package_pins_fetch_the_binary_package(fake_apt, isolated_cache, tmp_path):
    from lab.kernel_sources import resolve
    kernel = load_lab(REPO).kernels["6.12-bpo"]
    resolved = resolve(kernel)
    assert resolved.identity == "deb:linux-source-6.12=6.12.95-1~bpo12+1"
    assert resolved.description == "linux-source-6.12 6.12.95-1~bpo12+1 (bookworm-backports)"
    apt.fetch(kernel.apt_pin, apt.BINARY, tmp_path, tmp_path / "fetch.log")
    assert fake_apt.calls == ["linux-source-6.12=6.12.95-1~bpo12+1"]
    assert (tmp_path / "linux-source-6.12_6.12.95-1~bpo12+1_amd64.deb").is_file()


# --- configs/lab.toml [guest_sources] ---------------------------------------------------------


def _lab_with(repo_copy, guest_sources: str):
    toml = repo_copy / "configs/lab.toml"
    text = toml.read_text()
    start = text.index("[guest_sources.busybox]")
    end = text.index("# Known results.")
    toml.write_text(text[:start] + guest_sources + "\n" + text[end:])
    return load_lab(repo_copy)


@pytest.mark.parametrize("table, message", [
    ("", "configs/lab.toml: [guest_sources] is missing: pin each of busybox, dropbear, openssh to a suite "
         "(e.g. [guest_sources.openssh] suite = \"bookworm\")"),
    ("[guest_sources]\nbusybox = {suite = \"bookworm\"}\ndropbear = {suite = \"bookworm\"}\n",
     "configs/lab.toml: guest_sources.openssh is missing: every source package of the guest image is pinned "
     "to a suite (e.g. [guest_sources.openssh] suite = \"bookworm\")"),
    ("[guest_sources]\nbusybox = {suite = \"bookworm\"}\ndropbear = {suite = \"bookworm\"}\nopenssh = {}\n",
     "configs/lab.toml: guest_sources.openssh: missing required field 'suite'"),
    ("[guest_sources]\nbusybox = {suite = \"bookworm\"}\ndropbear = {suite = \"bookworm\"}\n"
     "openssh = {suite = \"bookworm\"}\nbash = {suite = \"bookworm\"}\n",
     "configs/lab.toml: guest_sources.bash: not a package the guest image is built from "
     "(allowed: busybox, dropbear, openssh)"),
    ("[guest_sources]\nbusybox = {suite = \"bookworm\"}\ndropbear = {suite = \"bookworm\"}\n"
     "openssh = {suite = \"bookworm\\nTypes: deb\"}\n",
     "configs/lab.toml: guest_sources.openssh.suite: 'bookworm\\nTypes: deb' is not a Debian suite name "
     "(e.g. bookworm, bookworm-security)"),
    ("[guest_sources]\nbusybox = {suite = \"bookworm\"}\ndropbear = {suite = \"bookworm\", version = \"1 2\"}\n"
     "openssh = {suite = \"bookworm\"}\n",
     "configs/lab.toml: guest_sources.dropbear.version: '1 2' is not a Debian version (e.g. 1:9.2p1-2+deb12u10)"),
])
def test_unpinned_or_malformed_guest_sources_are_one_line(repo_copy, table, message):
    with pytest.raises(ConfigError) as exc:
        _lab_with(repo_copy, table)
    assert str(exc.value) == message
