"""lab run --tree: a kernel tree as it is on disk, built incrementally, never written to.
Against a fake tree whose Makefile compiles mm/*.c like Kbuild (one "CC" line per object)."""

import concurrent.futures
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lab import ccache
from lab.config import load_lab
from lab.schema import WorkingTree
from lab.errors import UserError
from lab.kernel_sources import tree_state
from lab.kernel_trees import tree_source
from lab.kernels import ensure_kernel
from conftest import REPO

MAKEFILE = """\
tinyconfig:
\tprintf 'CONFIG_64BIT=y\\n' > $(O)/.config
olddefconfig:
\t@true
SRCS := $(wildcard $(CURDIR)/mm/*.c)
OBJS := $(patsubst $(CURDIR)/%.c,$(O)/%.o,$(SRCS))
$(O)/%.o: $(CURDIR)/%.c
\t@mkdir -p $(dir $@); echo '  CC      $*.o'; cp $< $@
bzImage: $(OBJS)
\tmkdir -p $(O)/arch/x86/boot $(O)/include/config
\tcat $(OBJS) > $(O)/arch/x86/boot/bzImage
\techo 6.12.999-fake > $(O)/include/config/kernel.release
"""


@pytest.fixture
def fake_tree(tmp_path, isolated_cache, fake_i686_gcc):
    tree = tmp_path / "linux"
    (tree / "mm").mkdir(parents=True)
    (tree / "arch" / "x86").mkdir(parents=True)
    (tree / "Makefile").write_text(MAKEFILE)
    (tree / "Kconfig").write_text("config 64BIT\n\tbool\n")
    (tree / "mm" / "memory.c").write_text("memory v1\n")
    (tree / "mm" / "swapfile.c").write_text("swapfile v1\n")
    return tree


def _listing(tree):
    return sorted((str(p.relative_to(tree)), p.stat().st_mtime_ns) for p in tree.rglob("*"))


def test_a_tree_is_built_incrementally_and_never_written_to(fake_tree):
    lab = load_lab(REPO)
    arch = lab.arches["i386-pae"]
    before = _listing(fake_tree)
    first = ensure_kernel(lab, arch, tree_source(fake_tree, []))
    facts = dict(first.provenance)
    assert facts["compiled_objects"] == "2" and first.version == "6.12.999-fake"
    assert first.image.read_text() == "memory v1\nswapfile v1\n"
    assert facts["tree"] == str(fake_tree) and facts["tree_head"] == "none"
    again = ensure_kernel(lab, arch, tree_source(fake_tree, []))
    assert dict(again.provenance)["compiled_objects"] == "0" and again.key == first.key
    time.sleep(0.01)
    (fake_tree / "mm" / "memory.c").write_text("memory v2\n")  # the one-line edit
    edited = ensure_kernel(lab, arch, tree_source(fake_tree, []))
    log = dict(edited.provenance)["tree_build_log"]
    assert "  CC      mm/memory.o" in open(log).read()
    assert dict(edited.provenance)["compiled_objects"] == "1", open(log).read()
    assert edited.image.read_text() == "memory v2\nswapfile v1\n" and edited.key != first.key
    assert first.image.read_text() == "memory v1\nswapfile v1\n", "a kernel about to boot never changes"
    assert {p for p, _ in _listing(fake_tree)} == {p for p, _ in before}, "nothing new in the user's tree"


def test_concurrent_builds_of_one_tree_and_arch_take_turns(fake_tree):
    """Two runs on the same tree and arch at once: the entry's lock serializes them, so
    one compiles both objects and the other finds nothing left to compile."""
    lab = load_lab(REPO)
    arch = lab.arches["i386-pae"]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        builds = list(pool.map(lambda _: ensure_kernel(lab, arch, tree_source(fake_tree, [])), range(2)))
    assert sorted(dict(b.provenance)["compiled_objects"] for b in builds) == ["0", "2"]
    assert {b.key for b in builds} == {builds[0].key}
    assert builds[0].image.read_text() == "memory v1\nswapfile v1\n"


def test_a_tree_with_in_tree_build_output_is_refused(fake_tree):
    (fake_tree / ".config").write_text("CONFIG_64BIT=y\n")
    with pytest.raises(UserError, match=r"has in-tree build output \(\.config\).*run `make mrproper` in "):
        tree_source(fake_tree, [])


def test_a_directory_that_is_no_kernel_tree_is_refused(tmp_path):
    with pytest.raises(UserError, match=r"--tree .*: not a kernel source tree"):
        tree_source(tmp_path, [])


