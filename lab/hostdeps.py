"""The Debian packages a host needs for a plan: `python3 -m lab.hostdeps` prints them.

Standard library only, so the setup script can run it before the virtualenv exists.
"""

from __future__ import annotations

import sys

from lab.config import Lab, load_lab

# Needed whatever the arches: kernel builds, guest image builds, SSH keys.
BASE_PACKAGES = (
    "make", "bc", "bison", "flex", "libelf-dev", "cpio", "xz-utils", "gzip", "dpkg-dev",
    "autoconf", "automake", "dropbear-bin", "openssh-client", "python3-venv",
)


def packages(lab: Lab) -> list[str]:
    wanted = list(BASE_PACKAGES)
    for arch in lab.arches.values():
        wanted += [arch.qemu.package, arch.toolchain.package, arch.toolchain.libc_package]
    wanted += [k.package for k in lab.kernels.values()]
    return list(dict.fromkeys(wanted))


if __name__ == "__main__":
    print(" ".join(packages(load_lab())))
    sys.exit(0)
