import shutil

import pytest

from lab.config import load_lab, pick
from lab.schema import ALLOWED_NEEDS
from lab.errors import ConfigError, UserError
from conftest import REPO

LAB = load_lab(REPO)


def test_repo_configs_load():
    assert "i386-pae" in LAB.arches
    assert set(LAB.plan.kernels) <= set(LAB.kernels)
    assert set(LAB.plan.testcases) <= set(LAB.testcases)


@pytest.mark.parametrize("name", sorted(LAB.arches))
def test_every_arch_is_complete(name):
    arch = LAB.arches[name]
    assert (REPO / "configs/arches" / f"{name}.toml").is_file(), "one file per arch, named after it"
    assert (REPO / "configs/kernel" / arch.kernel.fragment).is_file()
    assert (REPO / "tests/unit/golden" / f"argv-{name}.txt").is_file(), "its QEMU command line is pinned"
    assert arch.qemu.binary.startswith("qemu-system-")
    assert arch.toolchain.package.startswith("gcc")
    assert arch.guest.poweroff


@pytest.mark.parametrize("name", sorted(LAB.testcases))
def test_every_testcase_is_complete(name):
    case = LAB.testcases[name]
    assert (REPO / "testcases" / case.source).is_file() if case.source else case.kselftest.count("/") == 1
    assert set(case.needs) <= set(ALLOWED_NEEDS)


def _edit(path, old, new):
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def test_wrong_type_names_file_and_field(repo_copy):
    _edit(repo_copy / "configs/arches/i386-pae.toml", "[qemu]\n", '[qemu]\nmemory_mib = "lots"\n')
    with pytest.raises(ConfigError, match=r"configs/arches/i386-pae.toml\.qemu\.memory_mib: expected an integer"):
        load_lab(repo_copy)


def test_unknown_field_lists_allowed(repo_copy):
    _edit(repo_copy / "configs/arches/i386-pae.toml", "[qemu]", "[qemu]\nmemroy_mib = 5")
    with pytest.raises(ConfigError, match=r"unknown field 'memroy_mib' \(allowed: .*memory_mib"):
        load_lab(repo_copy)


def test_malformed_toml(repo_copy):
    (repo_copy / "configs/lab.toml").write_text("[plan\narches = [")
    with pytest.raises(ConfigError, match=r"configs/lab.toml: malformed TOML"):
        load_lab(repo_copy)


def test_plan_names_unknown_arch(repo_copy):
    _edit(repo_copy / "configs/lab.toml", 'arches = ["i386-pae", ', 'arches = ["vax", ')
    with pytest.raises(ConfigError, match=r"plan.arches: unknown arch 'vax' \(known: [^)]*i386-pae"):
        load_lab(repo_copy)


def test_testcase_kind_and_needs_are_checked(repo_copy):
    _edit(repo_copy / "testcases/swp_exclusive.toml", 'kind = "deterministic"', 'kind = "flaky"')
    with pytest.raises(ConfigError, match=r"kind: 'flaky' is not one of deterministic, race"):
        load_lab(repo_copy)


def test_missing_required_field(repo_copy):
    _edit(repo_copy / "configs/arches/i386-pae.toml", 'binary = "qemu-system-i386"\n', "")
    with pytest.raises(ConfigError, match=r"\[?qemu: missing required field 'binary'"):
        load_lab(repo_copy)


def test_pick_rejects_unknown_names():
    assert pick("arch", None, LAB.arches, ("i386-pae",)) == ["i386-pae"]
    assert pick("kernel", "6.12,6.1", LAB.kernels, ()) == ["6.12", "6.1"]
    with pytest.raises(UserError, match=r"unknown kernel '5.4' \(known: 6.1, 6.12"):
        pick("kernel", "5.4", LAB.kernels, ())


def test_kernel_source_kinds_are_exclusive(repo_copy):
    _edit(repo_copy / "configs/lab.toml", 'debian_package = "linux-source-6.1"',
          'debian_package = "linux-source-6.1"\ntarball = "/x.tar.xz"')
    with pytest.raises(ConfigError, match=r"kernels.6.1: give exactly one of debian_package, tarball, git, tree, image, "
                                          r"debian_kernel \(got debian_package, tarball\)"):
        load_lab(repo_copy)


def test_expectation_names_are_checked(repo_copy):
    _edit(repo_copy / "configs/lab.toml", 'kernels = ["6.1", "debian-6.1"]\narches', 'kernels = ["5.10"]\narches')
    with pytest.raises(ConfigError, match=r"expect\[0\]\.kernels: unknown name '5.10'"):
        load_lab(repo_copy)


