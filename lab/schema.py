"""The configuration's schema: frozen dataclasses for arches, kernels (a tagged union of
kinds), testcases, expectations, the plan and the lab as a whole. lab.config loads
and checks the TOML files into them; every other module reads only these.
"""

from __future__ import annotations

import dataclasses
import math
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path

from lab.errors import ERROR_CODES, UserError

def _choices(*allowed: str) -> dict:
    return {"choices": allowed}


@dataclass(frozen=True)
class KernelBuild:
    """How to build a kernel for one arch."""

    make_arch: str  # make ARCH=
    image_target: str  # make target, e.g. bzImage
    # The built image, relative to the build directory; derived when not given:
    # vmlinux for the vmlinux target, else arch/<arch_dir>/boot/<image_target>.
    image_path: str = ""
    fragment: str = ""  # arch fragment in configs/kernel/, applied after common.config; default <arch>.config
    srcarch: str = ""  # the arch/<dir> of the kernel tree when it differs from make_arch (i386 -> x86)
    # Bytes every image this arch's QEMU machine boots has, as "OFFSET:HEX" (offset in
    # hex): checked before a given image (--kernel-image) boots. Empty: not checked.
    image_magic: tuple[str, ...] = ()

    @property
    def arch_dir(self) -> str:
        return self.srcarch or self.make_arch

    def magic(self) -> list[tuple[int, bytes]]:
        """image_magic as (offset, bytes); ValueError if an entry is malformed."""
        pairs = []
        for entry in self.image_magic:
            offset, _, hexbytes = entry.partition(":")
            pairs.append((int(offset, 16), bytes.fromhex(hexbytes)))
            if not pairs[-1][1]:
                raise ValueError(f"{entry!r} has no bytes")
        return pairs

    def derived(self, arch_name: str) -> "KernelBuild":
        """With the fields the TOML may leave out filled in."""
        image_path = self.image_path or (
            "vmlinux" if self.image_target == "vmlinux" else f"arch/{self.arch_dir}/boot/{self.image_target}")
        return dataclasses.replace(self, image_path=image_path, fragment=self.fragment or f"{arch_name}.config")


@dataclass(frozen=True)
class BrokenCompiler:
    """Cross compiler builds known to miscompile this arch's kernel: no kernel is built with them."""

    versions: tuple[str, ...]  # first lines of `<triple>-gcc --version`, exactly
    reason: str  # what goes wrong and how it was shown, for the ERROR message


@dataclass(frozen=True)
class Toolchain:
    triple: str  # gcc-<triple>, CROSS_COMPILE=<triple>-
    libc_package: str  # Debian package with the static C library and headers for <triple>
    package: str = ""  # Debian package that provides <triple>-gcc; default gcc-<triple>
    # Extra ./configure arguments for the guest's sftp-server (OpenSSH), e.g. to
    # avoid a compiler bug; each with a comment in the TOML.
    openssh_configure: tuple[str, ...] = ()
    broken: BrokenCompiler | None = None


# How virtio devices reach the guest: the suffix of QEMU's device models for that
# transport, and the kernel option the arch's fragment must set for the guest to
# see them (s390's channel-attached virtio comes with the KVM guest support).
VIRTIO_TRANSPORTS = {
    "pci": ("-pci", "CONFIG_VIRTIO_PCI"),
    "mmio": ("-device", "CONFIG_VIRTIO_MMIO"),
    "ccw": ("-ccw", "CONFIG_S390_GUEST"),
}
# The module of each transport, for kernels that build it as one (Debian's). ccw has
# none: its driver comes with CONFIG_S390_GUEST, a bool, so it is always built in
# (and, not being tristate, not even listed in modules.builtin).
VIRTIO_MODULES = {"pci": ("virtio_pci",), "mmio": ("virtio_mmio",), "ccw": ()}


