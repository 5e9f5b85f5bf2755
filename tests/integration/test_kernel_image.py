"""`lab run --kernel-image` with a real kernel the lab built before (i386-pae 6.1,
copied out of the cache as a developer's build directory would hold it)."""

import json
import shutil
import subprocess
import sys

import pytest

from lab.config import load_lab
from lab.kernels import ensure_kernel
from conftest import REPO

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_orphan_qemu")]

LAB = load_lab(REPO)
ARCH = "i386-pae"


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory):
    """A build directory with the image at arch/x86/boot/bzImage and the .config at its top."""
    kernel = ensure_kernel(LAB, LAB.arches[ARCH], LAB.kernels["6.1"], lambda m: print(m, file=sys.stderr))
    build = tmp_path_factory.mktemp("build")
    (build / "arch/x86/boot").mkdir(parents=True)
    shutil.copy(kernel.image, build / "arch/x86/boot/bzImage")
    shutil.copy(kernel.config, build / ".config")
    return build


def _run(out, *args):
    proc = subprocess.run([sys.executable, "-m", "lab", "run", "--arch", ARCH, "--test", "swp_exclusive",
                           "--out", str(out), *args], capture_output=True, text=True, cwd=REPO, timeout=900)
    results = out / "results.json"
    cells = json.loads(results.read_text())["cells"] if results.is_file() else []
    return proc, cells


def test_a_built_image_boots_with_its_config_checked(build_dir, tmp_path):
    proc, cells = _run(tmp_path / "run", "--kernel-image", str(build_dir / "arch/x86/boot/bzImage"))
    (cell,) = cells
    # 6.1 on i386-pae loses the marker. Expectations name the plan's kernels, not an
    # image: a plain FAIL, exit 1.
    assert cell["status"] == "FAIL" and cell["message"] == "FAIL: page was replaced during COW", proc.stderr[-2000:]
    assert proc.returncode == 1
    assert cell["kernel"].startswith("image-") and cell["kernel_version"].startswith("6.1.")
    facts = cell["provenance"]
    assert facts["kernel_config"] == str(build_dir / ".config")
    assert cell["kernel"] == "image-" + facts["kernel_image_sha256"][:12]


def test_a_config_missing_an_option_is_error_before_any_boot(build_dir, tmp_path):
    config = tmp_path / "config"
    config.write_text((build_dir / ".config").read_text().replace("CONFIG_ZRAM=y", "CONFIG_ZRAM=m"))
    proc, cells = _run(tmp_path / "run", "--kernel-image", str(build_dir / "arch/x86/boot/bzImage"),
                       "--kernel-config", str(config))
    (cell,) = cells
    assert cell["status"] == "ERROR" and proc.returncode == 2
    assert cell["message"].endswith("lacks options the lab's fragments require: CONFIG_ZRAM=y")
    assert not (tmp_path / "run" / "logs" / ARCH).exists() or not list((tmp_path / "run" / "logs").rglob("console*"))


def test_an_image_of_another_arch_is_refused(build_dir, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "lab", "run", "--arch", "arm64", "--kernel-image",
                           str(build_dir / "arch/x86/boot/bzImage"), "--out", str(tmp_path / "run")],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("lab: error: --kernel-image ") and "not a kernel image for arm64" in proc.stderr
    assert not (tmp_path / "run").exists()
