"""Kernels someone already built (`lab run --kernel-image PATH`), booted as they are.

The image's sha256 is its identity in reports. Before anything boots, the image
must carry the bytes the arch's QEMU machine boots (kernel.image_magic in the
arch TOML), and its .config, when there is one (--kernel-config, or found beside
the image), must set every option the arch's fragments require. The image (and
its config) are copied into a cache entry keyed by content, so the file the
user rebuilds meanwhile does not change a kernel a run is about to boot.

The module of the BuiltImage kind (lab.kernels): entry, ensure, planned_image,
describe, listing, kept, resolve.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from lab.cache import Entry, Workspace, ensure as ensure_entry, sha256_file
from lab.schema import Arch, BuiltImage, KernelSource, Lab
from lab.errors import BuildError, UserError
from lab.kconfig import fragments_for, parse_fragment, unmet_options, wanted_options
from lab.kernel_build import KernelArtifact, image_problem
from lab.kernel_sources import ResolvedSource
from lab.progress import Notify

_VERSION_IN_CONFIG = re.compile(r"^# Linux/\S+ (\S+) Kernel Configuration$", re.MULTILINE)
_VERSION_IN_IMAGE = re.compile(rb"Linux version (\d+\.\d+[\w.+~-]*)")
_CONFIG_SEARCH_DEPTH = 3  # arch/<arch>/boot/<image> sits three levels under the build's .config


def config_beside(image: Path) -> Path | None:
    """The image's .config if it sits where builds leave it: `.config` of the build
    directory above arch/*/boot/, `config` beside it (the lab's own entries), or
    Debian's config-VERSION beside vmlinuz-VERSION."""
    candidates = [image.parent / "config"]
    if image.name.startswith(("vmlinuz-", "vmlinux-")):
        candidates.append(image.parent / f"config-{image.name.split('-', 1)[1]}")
    candidates += [parent / ".config" for parent in image.parents[:_CONFIG_SEARCH_DEPTH + 1]]
    return next((c for c in candidates if c.is_file()), None)


def image_source(path: Path, arch: Arch, config: Path | None) -> KernelSource:
    """The kernel source for --kernel-image PATH on `arch` (UserError if it is not one)."""
    image = path.expanduser().resolve()
    if not image.is_file():
        raise UserError(f"--kernel-image {path}: no such file")
    if problem := image_problem(arch, image):
        raise UserError(f"--kernel-image {path}: {problem}")
    if config is not None and not config.is_file():
        raise UserError(f"--kernel-config {config}: no such file")
    config = config.resolve() if config else config_beside(image)
    name = f"image-{sha256_file(image)[:12]}"
    return KernelSource(name=name, kind=BuiltImage(str(image), str(config) if config else None), arches=(arch.name,))


def _given(source: KernelSource) -> BuiltImage:
    assert isinstance(source.kind, BuiltImage), source
    return source.kind


def entry(lab: Lab, arch: Arch, source: KernelSource) -> None:
    """No entry is known before the image is checked (it is keyed by its content)."""
    return None


def ensure(lab: Lab, arch: Arch, source: KernelSource, progress: Notify) -> KernelArtifact:
    """The given image, checked and kept in the cache; BuildError (every cell ERROR)
    if it is not for this arch or its config lacks an option the fragments require."""
    image = Path(_given(source).path)
    if not image.is_file():
        raise BuildError(f"kernel {source.name} for {arch.name}: {image} is gone")
    if problem := image_problem(arch, image):
        raise BuildError(f"kernel {source.name}: {problem}", code="kernel.bad-image")
    config = Path(_given(source).config) if _given(source).config else None
    facts = {"kernel_image": str(image), "kernel_image_sha256": sha256_file(image),
             "kernel_config": str(config) if config else "none: not checked"}
    version = "unknown"
    if config:
        text = config.read_text(errors="replace")
        _check_config(lab, arch, source, text, config, facts)
        if stated := _VERSION_IN_CONFIG.search(text):
            version = stated.group(1)
    found = _VERSION_IN_IMAGE.search(image.read_bytes())
    version = found.group(1).decode() if found else version
    entry = Entry("given-kernels", facts["kernel_image_sha256"][:20])

    def keep(space: Workspace) -> dict:
        shutil.copy(image, space.result / "image")
        if config:
            shutil.copy(config, space.result / "config")
        return {"ok": True, "version": version, "arch": arch.name, **facts}

    ensure_entry(entry, keep)
    kept_config = entry.path / "config"
    return KernelArtifact(arch=arch.name, kernel=source.name, key=entry.key, image=entry.path / "image",
                          config=kept_config if kept_config.is_file() else None, version=version,
                          provenance=tuple(facts.items()))


def _check_config(lab: Lab, arch: Arch, source: KernelSource, text: str, config: Path, facts: dict) -> None:
    """Every option the fragments set must be set so in the config. Options the config
    does not mention at all (another kernel version's names) are recorded, not judged."""
    wanted = wanted_options(fragments_for(lab, arch, source))
    mentioned = set(parse_fragment(text))
    unmet = unmet_options(text, wanted, mentioned)
    if unmet:
        raise BuildError(f"kernel {source.name} for {arch.name}: its config ({config}) lacks options the lab's "
                         f"fragments require: {', '.join(unmet)}")
    facts["config_not_mentioned"] = " ".join(sorted(k for k, v in wanted.items() if k not in mentioned and v != "n"))


def planned_image(lab: Lab, arch: Arch, source: KernelSource) -> Path:
    return Path(_given(source).path)


def describe(source: KernelSource) -> str:
    return f"kernel image {_given(source).path}"


def listing(lab: Lab, arch: Arch, source: KernelSource) -> tuple[str | None, dict | None]:
    return _given(source).path, None


KEPT_KINDS: tuple[str, ...] = ()  # the cache kinds kept() judges


def kept(lab: Lab, jobs: list) -> dict[str, set[str]]:
    """Nothing: a given image is not the default plan's."""
    return {}


def resolve(source: KernelSource) -> ResolvedSource:
    path = _given(source).path
    return ResolvedSource(f"image:{source.name}", f"{path} ({source.name})", path)