@dataclass(frozen=True)
class Qemu:
    binary: str
    package: str  # Debian package that provides the binary
    virtio: str = field(metadata=_choices(*VIRTIO_TRANSPORTS))  # transport of nic, rng and disk
    nic: str  # QEMU device model for the SSH network interface
    console: str  # kernel console= device
    # The serial port (0 = first) the console device is on; earlier ports stay unconnected.
    console_port: int = field(default=0, metadata={"min": 0, "max": 3})
    machine: str | None = None
    cpu: str | None = None
    bios: str | None = None
    memory_mib: int = field(default=512, metadata={"min": 32, "max": 16384})
    smp: int = field(default=1, metadata={"min": 1, "max": 64})
    rng: str | None = None  # virtio-rng device model: entropy at boot without waiting
    disk: str | None = None  # block device model for the scratch disk of testcases that need one
    append: tuple[str, ...] = ()  # extra kernel command line words
    extra_args: tuple[str, ...] = ()  # extra QEMU argv words, each with a comment in the TOML


@dataclass(frozen=True)
class Guest:
    # tinyconfig x86 has no ACPI, so `poweroff -f` does not end QEMU; `reboot -f`
    # with -no-reboot does. Each arch says what ends its QEMU.
    poweroff: tuple[str, ...] = ("poweroff", "-f")
    boot_timeout_s: float = field(default=120.0, metadata={"min": 1, "max": 3600})
    ssh_timeout_s: float = field(default=60.0, metadata={"min": 1, "max": 3600})
    blockdev: str = "/dev/vda"  # the scratch disk as the guest sees it


@dataclass(frozen=True)
class DebianKernel:
    """Debian 12's prebuilt kernel for an arch: its apt architecture and image flavour
    (linux-image-<flavour>:<arch> is the metapackage naming the current ABI package)."""

    arch: str  # e.g. i386, armhf, ppc64el
    flavour: str  # e.g. 686-pae, armmp-lpae, powerpc64le


@dataclass(frozen=True)
class Arch:
    name: str
    description: str
    kernel: KernelBuild
    toolchain: Toolchain
    qemu: Qemu
    guest: Guest = Guest()
    debian: DebianKernel | None = None  # None: Debian 12 ships no kernel for this arch


@dataclass(frozen=True)
class AptPin:
    """A Debian package pinned to a suite of apt's sources, optionally to one exact version there."""

    package: str
    suite: str | None = None  # e.g. bookworm, bookworm-security, bookworm-backports
    version: str | None = None  # exact Debian version, e.g. 1:9.2p1-2+deb12u10
    where: str = field(default="", compare=False)  # the config field it came from, for messages

    def __str__(self) -> str:
        asked = f"{self.package}={self.version}" if self.version else self.package
        return f"{asked} from {self.suite}" if self.suite else asked


# The Debian source packages the guest image (lab/images.py) is built from: each
# must be pinned in configs/lab.toml [guest_sources], so two machines with the
# same commit build the same guest and no package floats to another suite.
GUEST_SOURCE_PACKAGES = ("busybox", "dropbear", "openssh")


@dataclass(frozen=True)
class GuestSource:
    """[guest_sources.<package>] in configs/lab.toml."""

    suite: str
    version: str | None = None


# --- kernel kinds: where a kernel comes from (a tagged union; lab.kernels maps each
# kind to the one module that gets its kernel) ---------------------------------------


@dataclass(frozen=True)
class DebianSourcePackage:
    """A Debian linux-source-X package: the installed /usr/src/X.tar.xz, or with suite or
    version, that version fetched with apt-get download (not installed). Built here."""

    package: str
    suite: str | None = None
    version: str | None = None


@dataclass(frozen=True)
class SourceTarball:
    """A kernel source tarball (top directory stripped). Built here."""

    path: str


@dataclass(frozen=True)
class GitRef:
    """A commit of a local git repository, exported with git archive. Built here."""

    repo: str
    ref: str = "HEAD"


@dataclass(frozen=True)
class WorkingTree:
    """A kernel tree as it is on disk, uncommitted edits included, built incrementally
    as its owner (lab.kernel_trees): what `lab run --tree PATH` makes."""

    path: str