def test_the_tree_state_names_head_and_edits(tmp_path):
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(git[:3] + ["init", "-q"], check=True)
    (tmp_path / "f").write_text("1\n")
    subprocess.run(git + ["add", "f"], check=True)
    subprocess.run(git + ["commit", "-qm", "c"], check=True)
    clean = tree_state(tmp_path)
    assert len(clean.head) == 40 and not clean.dirty
    (tmp_path / "f").write_text("2\n")
    assert tree_state(tmp_path).dirty and "uncommitted" in str(tree_state(tmp_path))


@pytest.mark.parametrize("args, complaint", [
    (["--tree", "T", "--kernel", "6.1"], "lab: error: --kernel and --tree each say which kernel to boot: give one of them"),
    (["--fragment", "x.config"], "lab: error: --fragment adds to the fragments of a --tree build: give --tree too"),
])
def test_contradictory_tree_options_are_one_line(fake_tree, tmp_path, args, complaint):
    args = [str(fake_tree) if a == "T" else a for a in args]
    proc = subprocess.run([sys.executable, "-m", "lab", "run", "--dry-run", *args], capture_output=True,
                          text=True, cwd=REPO, timeout=60, env={**os.environ})
    assert proc.returncode == 2 and proc.stderr.strip() == complaint


def test_ccache_stats_are_counted_from_its_stats_log(tmp_path):
    log = tmp_path / "stats.log"
    log.write_text("# a.c\ncache_miss\ndirect_cache_miss\n# b.c\ndirect_cache_hit\nlocal_storage_hit\n"
                   "# c.c\npreprocessed_cache_hit\n")
    stats = ccache.read_stats(log)
    assert (stats.hits, stats.misses) == (2, 1) and str(stats) == "ccache: 2 hits, 1 misses (67% hit rate)"
    assert ccache.read_stats(tmp_path / "none").hits == 0


@pytest.mark.parametrize("link, target", [("mm/x.c", "/etc/shadow"), ("include/r", "/"), ("Makefile", "/tmp"),
                                          ("arch", "/usr"), ("mm/up.c", "../../outside.c"),
                                          ("mm/deep/x.c", "/etc/passwd")])
def test_a_tree_with_a_link_that_leaves_it_is_refused_naming_the_link(fake_tree, link, target):
    """Issue 27 item 6: the build read whatever the links named."""
    path = fake_tree / link
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_dir():
        os.rename(path, fake_tree / f"{link}.real")
    elif path.exists():
        path.unlink()
    path.symlink_to(target)
    with pytest.raises(UserError, match=f"--tree {fake_tree}: {link} is a symbolic link to {target}, outside the tree"):
        tree_source(fake_tree, [])


def test_links_inside_the_tree_are_fine(fake_tree):
    (fake_tree / "include").mkdir()
    (fake_tree / "include" / "m").symlink_to("../mm")
    (fake_tree / "mm" / "alias.c").symlink_to("memory.c")
    (fake_tree / "mm" / "dangling.c").symlink_to("nothing-here.c")
    assert tree_source(fake_tree, []).kind == WorkingTree(str(fake_tree))


NOBODY = 65534
HOOK = "#!/bin/sh\nid -u >> {marker}\n"