@pytest.mark.parametrize("testcase, globs, complaint", [
    ("swp_exclusive", '["a*"]', r"expect\[\d+\]\.subtests: 'swp_exclusive' is not a kselftest"),
    ("cow", '[" "]', r"expect\[\d+\]\.subtests: ' ' is not a subtest name glob"),
    ("cow", '"a*"', r"expect\[\d+\]\.subtests: expected"),
])
def test_subtest_expectations_are_checked(repo_copy, testcase, globs, complaint):
    lab_toml = repo_copy / "configs/lab.toml"
    lab_toml.write_text(lab_toml.read_text() + f"""
[[expect]]
testcase = "{testcase}"
subtests = {globs}
reason = "r"
""")
    with pytest.raises(ConfigError, match=complaint):
        load_lab(repo_copy)


def test_subtest_expectations_are_kept_apart_from_the_cell_expectation(repo_copy):
    lab_toml = repo_copy / "configs/lab.toml"
    lab_toml.write_text(lab_toml.read_text() + """
[[expect]]
testcase = "cow"
arches = ["riscv64"]
subtests = ["R/O longterm GUP pin*"]
reason = "known"
""")
    lab = load_lab(repo_copy)
    assert lab.expectation("riscv64", "6.12", "cow") is None
    assert [e.subtests for e in lab.subtest_expectations("riscv64", "6.12", "cow")] == [("R/O longterm GUP pin*",)]
    assert lab.subtest_expectations("arm64", "6.12", "cow") == ()


def test_expectations_match_the_seed_facts():
    for arch in ("i386", "i386-pae", "sparc64", "riscv64"):
        assert LAB.expectation(arch, "6.1", "swp_exclusive").status == "FAIL"
    assert LAB.expectation("x86_64", "6.1", "swp_exclusive") is None
    assert LAB.expectation("i386", "6.12", "swp_exclusive") is None


def test_param_overrides_are_typed_and_checked():
    from lab.config import param_overrides
    cases = [LAB.testcases["swp_exclusive"], LAB.testcases["odirect_swapout"]]
    assert param_overrides(cases, ["duration=120", "iterations=5"]) == {
        "swp_exclusive": {}, "odirect_swapout": {"duration": 120.0, "iterations": 5}}
    assert LAB.testcases["odirect_swapout"].arguments({"duration": 2.5}) == ["--duration=2.5", "--iterations=0"]
    with pytest.raises(UserError, match=r"--param speed: no selected testcase has this parameter \(known: duration, iterations\)"):
        param_overrides(cases, ["speed=3"])
    with pytest.raises(UserError, match=r"parameter iterations: 'many' is not an integer"):
        param_overrides(cases, ["iterations=many"])
    with pytest.raises(UserError, match=r"expected name=value"):
        param_overrides(cases, ["duration"])
    with pytest.raises(UserError, match=r"no selected testcase has this parameter \(known: none\)"):
        param_overrides(cases[:1], ["duration=3"])


def test_param_declarations_are_checked(repo_copy):
    _edit(repo_copy / "testcases/odirect_swapout.toml", "default = 0\n", 'default = "zero"\n')
    with pytest.raises(ConfigError, match=r"odirect_swapout.toml.params.iterations.default: 'zero' is not an integer"):
        load_lab(repo_copy)


def test_names_that_become_paths_follow_one_pattern(repo_copy):
    lab_toml = repo_copy / "configs/lab.toml"
    original = lab_toml.read_text()
    lab_toml.write_text(original + '\n[kernels."../../x"]\ntarball = "/dev/null"\n')
    with pytest.raises(ConfigError, match=r"kernels\.\.\./\.\./x: kernel name '\.\./\.\./x' is not allowed \(use letters"):
        load_lab(repo_copy)
    lab_toml.write_text(original)
    shutil.copy(repo_copy / "configs/arches/i386.toml", repo_copy / "configs/arches/i 386.toml")
    with pytest.raises(ConfigError, match=r"configs/arches/i 386.toml: arch name 'i 386' is not allowed"):
        load_lab(repo_copy)
    (repo_copy / "configs/arches/i 386.toml").unlink()
    shutil.copy(repo_copy / "testcases/swp_exclusive.toml", repo_copy / "testcases/swp;x.toml")
    with pytest.raises(ConfigError, match=r"testcases/swp;x.toml: testcase name 'swp;x' is not allowed"):
        load_lab(repo_copy)