@dataclass(frozen=True)
class BuiltImage:
    """A built kernel image, booted as it is (`lab run --kernel-image PATH`); its sha256
    is its identity. config: its .config, checked against the fragments."""

    path: str
    config: str | None = None


@dataclass(frozen=True)
class DebianBinary:
    """Debian's prebuilt kernel from this suite (e.g. bookworm), for each arch's [debian]
    flavour: downloaded, not built (lab.debian_kernels)."""

    suite: str


KernelKind = DebianSourcePackage | SourceTarball | GitRef | WorkingTree | BuiltImage | DebianBinary
# The kinds a source archive is unpacked from and built by the lab (lab.source_kernels).
SOURCE_KINDS = (DebianSourcePackage, SourceTarball, GitRef)


@dataclass(frozen=True)
class KernelSource:
    """A kernel of the plan: its name, where it comes from (`kind`), and what the lab adds."""

    name: str
    kind: KernelKind
    # More config fragments after common and the arch's (--fragment; in the TOML,
    # relative to configs/kernel/). Part of the kernel's cache key.
    fragments: tuple[str, ...] = ()
    # Arches this kernel is in the default plan for (empty: all); --kernel overrides.
    arches: tuple[str, ...] = ()

    @property
    def apt_pin(self) -> AptPin | None:
        """The archive version a Debian source package is fetched as (suite or version given), else None."""
        kind = self.kind
        if not (isinstance(kind, DebianSourcePackage) and (kind.suite or kind.version)):
            return None
        return AptPin(kind.package, kind.suite, kind.version, where=f"configs/lab.toml: kernels.{self.name}")

    @property
    def installed_package(self) -> str | None:
        """The Debian package that must be installed on the host for this source, if any."""
        return self.kind.package if isinstance(self.kind, DebianSourcePackage) and not self.apt_pin else None


PARAM_TYPES = {"int": int, "float": float, "str": str}
_TYPE_NAMES = {str: "a string", int: "an integer", float: "a finite number", bool: "true or false"}


@dataclass(frozen=True)
class Param:
    """A testcase parameter, passed to the test as --name=value."""

    name: str
    type: str = field(metadata=_choices(*PARAM_TYPES))
    default: object = None  # checked against `type` when loaded
    description: str = ""

    def parse(self, text: str) -> int | float | str:
        """A value from the command line, checked against the declared type (numbers: finite)."""
        try:
            value = PARAM_TYPES[self.type](text)
        except ValueError:
            value = None
        if value is None or (self.type == "float" and not math.isfinite(value)):
            raise UserError(f"parameter {self.name}: {text!r} is not {_TYPE_NAMES[PARAM_TYPES[self.type]]}")
        return value


@dataclass(frozen=True)
class Testcase:
    name: str
    description: str
    source: str = ""  # our own C file, relative to testcases/; or:
    # a kselftest, "<dir>/<binary>" under tools/testing/selftests, cross-built from the
    # source of kselftest_kernel (default: the plan's newest kernel for the arch).
    kselftest: str = ""
    kselftest_kernel: str = ""
    timeout_s: float = field(default=120.0, metadata={"min": 1, "max": 86400})
    needs: tuple[str, ...] = ()
    kind: str = field(default="deterministic", metadata=_choices("deterministic", "race"))
    # A fresh guest for every repetition (--repeat), e.g. when a test leaves state behind.
    fresh_boot: bool = False
    # A kernel panic during the test is the test's finding (FAIL), not an infrastructure ERROR.
    crash_is_failure: bool = False
    params: typing.Mapping[str, Param] = field(default_factory=dict)

    def arguments(self, overrides: typing.Mapping[str, object]) -> list[str]:
        """--name=value for every parameter: the declared default unless overridden."""
        values = {name: p.default for name, p in self.params.items()}
        values.update({k: v for k, v in overrides.items() if k in self.params})
        return [f"--{name}={value}" for name, value in values.items() if value is not None]


