"""CLI errors and --dry-run, with fake host tools on PATH."""

import shlex

import pytest

from lab.cli import main


def test_unknown_arch(fake_host, capsys):
    assert main(["run", "--arch", "vax"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lab: error: unknown arch 'vax' (known: ") and " i386-pae," in err


def test_unknown_testcase(fake_host, capsys):
    assert main(["run", "--test", "nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown testcase 'nope' (known: " in err and "swp_exclusive" in err


def test_malformed_toml(fake_host, capsys):
    (fake_host / "configs/arches/i386-pae.toml").write_text("description = \n")
    assert main(["list"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lab: error: configs/arches/i386-pae.toml: malformed TOML")
    assert len(err.splitlines()) == 1


def test_missing_qemu_names_the_package(fake_host, capsys, monkeypatch):
    (fake_host.parent / "bin" / "qemu-system-i386").unlink()
    monkeypatch.setenv("PATH", str(fake_host.parent / "bin"))  # hide a real QEMU too
    assert main(["run"]) == 2
    assert capsys.readouterr().err.strip() == (
        "lab: error: qemu-system-i386 not found: install the Debian package 'qemu-system-x86' (or run ./just setup)")


def test_missing_kernel_source_names_the_file_or_package(fake_host, capsys):
    (fake_host.parent / "linux-6.12.tar.xz").unlink()
    assert main(["run", "--dry-run"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"lab: error: kernel 6.12: tarball {fake_host.parent / 'linux-6.12.tar.xz'} does not exist")
    assert main(["run", "--dry-run", "--kernel", "0.0"]) == 2
    assert "install the Debian package 'linux-source-0.0'" in capsys.readouterr().err


def test_bad_jobs_value(fake_host, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["run", "-j", "0"])
    assert exc.value.code == 2


def test_dry_run_prints_one_quoted_argv_per_job(fake_host, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--dry-run", "--kernel", "6.1,6.12"]) == 0
    assert not (tmp_path / "results").exists(), "a dry run leaves nothing on disk"
    lines = capsys.readouterr().out.splitlines()
    commands = [shlex.split(line) for line in lines if not line.startswith("#")]
    assert len(commands) == 2
    for argv in commands:
        assert argv[0].endswith("/qemu-system-i386")
        assert argv[argv.index("-append") + 1] == "console=ttyS0 panic=-1"
    assert commands[0][commands[0].index("-kernel") + 1] != commands[1][commands[1].index("-kernel") + 1]


def test_doctor_names_what_is_missing_and_the_package(fake_host, capsys):
    toml = fake_host / "configs/arches/i386-pae.toml"
    toml.write_text(toml.read_text().replace('binary = "qemu-system-i386"', 'binary = "qemu-system-vax"')
                    .replace('package = "qemu-system-x86"', 'package = "qemu-system-vax"'))
    assert main(["doctor", "--arch", "i386-pae", "--kernel", "6.1,0.0"]) == 1
    out = capsys.readouterr().out
    assert "MISSING i386-pae   qemu-system-vax (qemu-system-vax)  -> apt-get install qemu-system-vax" in out
    assert "ok      i386-pae   i686-linux-gnu-gcc (gcc-i686-linux-gnu)" in out
    assert "-> apt-get install linux-source-0.0" in out
    assert "ok      host       kernel 6.1: " in out


def test_a_compiler_known_to_miscompile_is_named_by_doctor_and_builds_nothing(fake_host, isolated_cache, capsys):
    toml = fake_host / "configs/arches/i386-pae.toml"
    toml.write_text(toml.read_text().replace(
        "[qemu]", '[toolchain.broken]\nversions = ["fake 1.0"]\nreason = "deletes tst"\n\n[qemu]'))
    assert main(["doctor", "--arch", "i386-pae", "--kernel", "6.1"]) == 1
    out = capsys.readouterr().out
    assert ("BROKEN  i386-pae   fake 1.0 is known to miscompile i386-pae kernels: deletes tst"
            "  -> another i686-linux-gnu-gcc build (configs/arches/i386-pae.toml)") in out
    assert out.rstrip().endswith("ok, 0 missing, 1 broken")
    assert main(["kernels", "build", "--arch", "i386-pae", "--kernel", "6.1"]) == 2
    err = capsys.readouterr().err
    assert "kernel 6.1 for i386-pae not built: fake 1.0 is known to miscompile i386-pae kernels: deletes tst" in err
    assert not list(isolated_cache.glob("kernel*/*")), "a kernel source was unpacked or a build started"


def test_a_failed_testcase_build_keeps_its_log(fake_host, tmp_path, monkeypatch):
    from lab.config import load_lab
    from lab.errors import BuildError
    from lab.testcases import ensure_testcase
    gcc = tmp_path / "bin" / "i686-linux-gnu-gcc"
    gcc.write_text("#!/bin/sh\nif [ \"$1\" = --version ]; then echo 'fake 1.0'; exit 0; fi\n"
                   "echo \"x.c:(.text+0x1e4): undefined reference to '__atomic_fetch_add_8'\"; exit 1\n")
    lab = load_lab(fake_host)
    for attempt in range(2):
        with pytest.raises(BuildError) as failed:
            ensure_testcase(lab, lab.arches["i386-pae"], lab.testcases["swp_exclusive"])
        log = str(failed.value).rsplit("(log: ", 1)[1].rstrip(")")
        text = open(log).read()
        assert "undefined reference to '__atomic_fetch_add_8'" in text
        assert text.count("undefined reference") == 1, "each build starts a fresh log"


def test_a_wrong_pin_stops_lab_run_with_one_line_before_any_work(fake_host, fake_apt, capsys):
    toml = fake_host / "configs/lab.toml"
    toml.write_text(toml.read_text().replace('dropbear = { suite = "bookworm" }',
                                             'dropbear = { suite = "bookworm", version = "2019.78-2" }'))
    assert main(["run", "--out", str(fake_host / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("lab: error: configs/lab.toml: guest_sources.dropbear: dropbear 2019.78-2 from suite 'bookworm' "
                   "is not in apt's lists; they offer: 2022.83-1+deb12u3 (bookworm), 2022.83-1+deb12u1 (bookworm)")
    assert not (fake_host / "out").exists(), "nothing was started"
    assert fake_apt.calls == []


def test_list_shows_each_guest_source_pin_and_its_version(fake_host, fake_apt, capsys):
    import json
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "  openssh      1:9.2p1-2+deb12u10 (pinned: openssh from bookworm)" in out
    assert main(["list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)["guest_sources"]
    assert listed["dropbear"] == {"pin": "dropbear from bookworm", "version": "2022.83-1+deb12u3",
                                  "suite": "bookworm", "problem": None}
    # A pin that does not resolve is shown with the reason, not a traceback.
    fake_apt.write(offers=[])
    from lab import apt
    apt.resolve.cache_clear()
    assert main(["list"]) == 0
    assert "  busybox      configs/lab.toml: guest_sources.busybox: busybox (newest) from suite 'bookworm' is not in " \
           "apt's lists; they offer: none" in capsys.readouterr().out


def test_a_pinned_version_the_archive_no_longer_has_is_one_line_and_exit_2(fake_host, fake_apt, capsys):
    fake_apt.write(fetch=["404"])
    assert main(["images", "build", "--arch", "i386-pae"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lab: error: configs/lab.toml: guest_sources.busybox: the archive no longer has busybox "
                          "1:1.35.0-4+deb12u1 (pinned: busybox from bookworm; 404 for http://")
    assert len(err.splitlines()) == 1
    assert fake_apt.calls == ["busybox=1:1.35.0-4+deb12u1"], "a 404 is not retried"


def test_extra_args_are_options_split_like_shell_words_never_run(fake_host, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--dry-run", "--extra-args=--kernel '6.1'"]) == 0
    assert len([line for line in capsys.readouterr().out.splitlines() if line.startswith("#")]) == 1
    assert main(["run", "--dry-run", "--extra-args=--arch 'x;touch pwned'"]) == 2
    assert "unknown arch 'x;touch pwned'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["run", "--dry-run", "--extra-args=--kernel 6.1 $(touch pwned2)"])
    assert exc.value.code == 2 and "unrecognized arguments: $(touch pwned2)" in capsys.readouterr().err
    assert not list(tmp_path.glob("pwned*")), "nothing ran"


@pytest.mark.parametrize("extra, complaint", [("--arch 'x", "No closing quotation"),
                                              ("--out=/tmp/elsewhere", "may not set --out"),
                                              ("--shard 1/2", "may not set --shard"),
                                              # issue 27 item 5: prefixes and the = form reach no owned option
                                              ("--ou /tmp/x", "unrecognized arguments: --ou"),
                                              ("--o=/tmp/x", "unrecognized arguments: --o=/tmp/x"),
                                              ("--resu /tmp/x", "unrecognized arguments: --resu"),
                                              ("--resume=/tmp/x", "may not set --resume"),
                                              ("--extra-args=--out=/x", "may not set --extra-args"),
                                              ("--sh 1/2", "unrecognized arguments: --sh")])
def test_bad_extra_args_are_a_usage_error(fake_host, capsys, extra, complaint):
    with pytest.raises(SystemExit) as exc:
        main(["run", "--dry-run", f"--extra-args={extra}"])
    assert exc.value.code == 2 and complaint in capsys.readouterr().err


@pytest.mark.parametrize("option, complaint", [
    (["--timeout-factor", "inf"], "'inf' must be a number above 0 and at most 100"),
    (["--timeout-factor", "nan"], "'nan' must be a number above 0 and at most 100"),
    (["-j", "100000"], "'100000' must be a whole number above 0 and at most 64"),
    (["--repeat", "99999999"], "must be a whole number above 0 and at most 10000"),
])
def test_non_finite_and_unbounded_options_are_refused(fake_host, capsys, option, complaint):
    with pytest.raises(SystemExit) as exc:
        main(["run", "--dry-run", *option])
    assert exc.value.code == 2 and complaint in capsys.readouterr().err


def test_shard_count_is_bounded(fake_host, capsys):
    assert main(["run", "--dry-run", "--shard", "1/99999999"]) == 2
    assert "--shard '1/99999999': N must be between 1 and 1000" in capsys.readouterr().err


def test_list_says_where_each_kernel_comes_from(fake_host, capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    kernels = out.split("kernels:\n")[1].split("testcases:")[0].splitlines()
    assert kernels[0].split(None, 1) == ["6.1", f"tarball {fake_host.parent / 'linux-6.1.tar.xz'}"]
    assert kernels[2].split(None, 1) == ["0.0", "Debian package linux-source-0.0 (installed)"]
    assert "None" not in out.split("kernels:\n")[1]


def test_an_error_mid_run_is_not_called_an_interruption(fake_host, fake_apt, capsys):
    fake_apt.write(fetch=["404"])
    assert main(["run", "--arch", "i386-pae", "--out", str(fake_host / "out")]) == 2
    err = capsys.readouterr().err
    assert "stopped by the error below: guests killed" in err and "interrupted" not in err
    assert err.strip().splitlines()[-1].startswith("lab: error: configs/lab.toml: guest_sources.busybox: the archive")
    assert (fake_host / "out/results.json").exists(), "the reports are written"


def test_a_selection_without_pairs_says_why_and_exits_2(capsys, monkeypatch):
    """Issue 27 item 15: `lab shell` was an internal ValueError, `lab run` ran 0 jobs and exited 0."""
    from conftest import REPO
    monkeypatch.setenv("LAB_ROOT", str(REPO))  # the real configs: Debian's kernels and sparc64
    for argv in (["shell", "--arch", "sparc64", "--kernel", "debian-6.1", "--", "true"],
                 ["run", "--dry-run", "--arch", "sparc64", "--kernel", "debian-6.1"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "internal error" not in err
        assert "nothing to run" in err and "sparc64/debian-6.1: Debian 12 ships no kernel for sparc64" in err


def test_an_arch_named_twice_is_one_job(fake_host, capsys, monkeypatch, tmp_path):
    """Item 17: --arch x86_64,x86_64 ran the same job twice into one console log."""
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--dry-run", "--arch", "x86_64,x86_64", "--kernel", "6.1,6.1"]) == 0
    assert len([line for line in capsys.readouterr().out.splitlines() if line.startswith("#")]) == 1


def test_lab_help_opens_with_a_whole_sentence(capsys):
    import pytest
    from lab.cli import main
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    description = " ".join(out.split("\n\n")[1].split())
    assert description.startswith("Boot Linux kernels") and description.endswith("."), description
    assert "exit status: 0 nothing unexpected" in " ".join(out.split())
