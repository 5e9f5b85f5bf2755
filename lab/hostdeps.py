"""What a host needs for the lab's configs: Debian packages and apt sources.

`python3 -m lab.hostdeps packages` prints the packages; `python3 -m lab.hostdeps
sources` prints the apt sources (deb822) to add, on the host's own mirrors: a
deb-src entry for each suite that configs/lab.toml pins a guest source package to
(busybox, dropbear, openssh), and a deb entry for each suite a kernel package is
fetched from (e.g. bookworm-backports), and nothing else, so that no package
floats to a suite nobody asked for. Standard library only: setup runs it before
the venv exists.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from lab import exitcodes
from lab.config import load_lab
from lab.schema import Lab
from lab.errors import HostSetupError, LabError

# Needed whatever the arches: kernel builds, guest image builds, SSH keys.
BASE_PACKAGES = (
    "make", "bc", "bison", "flex", "libelf-dev", "cpio", "xz-utils", "gzip", "dpkg-dev",
    "autoconf", "automake", "dropbear-bin", "openssh-client", "python3-venv", "git",
    "ccache",  # every kernel build compiles through it (lab.ccache)
    "kmod",  # depmod: the module dependencies of Debian's kernels (lab.debian_kernels)
    # matrix.html screenshots (docs/) and its test in a real browser
    "chromium",
    # The Jenkinsfile's offline check (scripts/check_jenkinsfile.py): Jenkins runs
    # pipelines on Groovy 2.4.21, the version Debian 12 ships; default-jre-headless
    # gives it the /usr/lib/jvm/default-java it looks for.
    "groovy", "default-jre-headless",
)
OWN_SOURCES = "qemu-lab"  # our own file in /etc/apt/sources.list.d/, never read back as input


def packages(lab: Lab) -> list[str]:
    wanted = list(BASE_PACKAGES)
    for arch in lab.arches.values():
        wanted += [arch.qemu.package, arch.toolchain.package, arch.toolchain.libc_package]
    wanted += [k.installed_package for k in lab.kernels.values() if k.installed_package]
    return list(dict.fromkeys(wanted))


def wanted_entries(lab: Lab) -> dict[str, list[str]]:
    """The apt entries the configs need, by type: deb-src for the suites guest sources are pinned to,
    deb for the suites kernel packages are fetched from. Nothing else: no suite floats in."""
    return {
        "deb-src": list(dict.fromkeys(p.suite for p in lab.guest_sources.values() if p.suite)),
        "deb": list(dict.fromkeys(k.apt_pin.suite for k in lab.kernels.values() if k.apt_pin and k.apt_pin.suite)),
    }


def _stanzas(text: str) -> list[dict[str, str]]:
    """deb822 stanzas (comments dropped) of a .sources file."""
    out = []
    for block in re.split(r"\n\s*\n", text):
        fields = {}
        for line in block.splitlines():
            if line.startswith("#") or ":" not in line:
                continue
            key, value = line.split(":", 1)
            fields[key.strip()] = value.strip()
        if fields:
            out.append(fields)
    return out


def _one_line_entries(text: str) -> list[dict[str, str]]:
    """The deb lines of a one-line-style sources.list, as deb822 fields."""
    out = []
    for line in text.splitlines():
        m = re.match(r"^deb\s+(\[[^\]]*\]\s+)?(\S+)\s+(\S+)\s+(.+)$", line.strip())
        if m:
            fields = {"Types": "deb", "URIs": m.group(2), "Suites": m.group(3), "Components": m.group(4)}
            if m.group(1) and (signed := re.search(r"signed-by=(\S+?)\]?\s*$", m.group(1).rstrip("] "))):
                fields["Signed-By"] = signed.group(1)
            out.append(fields)
    return out


def apt_sources(existing: list[dict[str, str]], wanted: dict[str, list[str]]) -> str:
    """deb822 text with an entry for each wanted (type, suite) the host's own entries lack.

    Each is modelled on the host's deb entry for that suite, or for its release
    (bookworm-backports lives on bookworm's mirror).
    """
    debs = [s for s in existing if "deb" in s.get("Types", "").split() and s.get("Enabled", "yes") != "no"]
    have = {(suite, t) for s in existing if s.get("Enabled", "yes") != "no"
            for suite in s.get("Suites", "").split() for t in s.get("Types", "").split()}
    out = []
    for kind, suites in wanted.items():
        for suite in suites:
            if (suite, kind) in have:
                continue
            out.append(stanza(kind, suite, mirror_of(debs, suite)))
    return "\n\n".join(out) + ("\n" if out else "")


def stanza(kind: str, suite: str, base: dict[str, str]) -> str:
    """One deb822 entry of `kind` for `suite`, on the mirror (and key) of the host's entry `base`."""
    lines = [f"Types: {kind}", f"URIs: {base['URIs']}", f"Suites: {suite}",
             f"Components: {base.get('Components', 'main')}"]
    if "Signed-By" in base:
        lines.append(f"Signed-By: {base['Signed-By']}")
    return "\n".join(lines)


def mirror_of(debs: list[dict[str, str]], suite: str) -> dict[str, str]:
    release = suite.split("-")[0]
    for wanted in (suite, release):
        for entry in debs:
            if wanted in entry.get("Suites", "").split():
                return entry
    raise HostSetupError(f"no apt entry for '{suite}' or '{release}' to model '{suite}' on "
                         f"(the host's apt sources name neither)")


def host_sources(apt_dir: Path = Path("/etc/apt")) -> list[dict[str, str]]:
    entries: list[dict[str, str]] = []
    for path in sorted((apt_dir / "sources.list.d").glob("*.sources")):
        if not path.name.startswith(OWN_SOURCES):
            entries += _stanzas(path.read_text(errors="replace"))
    lists = [apt_dir / "sources.list", *sorted((apt_dir / "sources.list.d").glob("*.list"))]
    for path in lists:
        if path.is_file() and not path.name.startswith(OWN_SOURCES):
            entries += _one_line_entries(path.read_text(errors="replace"))
    return entries


def main(argv: list[str]) -> int:
    try:
        lab = load_lab()
        if argv == ["packages"]:
            print(" ".join(packages(lab)))
        elif argv == ["sources"]:
            sys.stdout.write(apt_sources(host_sources(), wanted_entries(lab)))
        else:
            print("usage: python3 -m lab.hostdeps packages|sources", file=sys.stderr)
            return exitcodes.PROBLEM
    except LabError as exc:
        code, label = exitcodes.for_exception(exc)
        print(f"hostdeps: {label}: {exc}", file=sys.stderr)
        return code
    return exitcodes.OK


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
