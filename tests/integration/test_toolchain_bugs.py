"""The compiler bugs arch TOMLs record ([toolchain.broken]) are real on this host.

Each recorded bug comes with a small C reproducer. It is compiled with the
installed cross compiler and disassembled: a compiler the TOML lists must show
the bug, and one that shows it must be listed, so the lab never refuses a good
compiler nor builds with a bad one without saying why.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from lab.config import load_lab
from lab.hosttools import compiler_for, known_miscompile

DATA = Path(__file__).parent / "data"

# SH conditional branches read the T bit; these instructions set it.
_SH_T_SETTERS = re.compile(r"^(tst|cmp/|dt|sett|clrt|shll|shlr|rotl|rotr|rotcl|rotcr|addc|subc|negc|div0|tas)\b")
_SH_BRANCH_ON_T = re.compile(r"^b[tf](\.s|/s)?$")


def _sh_branches_on_stale_t(gcc: str, tmp_path: Path) -> bool:
    """Whether `pick` (sh_tst_deleted.c) branches on T with no instruction before it that sets T."""
    obj = tmp_path / "sh_tst_deleted.o"
    subprocess.run([gcc, "-O2", "-c", str(DATA / "sh_tst_deleted.c"), "-o", str(obj)], check=True)
    objdump = gcc.removesuffix("gcc") + "objdump"
    listing = subprocess.run([objdump, "-d", "--no-show-raw-insn", str(obj)], capture_output=True, text=True,
                             check=True).stdout
    mnemonics = [m.group(1) for m in re.finditer(r"^\s+[0-9a-f]+:\s+(\S+)", listing, re.MULTILINE)]
    for mnemonic in mnemonics:
        if _SH_T_SETTERS.match(mnemonic):
            return False
        if _SH_BRANCH_ON_T.match(mnemonic):
            return True
    raise AssertionError(f"no conditional branch in pick():\n{listing}")


def test_sh4_compiler_bug_matches_the_record(tmp_path):
    lab = load_lab()
    arch = lab.arches["sh4"]
    compiler = compiler_for(arch)
    buggy = _sh_branches_on_stale_t(compiler.gcc, tmp_path)
    listed = known_miscompile(arch, compiler) is not None
    assert buggy == listed, (
        f"{compiler.version}: {'miscompiles' if buggy else 'compiles correctly'} sh_tst_deleted.c but is "
        f"{'' if listed else 'not '}listed in configs/arches/sh4.toml [toolchain.broken]")


def test_a_listed_compiler_stops_the_kernel_build_before_any_work(tmp_path, monkeypatch):
    """`lab kernels build --arch sh4` with the broken compiler: one clear line, nothing built."""
    import lab.kernels as kernels
    import lab.source_kernels as source_kernels
    from lab.errors import BuildError

    lab = load_lab()
    arch = lab.arches["sh4"]
    if known_miscompile(arch, compiler_for(arch)) is None:
        pytest.skip("this host's sh4 compiler is not a listed broken build")
    monkeypatch.setattr(source_kernels, "_build", lambda *a, **k: pytest.fail("a kernel build was started"))
    with pytest.raises(BuildError, match=r"not built: .*known to miscompile sh4 kernels: GCC's sh_treg_combine"):
        kernels.ensure_kernel(lab, arch, lab.kernels["6.1"])
