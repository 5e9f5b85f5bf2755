import subprocess

import pytest

from lab.schema import GitRef, KernelSource, SourceTarball
from lab.errors import UserError
from lab.hostdeps import _one_line_entries, _stanzas, apt_sources
from lab.kernel_sources import resolve, source_tree


def _git(repo, *args):
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture
def git_tree(tmp_path):
    repo = tmp_path / "linux"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "Makefile").write_text("VERSION = 6\nPATCHLEVEL = 99\n")
    _git(repo, "add", "Makefile")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    _git(repo, "tag", "v6.99")
    (repo / "Makefile").write_text("VERSION = 6\nPATCHLEVEL = 100\n")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "two")
    return repo


def test_git_source_is_identified_by_commit_and_unpacked_at_ref(git_tree, isolated_cache):
    source = KernelSource(name="mine", kind=GitRef(str(git_tree), "v6.99"))
    commit = _git(git_tree, "rev-parse", "v6.99").strip()
    assert resolve(source).identity == f"git:{commit}"
    tree = source_tree(source, lambda _: None)
    assert (tree / "Makefile").read_text() == "VERSION = 6\nPATCHLEVEL = 99\n"
    assert source_tree(source, lambda _: None) == tree  # cached
    with pytest.raises(UserError, match="no commit 'v7.0' in git tree"):
        resolve(KernelSource(name="x", kind=GitRef(str(git_tree), "v7.0")))


def test_tarball_source_identity_is_its_sha256(tmp_path, isolated_cache):
    tarball = tmp_path / "linux.tar.xz"
    subprocess.run(["tar", "-cJf", str(tarball), "-C", str(tmp_path), "--files-from", "/dev/null"], check=True)
    identity = resolve(KernelSource(name="t", kind=SourceTarball(str(tarball)))).identity
    assert len(identity) == 64 and all(c in "0123456789abcdef" for c in identity)
    with pytest.raises(UserError, match=r"kernel t: tarball /nonexistent.tar.xz does not exist"):
        resolve(KernelSource(name="t", kind=SourceTarball("/nonexistent.tar.xz")))


DEB822 = """\
Types: deb
# a comment
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main
"""


def test_apt_sources_only_what_the_pins_name():
    """deb-src only for the guest sources' pinned suites, deb only for kernel package suites."""
    text = apt_sources(_stanzas(DEB822), {"deb-src": ["bookworm", "bookworm-security"],
                                          "deb": ["bookworm-backports"]})
    stanzas = _stanzas(text)
    assert stanzas == [
        {"Types": "deb-src", "URIs": "http://mirror.example/debian", "Suites": "bookworm",
         "Components": "main", "Signed-By": "/usr/share/keyrings/debian-archive-keyring.gpg"},
        {"Types": "deb-src", "URIs": "http://mirror.example/debian-security", "Suites": "bookworm-security",
         "Components": "main"},
        # backports lives on bookworm's mirror; binary packages only: no source floats there
        {"Types": "deb", "URIs": "http://mirror.example/debian", "Suites": "bookworm-backports",
         "Components": "main", "Signed-By": "/usr/share/keyrings/debian-archive-keyring.gpg"},
    ]
    # Nothing to add once the host has it all; nothing at all when nothing is pinned.
    assert apt_sources(_stanzas(DEB822) + stanzas, {"deb-src": ["bookworm"], "deb": ["bookworm-backports"]}) == ""
    assert apt_sources(_stanzas(DEB822), {"deb-src": [], "deb": []}) == ""


def test_the_repo_configs_want_deb_src_for_bookworm_and_deb_for_backports_only():
    from conftest import REPO
    from lab.config import load_lab
    from lab.hostdeps import wanted_entries
    assert wanted_entries(load_lab(REPO)) == {"deb-src": ["bookworm"], "deb": ["bookworm-backports"]}


def test_one_line_sources_list():
    entries = _one_line_entries("# x\ndeb http://mirror.example/debian bookworm main contrib\n"
                                "deb-src http://mirror.example/debian bookworm main\n")
    assert entries == [{"Types": "deb", "URIs": "http://mirror.example/debian", "Suites": "bookworm",
                        "Components": "main contrib"}]


def test_a_tarball_path_with_a_colon_is_a_local_file(tmp_path, isolated_cache, monkeypatch):
    (tmp_path / "src" / "linux-6.99").mkdir(parents=True)
    (tmp_path / "src" / "linux-6.99" / "Makefile").write_text("VERSION = 6\n")
    odd = tmp_path / "host:dir"  # without --force-local, tar would ask rsh for "host"
    odd.mkdir()
    subprocess.run(["tar", "-cJf", str(odd / "linux.tar.xz"), "-C", str(tmp_path / "src"), "linux-6.99"], check=True)
    monkeypatch.chdir(tmp_path)
    tree = source_tree(KernelSource(name="colon", kind=SourceTarball("host:dir/linux.tar.xz")), lambda _: None)
    assert (tree / "Makefile").read_text() == "VERSION = 6\n"


def test_a_git_source_runs_nothing_its_configuration_names(git_tree, isolated_cache, tmp_path):
    """Issue 27 item 1: git archive applies filters; the lab's reads run none of them."""
    marker = tmp_path / "ran"
    hook = tmp_path / "hook.sh"
    hook.write_text(f"#!/bin/sh\ntouch {marker}\ncat\n")
    hook.chmod(0o755)
    (git_tree / ".gitattributes").write_text("Makefile filter=evil\n")
    _git(git_tree, "add", ".gitattributes")
    _git(git_tree, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "attrs")
    for key in ("filter.evil.smudge", "filter.evil.clean", "core.fsmonitor"):
        _git(git_tree, "config", key, str(hook))
    source = KernelSource(name="mine", kind=GitRef(str(git_tree), "HEAD"))
    tree = source_tree(source, lambda _: None)
    assert (tree / "Makefile").read_text() == "VERSION = 6\nPATCHLEVEL = 100\n"
    assert not marker.exists()
