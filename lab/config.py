"""Configuration: TOML files -> validated, frozen dataclasses (their schema: lab.schema).

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
from dataclasses import dataclass
from pathlib import Path

from lab.names import RULE as NAME_RULE, is_valid as is_valid_name
from lab.errors import ERROR_CODES, ConfigError, UserError
from lab.schema import (ALLOWED_NEEDS, AptPin, Arch, BuildLimits, BuiltImage, DebianBinary, DebianSourcePackage,
                        Expectation, GUEST_SOURCE_PACKAGES, GitRef, GuestSource, KSELFTEST_NAME, KernelKind,
                        KernelSource, Lab, PARAM_TYPES, Param, Plan, SourceTarball, Testcase, VIRTIO_TRANSPORTS,
                        WorkingTree, _TYPE_NAMES)

REPO_ROOT = Path(__file__).resolve().parent.parent


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


# --- generic TOML table -> dataclass conversion -------------------------------------


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
