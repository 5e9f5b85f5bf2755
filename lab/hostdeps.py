"""What a host needs for the lab's configs: Debian packages and apt sources.

`python3 -m lab.hostdeps packages` prints the packages; `python3 -m lab.hostdeps
sources` prints the apt sources (deb822) to add: deb-src twins of the host's own
deb entries (busybox, dropbear and openssh are built from source packages), and
entries for extra suites that kernels fetch from (e.g. bookworm-backports), on
the host's own mirrors. Standard library only: setup runs it before the venv exists.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from lab.config import Lab, load_lab

# Needed whatever the arches: kernel builds, guest image builds, SSH keys.
BASE_PACKAGES = (
    "make", "bc", "bison", "flex", "libelf-dev", "cpio", "xz-utils", "gzip", "dpkg-dev",
    "autoconf", "automake", "dropbear-bin", "openssh-client", "python3-venv", "git",
    # matrix.html screenshots (docs/) and its test in a real browser
    "chromium",
)
OWN_SOURCES = "qemu-lab"  # our own file in /etc/apt/sources.list.d/, never read back as input


def packages(lab: Lab) -> list[str]:
    wanted = list(BASE_PACKAGES)
    for arch in lab.arches.values():
        wanted += [arch.qemu.package, arch.toolchain.package, arch.toolchain.libc_package]
    wanted += [k.debian_package for k in lab.kernels.values()
               if k.debian_package and not (k.suite or k.version)]
    return list(dict.fromkeys(wanted))


def extra_suites(lab: Lab) -> list[str]:
    return list(dict.fromkeys(k.suite for k in lab.kernels.values() if k.suite))


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


def apt_sources(existing: list[dict[str, str]], suites: list[str]) -> str:
    """deb822 text with deb-src twins of `existing` deb entries and entries for `suites`."""
    debs = [s for s in existing if "deb" in s.get("Types", "").split() and s.get("Enabled", "yes") != "no"]
    have = {(suite, t) for s in existing for suite in s.get("Suites", "").split() for t in s.get("Types", "").split()}
    out = []

    def stanza(types: str, base: dict[str, str], suite_list: str) -> str:
        lines = [f"Types: {types}", f"URIs: {base['URIs']}", f"Suites: {suite_list}",
                 f"Components: {base.get('Components', 'main')}"]
        if "Signed-By" in base:
            lines.append(f"Signed-By: {base['Signed-By']}")
        return "\n".join(lines)

    for s in debs:
        missing_src = [x for x in s.get("Suites", "").split() if (x, "deb-src") not in have]
        if missing_src:
            out.append(stanza("deb-src", s, " ".join(missing_src)))
    for suite in suites:
        if (suite, "deb") in have:
            continue
        release = suite.split("-")[0]  # bookworm-backports lives beside bookworm
        base = next((s for s in debs if release in s.get("Suites", "").split()), None)
        if base is None:
            raise SystemExit(f"hostdeps: no apt entry for '{release}' to model '{suite}' on")
        out.append(stanza("deb deb-src", base, suite))
    return "\n\n".join(out) + ("\n" if out else "")


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
    lab = load_lab()
    if argv == ["packages"]:
        print(" ".join(packages(lab)))
    elif argv == ["sources"]:
        sys.stdout.write(apt_sources(host_sources(), extra_suites(lab)))
    else:
        print("usage: python3 -m lab.hostdeps packages|sources", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