@pytest.mark.parametrize("old, new, complaint", [
    ("boot_timeout_s = ", "boot_timeout_s = nan #", "guest.boot_timeout_s: expected a finite number, got nan"),
    ("boot_timeout_s = ", "boot_timeout_s = inf #", "guest.boot_timeout_s: expected a finite number, got inf"),
    ("boot_timeout_s = ", "boot_timeout_s = 1e9 #", "guest.boot_timeout_s: 1000000000.0 is above the maximum 3600"),
    ("[qemu]\n", "[qemu]\nmemory_mib = 999999\n", "qemu.memory_mib: 999999 is above the maximum 16384"),
])
def test_non_finite_and_out_of_range_numbers_are_refused(repo_copy, old, new, complaint):
    _edit(repo_copy / "configs/arches/i386-pae.toml", old, new)
    with pytest.raises(ConfigError, match="configs/arches/i386-pae.toml." + complaint.replace(".", r"\.")):
        load_lab(repo_copy)


def test_non_finite_parameters_and_build_limits_are_refused(repo_copy):
    from lab.config import param_overrides
    cases = [LAB.testcases["odirect_swapout"]]
    for bad in ("nan", "inf", "-inf", "NaN"):
        with pytest.raises(UserError, match=rf"parameter duration: '{bad}' is not a finite number"):
            param_overrides(cases, [f"duration={bad}"])
    _edit(repo_copy / "testcases/odirect_swapout.toml", "default = 30.0", "default = nan")
    with pytest.raises(ConfigError, match=r"params.duration.default: nan is not a finite number"):
        load_lab(repo_copy)
    _edit(repo_copy / "testcases/odirect_swapout.toml", "default = nan", "default = 30.0")
    (repo_copy / "configs/lab.toml").write_text((repo_copy / "configs/lab.toml").read_text() + "\n[build]\ntimeout_s = inf\n")
    with pytest.raises(ConfigError, match=r"configs/lab.toml: build.timeout_s: expected a finite number, got inf"):
        load_lab(repo_copy)


def test_arch_fields_that_follow_from_others_are_derived():
    i386 = LAB.arches["i386"]
    assert i386.kernel.fragment == "i386.config"
    assert i386.kernel.image_path == "arch/x86/boot/bzImage"
    assert i386.toolchain.package == "gcc-i686-linux-gnu"
    assert LAB.arches["sparc64"].kernel.image_path == "vmlinux"
    assert LAB.arches["x86_64"].toolchain.package == "gcc", "a field given is kept"


@pytest.mark.parametrize("arch, old, new, complaint", [
    ("i386-pae", 'nic = "virtio-net-pci"', 'nic = "virtio-net-device"',
     r"qemu\.nic: 'virtio-net-device' is not a virtio-pci device"),
    ("arm64", 'virtio = "mmio"', 'virtio = "pci"', r"qemu\.nic: 'virtio-net-device' is not a virtio-pci device"),
    ("s390x", 'virtio = "ccw"', 'virtio = "usb"', r"qemu\.virtio: 'usb' is not one of pci, mmio, ccw"),
])
def test_virtio_devices_must_match_the_declared_transport(repo_copy, arch, old, new, complaint):
    _edit(repo_copy / f"configs/arches/{arch}.toml", old, new)
    with pytest.raises(ConfigError, match=rf"configs/arches/{arch}\.toml.{complaint}"):
        load_lab(repo_copy)


def test_the_virtio_transport_must_be_enabled_in_the_fragment(repo_copy):
    _edit(repo_copy / "configs/kernel/riscv64.config", "CONFIG_VIRTIO_MMIO=y", "# CONFIG_VIRTIO_MMIO is not set")
    with pytest.raises(ConfigError, match=r"configs/arches/riscv64\.toml\.qemu\.virtio: 'mmio' needs "
                                          r"CONFIG_VIRTIO_MMIO=y in configs/kernel/riscv64\.config"):
        load_lab(repo_copy)


@pytest.mark.parametrize("body, complaint", [
    ('description = "x"\n', r"testcases/k.toml: give exactly one of source \(a C file\) and kselftest"),
    ('description = "x"\nsource = "swp_exclusive.c"\nkselftest = "mm/cow"\n', r"give exactly one of source"),
    ('description = "x"\nkselftest = "../../etc/passwd"\n', r"testcases/k.toml.kselftest: '../../etc/passwd' is not"),
    ('description = "x"\nkselftest = "mm/cow"\nkselftest_kernel = "9.9"\n',
     r"testcases/k.toml.kselftest_kernel: unknown kernel '9.9'"),
])
def test_kselftest_testcases_are_checked(repo_copy, body, complaint):
    (repo_copy / "testcases" / "k.toml").write_text(body)
    with pytest.raises(ConfigError, match=complaint):
        load_lab(repo_copy)