@pytest.fixture
def others_tree(tmp_path, monkeypatch, fake_i686_gcc):
    """A git tree of the user nobody whose configuration names programs (fsmonitor, a clean
    filter, hooks), in a place that user can reach, with the cache there too."""
    import shutil
    import tempfile
    if os.geteuid() != 0:
        pytest.skip("dropping to a tree's owner needs root")
    place = Path(tempfile.mkdtemp(dir="/var/tmp", prefix="lab-owner-"))
    place.chmod(0o755)
    tree, marker = place / "linux", place / "ran-as-root"
    (tree / "mm").mkdir(parents=True)
    (tree / "arch" / "x86").mkdir(parents=True)
    (tree / "Makefile").write_text(MAKEFILE.replace("\tcat $(OBJS) > $(O)/arch/x86/boot/bzImage",
                                                    "\t(id -u; cat $(OBJS)) > $(O)/arch/x86/boot/bzImage"))
    (tree / "Kconfig").write_text("config 64BIT\n\tbool\n")
    (tree / "mm" / "memory.c").write_text("memory v1\n")
    (tree / ".gitattributes").write_text("*.c filter=evil\n")
    hook = place / "hook.sh"
    hook.write_text(HOOK.format(marker=marker))
    hook.chmod(0o755)
    git = ["git", "-C", str(tree), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(git[:3] + ["init", "-q"], check=True)
    subprocess.run(git + ["add", "."], check=True)
    subprocess.run(git + ["commit", "-qm", "x"], check=True)
    for key in ("core.fsmonitor", "filter.evil.clean", "filter.evil.process", "core.pager"):
        subprocess.run(git[:3] + ["config", key, str(hook)], check=True)
    (tree / ".git" / "hooks" / "post-index-change").write_text(HOOK.format(marker=marker))
    (tree / ".git" / "hooks" / "post-index-change").chmod(0o755)
    subprocess.run(["chown", "-R", f"{NOBODY}:{NOBODY}", str(tree)], check=True)
    (tree / "mm" / "memory.c").touch()  # a changed stat: status would run the clean filter
    monkeypatch.setenv("LAB_CACHE", str(place / "cache"))
    yield tree, marker
    shutil.rmtree(place)


def test_a_tree_of_another_user_is_read_and_built_as_that_user(others_tree):
    """Issue 27 item 1: `lab run --tree T --dry-run` ran T's core.fsmonitor twice as root."""
    tree, marker = others_tree
    lab = load_lab(REPO)
    source = tree_source(tree, [])
    assert not marker.exists(), "reading the tree ran nothing its git configuration names"
    built = ensure_kernel(lab, lab.arches["i386-pae"], source)
    assert built.image.read_text().splitlines()[0] == str(NOBODY), "make ran as the tree's owner"
    assert dict(built.provenance)["tree_owner"] == f"nobody (uid {NOBODY})"
    place = next(Path(os.environ["LAB_CACHE"], "tree-builds").glob("*/build")).parent
    assert (place.stat().st_uid, (place / "build").stat().st_uid, (place / "src").stat().st_uid) == (0, NOBODY, NOBODY)
    ccache_dir = Path(os.environ["LAB_CACHE"], "ccache-users", str(NOBODY))
    assert ccache_dir.is_dir() and ccache_dir.stat().st_uid == NOBODY, "a compiler cache of its own"
    assert not marker.exists()


def test_a_tree_whose_owner_cannot_reach_the_cache_is_one_clear_line(others_tree, tmp_path, monkeypatch):
    tree, _ = others_tree
    monkeypatch.setenv("LAB_CACHE", str(tmp_path / "cache"))  # under pytest's 0700 directory
    lab = load_lab(REPO)
    with pytest.raises(UserError, match=f"--tree {tree} belongs to nobody .uid {NOBODY}.*cannot reach the lab's "
                                        "cache .*set LAB_CACHE"):
        ensure_kernel(lab, lab.arches["i386-pae"], tree_source(tree, []))


def test_a_link_planted_by_the_owners_build_is_not_followed(others_tree):
    """The build is the owner's code: a kernel.release or image that is a link to a root-only
    file is refused, never read into the cache or a guest."""
    tree, _ = others_tree
    (tree / "Makefile").write_text(MAKEFILE.replace(
        "\techo 6.12.999-fake > $(O)/include/config/kernel.release",
        "\tln -sf /etc/shadow $(O)/include/config/kernel.release"))
    lab = load_lab(REPO)
    with pytest.raises(Exception, match="kernel.release: is a symbolic link"):
        ensure_kernel(lab, lab.arches["i386-pae"], tree_source(tree, []))


def test_the_config_is_checked_again_after_a_checkout(fake_tree):
    """Item 17: a --tree build configured once, so after a checkout of another version the
    unmet-option check never ran again."""
    lab = load_lab(REPO)
    arch = lab.arches["i386-pae"]
    ensure_kernel(lab, arch, tree_source(fake_tree, []))
    # The "checkout": this version defines SWAP, which the fragments want, with a dependency
    # olddefconfig finds unmet (so it drops the option).
    (fake_tree / "Kconfig").write_text("config 64BIT\n\tbool\nconfig SWAP\n\tbool\n")
    (fake_tree / "Makefile").write_text(MAKEFILE.replace("olddefconfig:\n\t@true",
                                                         "olddefconfig:\n\tsed -i '/^CONFIG_SWAP=/d' $(O)/.config"))
    with pytest.raises(Exception, match="config options did not take effect .*CONFIG_SWAP"):
        ensure_kernel(lab, arch, tree_source(fake_tree, []))


def test_a_tree_run_can_be_resumed(fake_tree, tmp_path, capsys, monkeypatch):
    """Item 14: the tree is found again where run.json says, and resumed under its name."""
    from lab import rundir
    from lab.cli import build_parser, main
    from lab.cmd_run import given_kernel as _given_kernel
    from lab.plan import Request, new_plan
    monkeypatch.setenv("LAB_ROOT", str(REPO))
    args = build_parser().parse_args(["run", "--arch", "i386-pae", "--tree", str(fake_tree)])
    lab, kernel, recorded = _given_kernel(load_lab(REPO), args)
    out = tmp_path / "run"
    out.mkdir()
    rundir.write(out, {**new_plan(lab, Request(arch="i386-pae", kernel=kernel)), "given_kernel": recorded})
    assert main(["run", "--resume", str(out), "--dry-run"]) == 0
    assert f"# i386-pae/{kernel}: " in capsys.readouterr().out
