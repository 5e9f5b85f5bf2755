"""Guest images: an initramfs of busybox, dropbear and sftp-server, built from Debian sources.

The base image is cached per arch by content hash (the pinned Debian source versions,
the recipe in images/, the cross compiler). Per-lab data (the client's public
key) goes into a second, tiny cpio archive appended to it: the kernel unpacks
concatenated gzip cpio archives in order, so the base never has to be rebuilt.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from lab import atomic, procs
from lab.apt import SOURCE, Offer, SourcePackage, resolve, source_package
from lab.buildlog import jobs, run_logged
from lab.cache import Entry, Workspace, content_key, ensure, sha256_file
from lab.progress import Notify
from lab.schema import GUEST_SOURCE_PACKAGES, Arch, Lab
from lab.cpio import CpioWriter
from lab.errors import BuildError, UserError
from lab.hosttools import Compiler, compiler_for, require_tool

RECIPE_VERSION = "1"
# Inputs of the cross-built binaries, and of the (cheap) image assembly around them.
USERLAND_FILES = ("dropbear_localoptions.h",)
ASSEMBLY_FILES = ("init", "passwd", "group", "shells")
HOST_KEY_PATH = "/etc/dropbear/dropbear_ed25519_host_key"


@dataclass(frozen=True)
class ImageArtifact:
    arch: str
    key: str
    initramfs: Path
    host_key: str  # "ssh-ed25519 AAAA...": the only key the lab accepts from this guest
    sources: dict[str, str]  # source package -> "version (suite)" it was built from


Sources = dict[str, SourcePackage]  # the guest's source packages, as pinned in configs/lab.toml


def userland_key(lab: Lab, arch: Arch, compiler: Compiler, sources: Sources) -> str:
    parts = [
        RECIPE_VERSION,
        *((lab.images_dir / name).read_bytes() for name in USERLAND_FILES),
        *(sources[pkg].identity for pkg in GUEST_SOURCE_PACKAGES),
        compiler.version,
    ]
    # Arch-specific build arguments are part of the key when there are any; arches
    # without them share one userland per compiler (i386 and i386-pae).
    if arch.toolchain.openssh_configure:
        parts.append(json.dumps(list(arch.toolchain.openssh_configure)))
    return content_key(*parts)


def image_key(lab: Lab, arch: Arch, compiler: Compiler, sources: Sources) -> str:
    return content_key(userland_key(lab, arch, compiler, sources),
                       *((lab.images_dir / name).read_bytes() for name in ASSEMBLY_FILES))


def resolved_sources(lab: Lab) -> dict[str, Offer]:
    """The exact version each pinned guest source package resolves to (apt's lists only; PinError if none)."""
    return {pkg: resolve(lab.guest_sources[pkg], SOURCE) for pkg in GUEST_SOURCE_PACKAGES}


def source_states(lab: Lab) -> dict[str, Offer | UserError]:
    """Like resolved_sources, but a pin that does not resolve gives its error instead (for list/doctor)."""
    states: dict[str, Offer | UserError] = {}
    for pkg in GUEST_SOURCE_PACKAGES:
        try:
            states[pkg] = resolve(lab.guest_sources[pkg], SOURCE)
        except UserError as exc:
            states[pkg] = exc
    return states


def ensure_image(lab: Lab, arch: Arch, progress: Notify = lambda _: None) -> ImageArtifact:
    compiler = compiler_for(arch)
    require_tool("dropbearkey", "dropbear-bin")
    require_tool("make", "make")
    sources = {pkg: source_package(lab.guest_sources[pkg]) for pkg in GUEST_SOURCE_PACKAGES}
    key = image_key(lab, arch, compiler, sources)
    entry = Entry("images", key)
    # The userland is looked for (or built) only when the image itself is missing.
    ensure(entry, lambda space: _assemble(lab, arch, _ensure_userland(lab, arch, compiler, sources, progress), space))
    _private(entry.path / "initramfs.cpio.gz")
    return ImageArtifact(arch=arch.name, key=key, initramfs=entry.path / "initramfs.cpio.gz",
                         host_key=(entry.path / "host_key.pub").read_text().strip(),
                         sources={pkg: str(src.offer) for pkg, src in sources.items()})


def _ensure_userland(lab: Lab, arch: Arch, compiler: Compiler, sources: Sources,
                     progress: Notify) -> Path:
    """busybox, dropbear and sftp-server for this compiler: the slow part, cached on its own."""
    entry = Entry("userland", userland_key(lab, arch, compiler, sources))
    ensure(entry, lambda space: _build_userland(lab, arch, compiler, sources, space, progress))
    return entry.path


def _build_userland(lab: Lab, arch: Arch, compiler: Compiler, sources: Sources, space: Workspace,
                    progress: Notify) -> dict:
    log, work = space.log, space.work
    started = time.monotonic()
    progress(f"building guest userland for {arch.name} (log: {log})")
    busybox, applets = _build_busybox(sources["busybox"].path, work / "busybox", compiler, log)
    dropbear = _build_dropbear(lab, sources["dropbear"].path, work / "dropbear", compiler, log)
    sftp_server = _build_sftp_server(sources["openssh"].path, work / "openssh", compiler, log,
                                     arch.toolchain.openssh_configure)
    for binary in (busybox, dropbear, sftp_server):
        run_logged([f"{compiler.triple}-strip", str(binary)], log, what=f"strip {binary.name}")
        shutil.copy(binary, space.result / binary.name)
    (space.result / "busybox.links").write_text("\n".join(applets) + "\n")
    seconds = round(time.monotonic() - started, 1)
    progress(f"built guest userland for {arch.name} in {seconds} s")
    return {"arch": arch.name, "compiler": compiler.version, "seconds": seconds,
            "sources": {pkg: str(src.offer) for pkg, src in sources.items()}}


def _assemble(lab: Lab, arch: Arch, userland: Path, space: Workspace) -> dict:
    """The initramfs: userland binaries, init, /etc, and a host key made for this image."""
    host_key = space.work / "host_key"  # it lives on only inside the image
    run_logged(["dropbearkey", "-t", "ed25519", "-f", str(host_key)], space.log, what="dropbearkey")
    archive = CpioWriter()
    for d in ("bin", "sbin", "usr", "usr/bin", "usr/sbin", "usr/libexec", "etc", "etc/dropbear",
              "proc", "sys", "dev", "tmp", "run", "var", "var/log", "mnt"):
        archive.directory(d)
    archive.directory("root", 0o700)
    # The kernel opens /dev/console for init before devtmpfs is mounted.
    archive.char_device("dev/console", 5, 1)
    archive.file("init", (lab.images_dir / "init").read_bytes(), 0o755)
    archive.file("bin/busybox", (userland / "busybox").read_bytes(), 0o755)
    for applet in (userland / "busybox.links").read_text().split():
        if applet != "/bin/busybox":
            archive.symlink(applet, "/bin/busybox")
    archive.file("usr/sbin/dropbear", (userland / "dropbear").read_bytes(), 0o755)
    archive.file("usr/libexec/sftp-server", (userland / "sftp-server").read_bytes(), 0o755)
    for name in ("passwd", "group", "shells"):
        archive.file(f"etc/{name}", (lab.images_dir / name).read_bytes())
    archive.file(HOST_KEY_PATH, host_key.read_bytes(), 0o600)
    # It holds the guest's host private key: readable by the lab's user only.
    atomic.write_bytes(space.result / "initramfs.cpio.gz", archive.gzipped(), mode=0o600)
    (space.result / "host_key.pub").write_text(_public_key(host_key) + "\n")
    return {"arch": arch.name, "userland": userland.name}


def _public_key(private_key: Path) -> str:
    out = procs.probe(["dropbearkey", "-y", "-f", str(private_key)]).stdout
    for line in out.splitlines():
        if line.startswith("ssh-ed25519 "):
            return " ".join(line.split()[:2])
    raise BuildError(f"dropbearkey -y printed no ed25519 public key for {private_key}")


def _build_busybox(src: Path, build: Path, compiler: Compiler, log: Path) -> tuple[Path, list[str]]:
    """Busybox with Debian's own static configuration (what busybox-static ships)."""
    build.mkdir()
    config = (src / "debian/config/os/linux").read_text() + (src / "debian/config/pkg/static").read_text()
    (build / ".config").write_text(config)
    make = ["make", "-C", str(src), f"O={build}", f"CROSS_COMPILE={compiler.cross_compile}"]
    run_logged(make + ["oldconfig"], log, stdin_text="\n" * 4000, what="busybox oldconfig")
    make = ["make", "-C", str(build), f"CROSS_COMPILE={compiler.cross_compile}"]
    run_logged(make + [f"-j{jobs()}", "busybox"], log, what="busybox build")
    run_logged(make + ["busybox.links"], log, what="busybox links")
    applets = (build / "busybox.links").read_text().split()
    return build / "busybox", applets


def _autotools_tree(src: Path, build: Path) -> None:
    # These sources build in their own tree only: copy so the cached source stays pristine.
    shutil.copytree(src, build, symlinks=True)


def _build_dropbear(lab: Lab, src: Path, build: Path, compiler: Compiler, log: Path) -> Path:
    _autotools_tree(src, build)
    shutil.copy(lab.images_dir / "dropbear_localoptions.h", build / "localoptions.h")
    run_logged(["./configure", f"--host={compiler.triple}", "--enable-static", "--disable-zlib",
                "--enable-bundled-libtom", "--disable-lastlog", "--disable-utmp", "--disable-utmpx",
                "--disable-wtmp", "--disable-wtmpx", "--disable-pututline", "--disable-pututxline"],
               log, cwd=build, what="dropbear configure")
    run_logged(["make", f"-j{jobs()}", "PROGRAMS=dropbear", "STATIC=1"], log, cwd=build, what="dropbear build")
    return build / "dropbear"


def _build_sftp_server(src: Path, build: Path, compiler: Compiler, log: Path,
                       extra_configure: tuple[str, ...] = ()) -> Path:
    """OpenSSH's sftp-server only, without OpenSSL (it needs none), so Fabric's put works."""
    _autotools_tree(src, build)
    # Debian's patches touch configure.ac, and configure refuses to run when it is older.
    run_logged(["autoreconf"], log, cwd=build, what="openssh autoreconf")
    run_logged(["./configure", f"--host={compiler.triple}", "--without-openssl", "--without-zlib",
                "--without-pam", "--without-selinux", "--without-kerberos5", "--without-libedit",
                "--disable-lastlog", "--disable-utmp", "--disable-wtmp", "--with-ldflags=-static",
                *extra_configure],
               log, cwd=build, what="openssh configure")
    run_logged(["make", f"-j{jobs()}", "sftp-server"], log, cwd=build, what="sftp-server build")
    return build / "sftp-server"


def _boot_initrd_entry(image_key_: str, client_public_key: str, modules: Path | None = None) -> Entry:
    parts = [image_key_, client_public_key] + ([sha256_file(modules)] if modules else [])
    return Entry("boot-initrds", content_key(*parts))


def known_image_key(lab: Lab, arch: Arch) -> str | None:
    """The image key of `arch` without fetching or building anything; None before sources are fetched."""
    fetched = {pkg: source_package(lab.guest_sources[pkg], allow_fetch=False) for pkg in GUEST_SOURCE_PACKAGES}
    sources = {pkg: src for pkg, src in fetched.items() if src}
    return image_key(lab, arch, compiler_for(arch), sources) if len(sources) == len(fetched) else None


def planned_initrd(lab: Lab, arch: Arch, client_public_key: str) -> Path | None:
    """Where the boot initrd of `arch` is (or will be), without building; None if unknown yet."""
    key = known_image_key(lab, arch)
    return _boot_initrd_entry(key, client_public_key).path / "initrd.cpio.gz" if key else None


def built_image(lab: Lab, arch: Arch) -> Path | None:
    """The cached base image of `arch`, if built."""
    key = known_image_key(lab, arch)
    entry = Entry("images", key) if key else None
    return entry.path / "initramfs.cpio.gz" if entry and entry.meta() else None


def boot_initrd(image: ImageArtifact, client_public_key: str, modules: Path | None = None) -> Path:
    """The image plus a tiny archive that authorizes the lab's client key, and the kernel's
    modules archive when it has one (lab.debian_kernels); cached."""
    entry = _boot_initrd_entry(image.key, client_public_key, modules)

    def concatenate(space: Workspace) -> dict:
        overlay = CpioWriter()
        overlay.directory("root/.ssh", 0o700)
        overlay.file("root/.ssh/authorized_keys", (client_public_key.strip() + "\n").encode(), 0o600)
        extra = modules.read_bytes() if modules else b""
        # The image (with its host private key) and the key overlay: private.
        atomic.write_bytes(space.result / "initrd.cpio.gz", image.initramfs.read_bytes() + extra + overlay.gzipped(),
                           mode=0o600)
        return {"image": image.key, "modules": str(modules or "")}

    ensure(entry, concatenate)
    _private(entry.path / "initrd.cpio.gz")
    return entry.path / "initrd.cpio.gz"


def _private(path: Path) -> None:
    """Images hold the guest's host private key: an image cached before the lab made them
    private (0600 from creation) is made so when used."""
    if path.stat().st_mode & 0o077:
        path.chmod(0o600)
