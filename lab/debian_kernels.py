"""Debian's own kernels (`debian_kernel = SUITE` in configs/lab.toml): fetched, never built.

For each arch's [debian] flavour, the metapackage linux-image-<flavour>:<arch> in
the suite names the current ABI package (linux-image-6.1.0-NN-<flavour>). That one
.deb is downloaded (nothing else: no dependencies, nothing installed) with apt's
own client, through an apt state of the lab's own under the cache: the host's apt
knows only its own architecture, and dpkg's list of foreign ones is not touched.

Debian builds virtio, zram and their helpers as modules. The modules the guest
needs (GUEST_MODULES and the arch's virtio transport), with everything they
depend on by the package's modules.dep (made with the host's depmod), go into an
extra initramfs archive, with a list in load order the guest init reads. The
kernel image, its config and that archive are cached by package and version.

The module of the DebianBinary kind (lab.kernels): entry, ensure, planned_image,
describe, listing, kept, resolve.
"""

from __future__ import annotations

import gzip
import lzma
import os
import time
from dataclasses import dataclass
from pathlib import Path

from lab import apt, hostdeps, safe_read
from lab.buildlog import run_logged
from lab.cache import Entry, Workspace, content_key, ensure as ensure_entry
from lab.schema import VIRTIO_MODULES, AptPin, Arch, DebianBinary, KernelSource, Lab
from lab.cpio import CpioWriter
from lab.errors import ERROR_CODES, BuildError, LabError, PinError
from lab.hosttools import require_tool
from lab.kernel_build import KernelArtifact, image_problem
from lab.kernel_sources import ResolvedSource
from lab.plan import debian_kernel_missing
from lab.progress import Notify

# What the guest uses that Debian builds as modules: the network SSH runs over, the
# scratch disk (O_DIRECT testcases), entropy at boot (dropbear), and swap on zram.
GUEST_MODULES = ("virtio_net", "virtio_blk", "virtio_rng", "zram")
# Where the guest init finds the modules to load, one path per line, dependencies first.
LOAD_LIST = "etc/lab-modules"
# apt's lists are refreshed when older than this: "the current ABI package" moves
# with each point release, a few times a year.
LISTS_MAX_AGE_S = 12 * 3600
LISTS_DEADLINE_S = 600.0
MAX_APT_CONF_BYTES = 64 * 1024


class MissingModule(BuildError):
    """A module the guest needs is neither in the package nor built into the kernel."""

    code = "kernel.missing-module"


@dataclass(frozen=True)
class DebianPackage:
    """The kernel package a flavour's metapackage names in a suite."""

    name: str  # e.g. linux-image-6.1.0-50-686-pae
    version: str  # e.g. 6.1.176-1
    suite: str
    arch: str  # Debian's architecture name

    def __str__(self) -> str:
        return f"{self.name} {self.version} ({self.suite}, {self.arch})"


# --- the lab's own apt state --------------------------------------------------------------


def apt_conf_text(state: Path, debian_arches: list[str]) -> str:
    """An apt.conf whose lists, caches and sources all live under `state`."""
    archs = " ".join(f'"{a}";' for a in debian_arches)
    return "\n".join([
        f'Dir::State "{state}";', f'Dir::State::Lists "{state}/lists";', f'Dir::State::status "{state}/status";',
        f'Dir::Cache "{state}/cache";', 'Dir::Etc::SourceList "/dev/null";',
        f'Dir::Etc::SourceParts "{state}/sources.list.d";', f'Dir::Etc::Preferences "{state}/preferences";',
        f'Dir::Etc::PreferencesParts "{state}/preferences.d";', f'APT::Architecture "{debian_arches[0]}";',
        f"APT::Architectures {{ {archs} }};", 'Acquire::Languages "none";', ""])


def sources_text(suites: list[str], host_entries: list[dict[str, str]]) -> str:
    """deb822 deb entries for the suites, each on the host's mirror for it (or for its release)."""
    return "\n\n".join(hostdeps.stanza(apt.BINARY, s, hostdeps.mirror_of(host_entries, s)) for s in suites) + "\n"


def _apt_state_inputs(lab: Lab) -> tuple[list[str], list[str], str]:
    """The suites, Debian architectures and sources text of the lab's own apt state."""
    suites = sorted({k.kind.suite for k in lab.kernels.values() if isinstance(k.kind, DebianBinary)})
    arches = sorted({a.debian.arch for a in lab.arches.values() if a.debian})
    host_debs = [s for s in hostdeps.host_sources() if "deb" in s.get("Types", "").split()]
    return suites, arches, sources_text(suites, host_debs)