ALLOWED_NEEDS = ("swap", "blockdev")
# What [[expect]] may declare: a test's FAIL, or an ERROR the lab knows (with its message).
EXPECTABLE_STATUSES = ("FAIL", "ERROR")
KSELFTEST_NAME = re.compile(r"[A-Za-z0-9_-]+/[A-Za-z0-9_-]+")  # never a path that leaves its directory


@dataclass(frozen=True)
class Expectation:
    """A known result: e.g. swp_exclusive FAILs on 6.1 for arches whose fix landed in 6.3,
    or a kernel that does not build for one arch (a known ERROR, told by its message)."""

    testcase: str = ""  # empty: every testcase (an ERROR of a build or boot hits them all)
    reason: str = ""  # required: why this result is expected
    status: str = field(default="FAIL", metadata=_choices(*EXPECTABLE_STATUSES))
    arches: tuple[str, ...] = ()  # empty: every arch
    kernels: tuple[str, ...] = ()  # empty: every kernel
    # A kselftest's subtests (name globs, e.g. "R/O longterm GUP pin*"): those are
    # expected to FAIL, not the cell; the cell is XFAIL when they are all it failed.
    subtests: tuple[str, ...] = ()
    # For an expected ERROR: the lab's error code (lab.errors.ERROR_CODES), and maybe a
    # regular expression the cell's message must contain (re.search) for text that is
    # not the lab's own (a compiler's or the console's line), so that a different
    # breakage is never taken for the known one.
    error: str = field(default="", metadata=_choices("", *ERROR_CODES))
    message: str = ""

    def applies(self, arch: str, kernel: str, testcase: str) -> bool:
        return ((not self.testcase or testcase == self.testcase) and (not self.arches or arch in self.arches)
                and (not self.kernels or kernel in self.kernels))

    def matches_error(self, code: str, message: str) -> bool:
        return code == self.error and (not self.message or re.search(self.message, message) is not None)


@dataclass(frozen=True)
class BuildLimits:
    """[build] in configs/lab.toml."""

    # One kernel build step (make) is killed past this: a hung build must end, and a
    # 2-core host needs up to ~10 minutes for the largest tinyconfig kernels.
    timeout_s: float = field(default=7200.0, metadata={"min": 60, "max": 86400})


@dataclass(frozen=True)
class Plan:
    arches: tuple[str, ...]
    kernels: tuple[str, ...]
    testcases: tuple[str, ...]


@dataclass(frozen=True)
class Lab:
    root: Path
    arches: typing.Mapping[str, Arch]
    kernels: typing.Mapping[str, KernelSource]
    testcases: typing.Mapping[str, Testcase]
    plan: Plan
    expectations: tuple[Expectation, ...] = ()
    guest_sources: typing.Mapping[str, AptPin] = field(default_factory=dict)  # package -> pin
    build: BuildLimits = BuildLimits()

    def with_kernel(self, source: KernelSource) -> "Lab":
        """This lab with one more kernel (a --tree or --kernel-image from the command line)."""
        return dataclasses.replace(self, kernels={**self.kernels, source.name: source})

    def expectation(self, arch: str, kernel: str, testcase: str) -> Expectation | None:
        """The cell's first known result, if any."""
        return next(iter(self.expectations_for(arch, kernel, testcase)), None)

    def expectations_for(self, arch: str, kernel: str, testcase: str) -> tuple[Expectation, ...]:
        """The cell's known results ([[expect]] without subtests), in the configs' order."""
        return tuple(e for e in self.expectations if not e.subtests and e.applies(arch, kernel, testcase))

    def subtest_expectations(self, arch: str, kernel: str, testcase: str) -> tuple[Expectation, ...]:
        """The known results of a kselftest's subtests in this cell, in the configs' order."""
        return tuple(e for e in self.expectations if e.subtests and e.applies(arch, kernel, testcase))

    @property
    def kernel_fragments_dir(self) -> Path:
        return self.root / "configs" / "kernel"

    @property
    def testcases_dir(self) -> Path:
        return self.root / "testcases"

    @property
    def images_dir(self) -> Path:
        return self.root / "images"


