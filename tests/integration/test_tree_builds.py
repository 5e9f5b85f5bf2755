"""The developer loop on a real kernel: `lab run --tree` on a copy of Linux 6.12, a
one-line edit to the swap-in path, and back. Real builds, real QEMU, real guests."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lab.config import load_lab
from lab.kernel_sources import source_tree
from conftest import REPO, qemu_processes

LAB = load_lab(REPO)
ARCHES = ("i386-pae", "x86_64")
# do_swap_page() of 6.12: a page found in the swap cache is exclusive only if its swap PTE says so.
SWAP_IN = "\t\texclusive = pte_swp_exclusive(vmf->orig_pte);\n"
IGNORED = "\t\texclusive = false; /* qemu-lab test: the swap PTE's exclusive bit is ignored */\n"


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """A copy of the cached 6.12 source: hard links, so every edit must replace a file."""
    source = source_tree(LAB.kernels["6.12"], lambda msg: print(msg, file=sys.stderr))
    copy = tmp_path_factory.mktemp("tree") / "linux"
    subprocess.run(["cp", "-al", str(source), str(copy)], check=True)
    assert SWAP_IN in (copy / "mm/memory.c").read_text(), "the edit's anchor is gone from 6.12's mm/memory.c"
    return copy


def _replace(path: Path, old: str, new: str) -> None:
    """Edit as an editor does: a new file renamed over the old one (the copy's inodes are the cache's)."""
    text = path.read_text()
    assert old in text
    temporary = path.with_name(path.name + ".edit")
    temporary.write_text(text.replace(old, new))
    os.replace(temporary, path)


def _run(tree: Path, out: Path, arches) -> dict:
    proc = subprocess.run([sys.executable, "-m", "lab", "run", "--tree", str(tree), "--arch", ",".join(arches),
                           "--test", "swp_exclusive", "--out", str(out), "-j", "2"],
                          capture_output=True, text=True, cwd=REPO, timeout=2400)
    results = out / "results.json"
    assert results.is_file(), proc.stderr[-3000:]
    return {c["arch"]: c for c in json.loads(results.read_text())["cells"]}


def _compiled(cell: dict) -> list[str]:
    """The objects the build of this cell's kernel compiled, from its build log."""
    log = Path(cell["provenance"]["tree_build_log"]).read_text(errors="replace")
    return re.findall(r"^\s+CC\s+(\S+\.o)$", log, re.MULTILINE)


def test_an_edit_in_a_tree_flips_the_verdict_and_rebuilds_incrementally(tree, tmp_path):
    before = {p.name for p in tree.iterdir()}
    guests = set(qemu_processes())
    cells = _run(tree, tmp_path / "clean", ARCHES)
    for arch in ARCHES:
        cell = cells[arch]
        assert cell["status"] == "PASS", f"{arch}: {cell['message']}"
        assert re.fullmatch(r"tree-linux-nogit", cell["kernel"]) and cell["kernel_version"].startswith("6.12.")
        assert cell["provenance"]["tree"] == str(tree) and cell["provenance"]["tree_head"] == "none"

    _replace(tree / "mm/memory.c", SWAP_IN, IGNORED)
    cells = _run(tree, tmp_path / "edited", ARCHES)
    for arch in ARCHES:
        cell = cells[arch]
        assert cell["status"] == "FAIL", f"{arch}: the swap-in path ignores the marker: {cell['message']}"
        assert cell["message"] == "FAIL: page was replaced during COW"
        compiled = _compiled(cell)
        assert "mm/memory.o" in compiled and len(compiled) <= 5, f"{arch}: not incremental: {compiled}"

    _replace(tree / "mm/memory.c", IGNORED, SWAP_IN)
    (cell,) = _run(tree, tmp_path / "reverted", ARCHES[:1]).values()
    assert cell["status"] == "PASS", cell["message"]
    assert "mm/memory.o" in _compiled(cell) and len(_compiled(cell)) <= 5
    assert {p.name for p in tree.iterdir()} == before, "the lab wrote into the tree"
    assert set(qemu_processes()) <= guests, "a QEMU was left behind"