def apt_state_entry(lab: Lab) -> Entry:
    """The cache entry of the lab's own apt state (not published: its lists are refreshed)."""
    _, arches, sources = _apt_state_inputs(lab)
    return Entry("debian-apt", content_key(sources, *arches))


def kernel_entry(package: DebianPackage, arch: Arch) -> Entry:
    """Keyed by everything the entry's outcome depends on: a failure cached under it (the
    image's magic did not match) goes away when the arch's image_magic is fixed."""
    return Entry("debian-kernels", content_key(package.name, package.version, package.arch, *wanted_modules(arch),
                                               *arch.kernel.image_magic))


def apt_state(lab: Lab, progress: Notify) -> Path:
    """The apt.conf of the lab's own apt state for Debian kernels, its lists fresh."""
    suites, arches, sources = _apt_state_inputs(lab)
    entry = apt_state_entry(lab)
    state, conf = entry.path, entry.path / "apt.conf"
    entry.hold()
    with entry.lock():  # whoever holds it is bounded by apt-get's deadline
        if conf.is_file() and time.time() - conf.stat().st_mtime < LISTS_MAX_AGE_S:
            _point_at(conf, apt_conf_text(state, arches))
            return conf
        for sub in ("lists/partial", "cache/archives/partial", "sources.list.d", "preferences.d"):
            (state / sub).mkdir(parents=True, exist_ok=True)
        (state / "status").touch()
        (state / "update.log").write_text("")
        (state / "sources.list.d" / "debian-kernels.sources").write_text(sources)
        draft = state / "apt.conf.new"
        draft.write_text(apt_conf_text(state, arches))
        progress(f"updating Debian's package lists for {', '.join(arches)} ({', '.join(suites)})")
        run_logged(["apt-get", *apt.APT_OPTIONS, "update"], state / "update.log", env={"APT_CONFIG": str(draft)},
                   what="apt-get update of the Debian kernel lists", timeout_s=LISTS_DEADLINE_S)
        draft.replace(conf)  # its mtime says when the lists were fetched
    return conf


def _point_at(conf: Path, text: str) -> None:
    """Rewrite `conf` to name its own directory when it names another: a cache copied or
    moved whole (LAB_CACHE elsewhere, an agent seeded from another) keeps its fresh lists,
    but apt would otherwise read the old location's, or none. Keeps the fetch time."""
    if safe_read.read_text(conf, MAX_APT_CONF_BYTES, BuildError) == text:
        return
    fetched = conf.stat().st_mtime
    draft = conf.with_name("apt.conf.new")
    draft.write_text(text)
    os.utime(draft, (fetched, fetched))
    draft.replace(conf)


# --- which package ---------------------------------------------------------------------------


def resolve_package(source: KernelSource, arch: Arch, apt_config: Path) -> DebianPackage:
    """The ABI package the arch's flavour metapackage depends on in the source's suite."""
    darch, flavour = arch.debian.arch, arch.debian.flavour
    where = f"configs/lab.toml: kernels.{source.name} (configs/arches/{arch.name}.toml [debian])"
    try:
        meta = apt.resolve(AptPin(f"linux-image-{flavour}:{darch}", _suite(source), where=where),
                           apt.BINARY, apt_config)
    except PinError as exc:  # this arch's cells are ERROR; the others run
        raise BuildError(str(exc), code="kernel.unavailable") from None
    shown = apt.show_field(f"linux-image-{flavour}:{darch}={meta.version}", "Depends", apt_config)
    name = abi_package(shown, flavour)
    if not name:
        raise BuildError(f"{where}: linux-image-{flavour} {meta.version} depends on no linux-image package "
                         f"(Depends: {shown or 'none'})")
    return DebianPackage(name, meta.version, meta.suite, darch)


def abi_package(depends: str, flavour: str) -> str | None:
    """The linux-image-<release>-<flavour> package in a metapackage's Depends field."""
    for alternative in depends.split(","):
        name = alternative.split("|")[0].split("(")[0].strip()
        if name.startswith("linux-image-") and name.endswith(f"-{flavour}") and name != f"linux-image-{flavour}":
            return name
    return None


