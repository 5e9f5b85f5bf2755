"""The developer loop, measured: `python -m lab.bench --dev-loop [--arch A,B]`.

For each arch, on a copy of a kernel source the cache holds (hard links; edits
replace files), with a compiler cache of its own that starts empty:
  1. the cold build of the tree (every object a ccache miss);
  2. edit to matrix: a one-line edit in an mm/ .c file, then `lab run --tree`
     until the matrix is printed (an incremental build, a boot, the testcase);
  3. a fragment with one more option: a new build directory, so every object is
     compiled again through ccache; its time against the cold build, and its hit rate.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from lab import cli, rundir
from lab.plan import newest_kernel
from lab import config as cfg
from lab import schema
from lab.kernel_sources import source_tree
from lab.hosttools import compiler_for
from lab.kernel_trees import tree_build_entry, tree_source
from lab.kernels import ensure_kernel

DEFAULT_ARCHES = ("i386-pae", "sparc64")
EDITED_FILE = "mm/mmap.c"
EXTRA_FRAGMENT = "CONFIG_PRINTK_TIME=y\n"  # one more option, depending only on PRINTK (common.config)


def _edit(path: Path, n: int) -> None:
    """A one-line edit, made as an editor makes it: a new file renamed over the old."""
    temporary = path.with_name(path.name + ".edit")
    temporary.write_text(path.read_text() + f"/* lab dev-loop edit {n} */\n")
    os.replace(temporary, path)


def measure(lab: schema.Lab, arch_name: str, work: Path) -> dict:
    arch = lab.arches[arch_name]
    source = lab.kernels[newest_kernel(lab, arch_name)]
    tree = work / f"linux-{arch_name}"
    subprocess.run(["cp", "-al", str(source_tree(source, print)), str(tree)], check=True)
    started = time.monotonic()
    cold = ensure_kernel(lab, arch, tree_source(tree, []), print)
    cold_s = time.monotonic() - started
    _edit(tree / EDITED_FILE, 1)
    started = time.monotonic()
    code = cli.main(["run", "--tree", str(tree), "--arch", arch_name, "--test", "swp_exclusive",
                     "--out", str(work / f"run-{arch_name}")])
    loop_s = time.monotonic() - started
    fragment = work / f"extra-{arch_name}.config"
    fragment.write_text(EXTRA_FRAGMENT)
    started = time.monotonic()
    rebuilt = ensure_kernel(lab, arch, tree_source(tree, [fragment]), print)
    fragment_s = time.monotonic() - started
    facts = dict(rebuilt.provenance)
    for sources in ([], [fragment]):  # the build directories of a tree that is about to be deleted
        shutil.rmtree(tree_build_entry(lab, arch, tree_source(tree, sources), compiler_for(arch)).path,
                      ignore_errors=True)
    hits, misses = int(facts["ccache_hits"]), int(facts["ccache_misses"])
    return {"arch": arch_name, "kernel": source.name, "cold_s": cold_s, "loop_s": loop_s, "loop_exit": code,
            "loop_compiled": _loop_compiled(work / f"run-{arch_name}"), "fragment_s": fragment_s,
            "hit_rate": hits / max(1, hits + misses),
            "cold_misses": dict(cold.provenance)["ccache_misses"]}


def _loop_compiled(out: Path) -> str:
    """How many objects the edit-to-matrix run's build compiled (from its cell's provenance)."""
    results = out / rundir.RESULTS
    if not results.is_file():
        return "?"
    cells = json.loads(results.read_text())["cells"]
    return cells[0]["provenance"].get("compiled_objects", "?") if cells else "?"


def main(arches: list[str]) -> int:
    lab = cfg.load_lab()
    with tempfile.TemporaryDirectory(prefix="lab-devloop-") as tmp:
        work = Path(tmp)
        os.environ["LAB_CCACHE_DIR"] = str(work / "ccache")  # starts empty: the cold build is cold
        rows = [measure(lab, a, work) for a in arches]
    print("\ndev loop (a tree copied from the cache; its own ccache, empty at the start):")
    print(f"  {'arch':10} {'kernel':9} {'cold build':>10} {'edit->matrix':>12} {'+1 option':>10} "
          f"{'of cold':>8} {'ccache hits':>11}")
    for r in rows:
        print(f"  {r['arch']:10} {r['kernel']:9} {r['cold_s']:9.1f}s {r['loop_s']:11.1f}s {r['fragment_s']:9.1f}s "
              f"{r['fragment_s'] / r['cold_s']:8.0%} {r['hit_rate']:11.0%}")
    print("  (edit->matrix compiled " + ", ".join(f"{r['arch']}: {r['loop_compiled']} objects, exit {r['loop_exit']}"
                                                  for r in rows) + ")")
    return 0
