"""Kernel configuration: config fragments, merged over tinyconfig, and the check that
every option they set took effect. Shared by every kind of kernel the lab builds or
is given (lab.kernels has the kinds); imports none of them.
"""

from __future__ import annotations

import re
from pathlib import Path

from lab import safe_read
from lab.schema import Arch, KernelSource, Lab
from lab.errors import BuildError

CONFIG_MAX_BYTES = 4 * safe_read.MIB  # an allmodconfig .config is about 300 KiB


def fragments_for(lab: Lab, arch: Arch, source: KernelSource) -> list[Path]:
    """The fragments applied over tinyconfig, in order: common, the arch's, then the source's own."""
    return [lab.kernel_fragments_dir / "common.config", lab.kernel_fragments_dir / arch.kernel.fragment,
            *(Path(f) for f in source.fragments)]


def wanted_options(fragments: list[Path]) -> dict[str, str]:
    """Every option the fragments set, a later fragment overriding an earlier one."""
    wanted: dict[str, str] = {}
    for fragment in fragments:
        wanted.update(parse_fragment(fragment.read_text()))
    return wanted


def parse_fragment(text: str) -> dict[str, str]:
    """CONFIG_X=val and '# CONFIG_X is not set' (value 'n') lines of a config fragment."""
    wanted: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if m := re.fullmatch(r"(CONFIG_\w+)=(.*)", line):
            wanted[m.group(1)] = m.group(2)
        elif m := re.fullmatch(r"# (CONFIG_\w+) is not set", line):
            wanted[m.group(1)] = "n"
    return wanted


def merge_fragments(base_config: str, wanted: dict[str, str]) -> str:
    """Replace every symbol named in `wanted` in a .config by the wanted value."""
    kept = [
        line for line in base_config.splitlines()
        if not (m := re.match(r"(?:# )?(CONFIG_\w+)[= ]", line)) or m.group(1) not in wanted
    ]
    added = [f"# {sym} is not set" if val == "n" else f"{sym}={val}" for sym, val in wanted.items()]
    return "\n".join(kept + added) + "\n"


def unmet_options(final_config: str, wanted: dict[str, str], defined: set[str] | None = None) -> list[str]:
    """Options of the fragments that olddefconfig did not keep (a dependency is missing).

    Symbols this kernel version does not define (not in `defined`) are not checked:
    fragments may name both the old and the new name of an option.
    """
    actual = parse_fragment(final_config)
    return [
        f"{sym}={val}" if val != "n" else f"# {sym} is not set"
        for sym, val in wanted.items()
        if actual.get(sym, "n") != val and (defined is None or sym in defined)
    ]


_KCONFIG_SYMBOL = re.compile(r"^\s*(?:menu)?config\s+(\w+)\s*$", re.MULTILINE)


def defined_symbols(tree: Path, arch_dir: str) -> set[str]:
    """Every CONFIG_ symbol the Kconfig files for this arch define (other arches' are not seen)."""
    symbols: set[str] = set()
    for kconfig in tree.rglob("Kconfig*"):
        parts = kconfig.relative_to(tree).parts
        if parts[0] == "arch" and len(parts) > 2 and parts[1] != arch_dir:
            continue
        if kconfig.is_file() and not kconfig.is_symlink():  # a tree's: never followed out of it
            symbols.update("CONFIG_" + s for s in _KCONFIG_SYMBOL.findall(kconfig.read_text(errors="replace")))
    return symbols



def read_config(path: Path) -> str:
    """A .config (maybe in a tree owner's build directory): read, never followed, bounded."""
    return safe_read.read_text(path, CONFIG_MAX_BYTES, BuildError)