# --- modules ---------------------------------------------------------------------------------


def module_name(path: str) -> str:
    """kernel/drivers/char/hw_random/virtio-rng.ko.xz -> virtio_rng (as modprobe names it)."""
    base = path.rsplit("/", 1)[-1]
    for suffix in (".xz", ".zst", ".gz"):
        base = base.removesuffix(suffix)
    return base.removesuffix(".ko").replace("-", "_")


def parse_modules_dep(text: str) -> dict[str, tuple[str, list[str]]]:
    """modules.dep: module name -> (its path, the paths it depends on)."""
    table = {}
    for line in text.splitlines():
        path, sep, deps = line.partition(":")
        if sep and not line.startswith("#"):
            table[module_name(path.strip())] = (path.strip(), deps.split())
    return table


def load_order(modules_dep: str, builtin: str, wanted: list[str]) -> list[str]:
    """The module paths to load for `wanted`, each after what it depends on; modules built into
    the kernel (modules.builtin) need nothing. MissingModule names any that exist neither way."""
    table = parse_modules_dep(modules_dep)
    by_path = {path: name for name, (path, _) in table.items()}
    built_in = {module_name(line.strip()) for line in builtin.splitlines() if line.strip() and line[0] != "#"}
    missing = [m for m in wanted if m not in table and m not in built_in]
    if missing:
        raise MissingModule(f"not in the package and not built in: {', '.join(missing)}")
    order: list[str] = []

    def visit(name: str) -> None:
        path, deps = table[name]
        if path in order:
            return
        for dep in reversed(deps):  # modprobe's order: modules.dep lists the last to load first
            visit(by_path.get(dep, module_name(dep)))
        order.append(path)

    for name in wanted:
        if name in table:
            visit(name)
    return order


def modules_archive(modules_root: Path, order: list[str]) -> bytes:
    """An initramfs archive (gzip'ed newc cpio) of the modules, decompressed, and the load list."""
    archive = CpioWriter()
    release = modules_root.name
    archive.directory("lib", 0o755)
    archive.directory("lib/modules", 0o755)
    archive.directory(f"lib/modules/{release}", 0o755)
    listed = []
    for path in order:
        data = (modules_root / path).read_bytes()
        if path.endswith(".xz"):
            data, path = lzma.decompress(data), path.removesuffix(".xz")
        elif path.endswith(".gz"):
            data, path = gzip.decompress(data), path.removesuffix(".gz")
        flat = f"lib/modules/{release}/{path.replace('/', '_')}"
        archive.file(flat, data, 0o644)
        listed.append("/" + flat)
    archive.file(LOAD_LIST, ("\n".join(listed) + "\n").encode(), 0o644)
    return archive.gzipped()


# --- the kernel ------------------------------------------------------------------------------


def wanted_modules(arch: Arch) -> list[str]:
    """The modules the guest needs on this arch: its virtio transport first, then GUEST_MODULES."""
    return [*VIRTIO_MODULES[arch.qemu.virtio], *GUEST_MODULES]


def _suite(source: KernelSource) -> str:
    assert isinstance(source.kind, DebianBinary), source
    return source.kind.suite


def entry(lab: Lab, arch: Arch, source: KernelSource) -> None:
    """No entry is known before the archive is asked which package is current."""
    return None


def ensure(lab: Lab, arch: Arch, source: KernelSource, progress: Notify) -> KernelArtifact:
    """Debian's kernel of the source's suite for `arch`: fetched once, cached by package and version.
    BuildError (every cell of the job ERROR) when it cannot be fetched or lacks a needed module."""
    if not arch.debian:
        raise BuildError(f"kernel {source.name}: Debian 12 ships no kernel for {arch.name} "
                         f"(no [debian] in configs/arches/{arch.name}.toml)", code="kernel.unavailable")
    require_tool("dpkg-deb", "dpkg")
    require_tool("depmod", "kmod")
    conf = apt_state(lab, progress)
    package = resolve_package(source, arch, conf)
    modules = wanted_modules(arch)
    entry = kernel_entry(package, arch)
    # A failure cached before error codes were recorded is fetched again, to learn its code.
    meta = ensure_entry(entry, lambda space: _fetch(arch, package, modules, conf, space, progress), log_name="fetch.log",
                  current=lambda meta: meta.get("ok") or meta.get("code") in ERROR_CODES)
    if not meta["ok"]:
        raise BuildError(f"kernel {source.name} for {arch.name}: {package}: {meta['error']} "
                         f"(log: {entry.path / 'fetch.log'})", code=meta["code"])
    facts = (("debian_kernel_package", str(package)), ("debian_kernel_modules", " ".join(meta["modules"])))
    return KernelArtifact(arch=arch.name, kernel=source.name, key=entry.key, image=entry.path / "image",
                          config=entry.path / "config", version=meta["version"], provenance=facts,
                          modules=entry.path / "modules.cpio.gz")


