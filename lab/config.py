"""Configuration: TOML files -> validated, frozen dataclasses.

Per-arch knowledge lives in configs/arches/<arch>.toml, kernels and the default
plan in configs/lab.toml, testcase metadata in testcases/<name>.toml. Every
problem is reported as one line naming the file and the field.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

from lab.names import RULE as NAME_RULE, is_valid as is_valid_name
from lab.errors import ERROR_CODES, ConfigError, UserError

REPO_ROOT = Path(__file__).resolve().parent.parent


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


@dataclass(frozen=True)
class _KernelTable:
    """A [kernels.NAME] table as written in configs/lab.toml: one kind's keys, and the rest."""

    debian_package: str | None = None
    suite: str | None = None
    version: str | None = None
    tarball: str | None = None
    git: str | None = None
    ref: str = "HEAD"
    tree: str | None = None
    image: str | None = None
    image_config: str | None = None
    debian_kernel: str | None = None
    fragments: tuple[str, ...] = ()
    arches: tuple[str, ...] = ()


PARAM_TYPES = {"int": int, "float": float, "str": str}


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


# --- generic TOML table -> dataclass conversion -------------------------------------

_TYPE_NAMES = {str: "a string", int: "an integer", float: "a finite number", bool: "true or false"}


def _convert(value, hint, where: str):
    """Check/convert one TOML value against a type hint; raise ConfigError naming `where`."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        return _convert(value, inner[0], where)
    if origin is tuple:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}: expected a list of strings, got {value!r}")
        return tuple(value)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {value!r}")
        return _from_table(hint, value, where)
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):  # TOML has nan and inf; a deadline of either never fires
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
        return float(value)
    if hint is int and isinstance(value, bool) or not isinstance(value, hint):
        raise ConfigError(f"{where}: expected {_TYPE_NAMES.get(hint, hint)}, got {value!r}")
    return value


def _from_table(cls, table: dict, where: str, **given):
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in given}
    unknown = sorted(set(table) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown field '{unknown[0]}' (allowed: {', '.join(fields)})")
    values = dict(given)
    for name, f in fields.items():
        key = f"{where}.{name}"
        if name not in table:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{where}: missing required field '{name}'")
            continue
        value = _convert(table[name], hints[name], key)
        choices = f.metadata.get("choices")
        if choices and value not in choices:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(choices)}")
        minimum, maximum = f.metadata.get("min"), f.metadata.get("max")
        if minimum is not None and value < minimum:
            raise ConfigError(f"{key}: {value!r} is below the minimum {minimum}")
        if maximum is not None and value > maximum:
            raise ConfigError(f"{key}: {value!r} is above the maximum {maximum}")
        values[name] = value
    return cls(**values)


def _read_toml(path: Path, root: Path) -> dict:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{_rel(path, root)}: file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{_rel(path, root)}: malformed TOML: {exc}") from None


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


# --- loading -------------------------------------------------------------------------


def _checked_name(kind: str, name: str, where: str) -> None:
    """Names become file and directory names in runs and caches: one pattern for all."""
    if not is_valid_name(name):
        raise ConfigError(f"{where}: {kind} name {name!r} is not allowed (use {NAME_RULE})")


def load_arch(path: Path, root: Path) -> Arch:
    where = _rel(path, root)
    _checked_name("arch", path.stem, where)
    arch = _from_table(Arch, _read_toml(path, root), where, name=path.stem)
    toolchain = dataclasses.replace(arch.toolchain, package=arch.toolchain.package or f"gcc-{arch.toolchain.triple}")
    arch = dataclasses.replace(arch, kernel=arch.kernel.derived(arch.name), toolchain=toolchain)
    try:
        arch.kernel.magic()
    except ValueError as exc:
        raise ConfigError(f"{where}: kernel.image_magic: {exc} (expected \"OFFSET:HEX\", e.g. \"0x38:41524d64\")")
    fragment = root / "configs" / "kernel" / arch.kernel.fragment
    if not fragment.is_file():
        raise ConfigError(f"{where}: kernel.fragment: {fragment} does not exist")
    _check_virtio(arch, where, [fragment, root / "configs" / "kernel" / "common.config"])
    return arch


def _check_virtio(arch: Arch, where: str, fragments: list[Path]) -> None:
    """nic, rng and disk use the declared transport, and the fragments enable it."""
    suffix, option = VIRTIO_TRANSPORTS[arch.qemu.virtio]
    for name in ("nic", "rng", "disk"):
        model = getattr(arch.qemu, name)
        if model and model.startswith("virtio-") and not model.split(",")[0].endswith(suffix):
            raise ConfigError(f"{where}.qemu.{name}: {model!r} is not a virtio-{arch.qemu.virtio} device "
                              f"(its model must end in {suffix!r}, as qemu.virtio = {arch.qemu.virtio!r} says)")
    lines = {line.strip() for f in fragments if f.is_file() for line in f.read_text().splitlines()}
    if f"{option}=y" not in lines:
        raise ConfigError(f"{where}.qemu.virtio: {arch.qemu.virtio!r} needs {option}=y in "
                          f"configs/kernel/{arch.kernel.fragment} (or common.config): without it the guest "
                          f"sees none of its virtio devices")


def load_testcase(path: Path, root: Path) -> Testcase:
    where = _rel(path, root)
    _checked_name("testcase", path.stem, where)
    table = _read_toml(path, root)
    params_table = table.pop("params", {})
    if not isinstance(params_table, dict):
        raise ConfigError(f"{where}.params: expected a table of parameters")
    params = {}
    for name, spec in params_table.items():
        if not isinstance(spec, dict):
            raise ConfigError(f"{where}.params.{name}: expected a table with type, default, description")
        param = _from_table(Param, spec, f"{where}.params.{name}", name=name)
        wanted = PARAM_TYPES[param.type]
        if param.default is not None and (not isinstance(param.default, wanted) or isinstance(param.default, bool)
                                          or (wanted is float and not math.isfinite(param.default))):
            raise ConfigError(f"{where}.params.{name}.default: {param.default!r} is not {_TYPE_NAMES[wanted]}")
        params[name] = param
    case = _from_table(Testcase, table, where, name=path.stem, params=params)
    bad = [n for n in case.needs if n not in ALLOWED_NEEDS]
    if bad:
        raise ConfigError(f"{where}.needs: {bad[0]!r} is not one of {', '.join(ALLOWED_NEEDS)}")
    if bool(case.source) == bool(case.kselftest):
        raise ConfigError(f"{where}: give exactly one of source (a C file) and kselftest (e.g. \"mm/cow\")")
    if case.kselftest and not KSELFTEST_NAME.fullmatch(case.kselftest):
        raise ConfigError(f"{where}.kselftest: {case.kselftest!r} is not <dir>/<binary> under "
                          f"tools/testing/selftests (letters, digits, _ and -)")
    if case.kselftest_kernel and not case.kselftest:
        raise ConfigError(f"{where}: kselftest_kernel goes with kselftest")
    if case.source and not (path.parent / case.source).is_file():
        raise ConfigError(f"{where}.source: {path.parent / case.source} does not exist")
    return case


KERNEL_KINDS = ("debian_package", "tarball", "git", "tree", "image", "debian_kernel")


def _kernel_source(name: str, table: dict, where: str, fragments_dir: Path) -> KernelSource:
    _checked_name("kernel", name, where)
    raw = _from_table(_KernelTable, table, where)
    kinds = [k for k in KERNEL_KINDS if getattr(raw, k)]
    if len(kinds) != 1:
        raise ConfigError(f"{where}: give exactly one of {', '.join(KERNEL_KINDS)} "
                          f"(got {', '.join(kinds) or 'none'})")
    fragments = tuple(str(fragments_dir / f) for f in raw.fragments)
    missing = [f for f in fragments if not Path(f).is_file()]
    if missing:
        raise ConfigError(f"{where}.fragments: {missing[0]} does not exist")
    if (raw.suite or raw.version) and not raw.debian_package:
        raise ConfigError(f"{where}: suite and version go with debian_package")
    if raw.suite and raw.version:
        raise ConfigError(f"{where}: give suite or version, not both")
    if "ref" in table and not raw.git:
        raise ConfigError(f"{where}: ref goes with git")
    if raw.image_config and not raw.image:
        raise ConfigError(f"{where}: image_config goes with image")
    kind: KernelKind = {
        "debian_package": lambda: DebianSourcePackage(raw.debian_package, raw.suite, raw.version),
        "tarball": lambda: SourceTarball(raw.tarball), "git": lambda: GitRef(raw.git, raw.ref),
        "tree": lambda: WorkingTree(raw.tree), "image": lambda: BuiltImage(raw.image, raw.image_config),
        "debian_kernel": lambda: DebianBinary(raw.debian_kernel),
    }[kinds[0]]()
    source = KernelSource(name, kind, fragments, raw.arches)
    if source.apt_pin:
        _checked_pin(dataclasses.replace(source.apt_pin, where=where))
    return source


def load_lab(root: Path | None = None) -> Lab:
    """Load every config file under `root` (default: $LAB_ROOT or the repository)."""
    root = Path(root or os.environ.get("LAB_ROOT") or REPO_ROOT)
    lab_toml = root / "configs" / "lab.toml"
    where = _rel(lab_toml, root)
    data = _read_toml(lab_toml, root)
    tables = ("plan", "kernels", "expect", "guest_sources", "build")
    unknown = sorted(set(data) - set(tables))
    if unknown:
        raise ConfigError(f"{where}: unknown table '{unknown[0]}' (allowed: {', '.join(tables)})")
    kernels_table = data.get("kernels", {})
    if not isinstance(kernels_table, dict):
        raise ConfigError(f"{where}: [kernels] must be a table of kernel names")
    kernels = {name: _kernel_source(name, table, f"{where}: kernels.{name}", root / "configs" / "kernel")
               for name, table in kernels_table.items()}
    arches = {p.stem: load_arch(p, root) for p in sorted((root / "configs" / "arches").glob("*.toml"))}
    testcases = {p.stem: load_testcase(p, root) for p in sorted((root / "testcases").glob("*.toml"))}
    plan = _from_table(Plan, data.get("plan", {}), f"{where}: plan")
    for case in testcases.values():
        if case.kselftest_kernel and case.kselftest_kernel not in kernels:
            raise ConfigError(f"testcases/{case.name}.toml.kselftest_kernel: unknown kernel {case.kselftest_kernel!r} "
                              f"(known: {', '.join(kernels)})")
    for kernel in kernels.values():
        for arch in kernel.arches:
            if arch not in arches:
                raise ConfigError(f"{where}: kernels.{kernel.name}.arches: unknown arch {arch!r} (known: {', '.join(arches)})")
            if isinstance(kernel.kind, DebianBinary) and not arches[arch].debian:
                raise ConfigError(f"{where}: kernels.{kernel.name}.arches: {arch} has no Debian kernel "
                                  f"(no [debian] in configs/arches/{arch}.toml)")
    for label, kind, names, known in (
        ("arches", "arch", plan.arches, arches),
        ("kernels", "kernel", plan.kernels, kernels),
        ("testcases", "testcase", plan.testcases, testcases),
    ):
        for name in names:
            if name not in known:
                raise ConfigError(f"{where}: plan.{label}: unknown {kind} {name!r} (known: {', '.join(known)})")
    expect_tables = data.get("expect", [])
    if not isinstance(expect_tables, list):
        raise ConfigError(f"{where}: expect must be an array of tables ([[expect]])")
    expectations = tuple(_expectation(t, f"{where}: expect[{i}]", arches, kernels, testcases)
                         for i, t in enumerate(expect_tables))
    return Lab(root=root, arches=arches, kernels=kernels, testcases=testcases, plan=plan,
               expectations=expectations, guest_sources=_guest_sources(data.get("guest_sources"), where),
               build=_convert(data.get("build", {}), BuildLimits, f"{where}: build"))


def _guest_sources(table, where: str) -> dict[str, AptPin]:
    """[guest_sources]: one pin per package of GUEST_SOURCE_PACKAGES, no more, no fewer."""
    example = 'e.g. [guest_sources.openssh] suite = "bookworm"'
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: [guest_sources] is missing: pin each of {', '.join(GUEST_SOURCE_PACKAGES)} "
                          f"to a suite ({example})")
    for name in table:
        if name not in GUEST_SOURCE_PACKAGES:
            raise ConfigError(f"{where}: guest_sources.{name}: not a package the guest image is built from "
                              f"(allowed: {', '.join(GUEST_SOURCE_PACKAGES)})")
    pins = {}
    for name in GUEST_SOURCE_PACKAGES:
        if name not in table:
            raise ConfigError(f"{where}: guest_sources.{name} is missing: every source package of the guest "
                              f"image is pinned to a suite ({example})")
        spec = _convert(table[name], GuestSource, f"{where}: guest_sources.{name}")
        pins[name] = _checked_pin(AptPin(name, spec.suite, spec.version, where=f"{where}: guest_sources.{name}"))
    return pins


# What apt calls a suite and a Debian version; anything else (spaces, newlines, '/')
# would end up in apt's sources file or on its command line as something else.
_SUITE = re.compile(r"[a-z0-9][a-z0-9.+-]*")
_DEBIAN_VERSION = re.compile(r"([0-9]+:)?[0-9][A-Za-z0-9.+~-]*")


def _checked_pin(pin: AptPin) -> AptPin:
    if pin.suite is not None and not _SUITE.fullmatch(pin.suite):
        raise ConfigError(f"{pin.where}.suite: {pin.suite!r} is not a Debian suite name (e.g. bookworm, bookworm-security)")
    if pin.version is not None and not _DEBIAN_VERSION.fullmatch(pin.version):
        raise ConfigError(f"{pin.where}.version: {pin.version!r} is not a Debian version (e.g. 1:9.2p1-2+deb12u10)")
    return pin


def _expectation(table, where: str, arches, kernels, testcases) -> Expectation:
    exp = _convert(table, Expectation, where)
    if not exp.reason.strip():
        raise ConfigError(f"{where}.reason is missing or empty: say why this result is expected")
    for label, names, known in (("testcase", [exp.testcase] if exp.testcase else [], testcases),
                                ("arches", exp.arches, arches), ("kernels", exp.kernels, kernels)):
        for name in names:
            if name not in known:
                raise ConfigError(f"{where}.{label}: unknown name {name!r} (known: {', '.join(known)})")
    if exp.status == "FAIL" and not exp.testcase:
        raise ConfigError(f"{where}.testcase is missing: a FAIL is one testcase's finding (known: {', '.join(testcases)})")
    if exp.subtests and not testcases[exp.testcase].kselftest:
        raise ConfigError(f"{where}.subtests: {exp.testcase!r} is not a kselftest; only a kselftest has subtests")
    for glob in exp.subtests:
        if not glob.strip() or len(glob) > 300:
            raise ConfigError(f"{where}.subtests: {glob[:40]!r} is not a subtest name glob (1-300 characters)")
    _check_message_pattern(exp, where)
    return exp


def _check_message_pattern(exp: Expectation, where: str) -> None:
    """An expected ERROR names its code, and maybe a pattern of its message; only an ERROR has them."""
    if exp.status != "ERROR":
        for name in ("error", "message"):
            if getattr(exp, name):
                raise ConfigError(f"{where}.{name}: only an expected ERROR has one (status = \"ERROR\")")
        return
    if exp.subtests:
        raise ConfigError(f"{where}.subtests: an ERROR is the whole cell's; subtests are expected to FAIL")
    if not exp.error:
        raise ConfigError(f"{where}.error is missing: an expected ERROR names the lab's error code, one of "
                          f"{', '.join(ERROR_CODES)} (and, if need be, message = a regular expression of text "
                          f"that is not the lab's, e.g. the compiler's line)")
    if len(exp.message) > 300 or (exp.message and not exp.message.strip()):
        raise ConfigError(f"{where}.message: a regular expression of 1-300 characters its message must contain, "
                          f"e.g. message = \"BUILD_BUG_ON failed\"")
    try:
        re.compile(exp.message)
    except re.error as exc:
        raise ConfigError(f"{where}.message: {exp.message[:60]!r} is not a regular expression ({exc})") from None


def param_overrides(cases: list[Testcase], assignments: list[str]) -> dict[str, dict[str, object]]:
    """--param name=value assignments, parsed per testcase that declares `name`.

    A name no selected testcase declares, or a value of the wrong type, is a UserError.
    """
    overrides: dict[str, dict[str, object]] = {case.name: {} for case in cases}
    for assignment in assignments:
        name, sep, text = assignment.partition("=")
        if not sep or not name:
            raise UserError(f"--param {assignment!r}: expected name=value")
        declaring = [case for case in cases if name in case.params]
        if not declaring:
            known = sorted({p for case in cases for p in case.params})
            raise UserError(f"--param {name}: no selected testcase has this parameter "
                            f"(known: {', '.join(known) or 'none'})")
        for case in declaring:
            overrides[case.name][name] = case.params[name].parse(text)
    return overrides


def pick(kind: str, requested: str | None, known: typing.Mapping, default: tuple[str, ...]) -> list[str]:
    """Resolve a comma-separated --arch/--kernel/--test value against what is declared."""
    if not requested:
        return list(default)
    names = [n.strip() for n in requested.split(",") if n.strip()]
    for name in names:
        if name not in known:
            raise UserError(f"unknown {kind} {name!r} (known: {', '.join(known)})")
    return list(dict.fromkeys(names))  # each once, in the order given: a repeat is not a second job