def _fetch(arch: Arch, package: DebianPackage, modules: list[str], conf: Path, space: Workspace,
           progress: Notify) -> dict:
    """Download and unpack the package; keep its image, config and the guest's modules archive."""
    progress(f"fetching {package} for {arch.name}")
    debs, root = space.work / "deb", space.work / "root"
    debs.mkdir()
    pin = AptPin(f"{package.name}:{package.arch}", version=package.version, where=str(package))
    apt.fetch(pin, apt.BINARY, debs, space.log, apt_config=conf)
    (deb,) = debs.glob("*.deb")
    run_logged(["dpkg-deb", "-x", str(deb), str(root)], space.log, what=f"unpacking {deb.name}")
    images = sorted((root / "boot").glob("vmlinu[xz]-*"))
    releases = sorted(p for p in (root / "lib" / "modules").glob("*") if p.is_dir())
    if len(images) != 1 or len(releases) != 1:
        return {"ok": False, "code": "kernel.bad-image",
                "error": f"expected one boot/vmlinu[xz]-* and one lib/modules/<release>, found "
                         f"{[p.name for p in images]} and {[p.name for p in releases]}"}
    image, release = images[0], releases[0]
    if problem := image_problem(arch, image):
        return {"ok": False, "code": "kernel.bad-image", "error": problem}
    run_logged(["depmod", "-b", str(root), release.name], space.log, what=f"depmod for {release.name}")
    builtin = release / "modules.builtin"
    try:
        order = load_order((release / "modules.dep").read_text(), builtin.read_text() if builtin.is_file() else "",
                           modules)
    except MissingModule as exc:
        return {"ok": False, "code": exc.code, "error": f"a module the guest needs is {exc}"}
    (space.result / "image").write_bytes(image.read_bytes())
    (space.result / "config").write_bytes((root / "boot" / f"config-{release.name}").read_bytes())
    (space.result / "modules.cpio.gz").write_bytes(modules_archive(release, order))
    return {"ok": True, "version": release.name, "arch": arch.name, "package": package.name,
            "package_version": package.version, "suite": package.suite, "modules": [module_name(p) for p in order]}


def planned_image(lab: Lab, arch: Arch, source: KernelSource) -> Path:
    return Path(f"<kernel: Debian's from {_suite(source)}, fetched at run time>")


def describe(source: KernelSource) -> str:
    return f"Debian's prebuilt kernel from {_suite(source)} (each arch's [debian] flavour)"


def listing(lab: Lab, arch: Arch, source: KernelSource) -> tuple[str | None, dict | None]:
    """No package is known before the archive is asked which is current: what would be fetched."""
    if why_not := debian_kernel_missing(arch, source):
        return f"not planned: {why_not}", None
    return (f"Debian's linux-image-{arch.debian.flavour}:{arch.debian.arch} from {_suite(source)}, "
            f"fetched at run time"), None


KEPT_KINDS: tuple[str, ...] = ("debian-kernels", "debian-apt")  # the cache kinds kept() judges


def kept(lab: Lab, jobs: list) -> dict[str, set[str]]:
    """The packages the flavours resolve to in the lists fetched last (never refreshed
    here), and the lab's apt state they were resolved with."""
    conf = apt_state_entry(lab).path / "apt.conf"
    if jobs and not conf.is_file():
        raise LabError("Debian's package lists were never fetched here")
    return {"debian-kernels": {kernel_entry(resolve_package(j.kernel, j.arch, conf), j.arch).key for j in jobs},
            "debian-apt": {apt_state_entry(lab).key}}


def resolve(source: KernelSource) -> ResolvedSource:
    """One package per arch: each cell names its own in debian_kernel_package."""
    suite = _suite(source)
    return ResolvedSource(f"debian-kernel:{suite}", f"Debian's prebuilt kernel from {suite}", suite)
