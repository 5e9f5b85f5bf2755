"""The `lab` command. The only place where exceptions become exit codes.

Exit codes: 0 nothing failed; 1 a test FAILed or TIMEOUTed; 2 usage/config
error or ERROR (the lab could not get an answer); 130/143 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shlex
import signal
import socket
import sys
import tempfile
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from lab import config as cfg
from lab import doctor, runfile, shard
from lab.errors import InfraError, LabError, UserError
from lab.images import built_image, ensure_image, planned_initrd, resolved_sources, source_states
from lab.kernels import ensure_kernel, kernel_entry
from lab.progress import Progress
from lab.qemu import ACCELERATORS, kill_all, qemu_argv, running
from lab.remote import client_key
from lab.report import write_reports
from lab.report.compare import compare, compare_dirs, read_run, render_comparison
from lab.report.terminal import render_text
from lab.results import Journal, run_exit_code
from lab.scheduler import Job, PortAllocator, Runner, plan_jobs, prepare
from lab.testcases import ensure_testcase, testcase_entry
from lab.toolchain import compiler_for, qemu_binary

EXIT_USAGE = 2
MAX_PARALLEL = 64  # guests at once: each is a QEMU with its memory
EXIT_SIGINT = 130
EXIT_SIGTERM = 143


class Terminated(Exception):
    """SIGTERM arrived: stop like on Ctrl-C."""


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _selection(lab: cfg.Lab, args) -> tuple[list[str], list[str], list[str]]:
    arches = cfg.pick("arch", args.arch, lab.arches, lab.plan.arches)
    kernels = cfg.pick("kernel", args.kernel, lab.kernels, lab.plan.kernels)
    tests = cfg.pick("testcase", getattr(args, "test", None), lab.testcases, lab.plan.testcases)
    return arches, kernels, tests


def _check_host(lab: cfg.Lab, arches: list[str]) -> None:
    """Fail before any work if a QEMU or compiler is missing (exit 2, naming the package),
    or if a pinned guest source package is not in apt's lists (naming the pin)."""
    for name in arches:
        qemu_binary(lab.arches[name])
        compiler_for(lab.arches[name])
    resolved_sources(lab)


def _out_dir(requested: str | None) -> Path:
    if requested:
        return Path(requested)
    base = Path("results") / time.strftime("%Y%m%d-%H%M%S")
    out, n = base, 1
    while out.exists():
        n += 1
        out = base.with_name(f"{base.name}-{n}")
    return out


def _baseline(args) -> list | None:
    """The baseline run's cells (--baseline DIR), read before any work so a bad path fails fast."""
    if not getattr(args, "baseline", None):
        return None
    return read_run(Path(args.baseline))[1]


def _finish(out: Path, cells: list, meta: dict, baseline: list | None, baseline_dir: str | None) -> None:
    """Write the reports and print the matrix (and what changed since the baseline)."""
    comparison = compare(baseline, cells, baseline_dir or "") if baseline is not None else None
    matrix = write_reports(out, cells, meta, comparison)
    print(render_text(matrix, color=_color_wanted()))
    if comparison:
        print()
        print(render_comparison(comparison))


def _color_wanted() -> bool:
    """Colours on a terminal only; NO_COLOR (no-color.org) turns them off."""
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR")


# --- commands ------------------------------------------------------------------------


def _new_plan(lab: cfg.Lab, args) -> dict:
    """The run's plan; with --shard, "jobs" is this shard's part of the full plan in "plan"."""
    arches, kernels, tests = _selection(lab, args)
    jobs = plan_jobs(lab, arches, kernels, tests, kernels_chosen=bool(args.kernel))
    params = cfg.param_overrides([lab.testcases[t] for t in tests], args.param)
    full = {"arches": arches, "kernels": kernels, "testcases": tests,
            "jobs": [[j.arch.name, j.kernel.name] for j in jobs], "params": params, "repeat": args.repeat}
    run = {**full, "plan": full, "plan_id": shard.plan_id(full), "shard": args.shard or ""}
    if args.shard:
        index, count = shard.parse_shard(args.shard)
        costs = shard.job_costs(Path(args.shard_costs) if args.shard_costs else None)
        run["jobs"] = shard.assign(full["jobs"], count, costs, len(tests))[index - 1]
    return run


def _resumed_plan(lab: cfg.Lab, args, out: Path) -> dict:
    given = [flag for flag in ("arch", "kernel", "test", "out", "shard") if getattr(args, flag)]
    given += ["param"] * bool(args.param) + ["repeat"] * (args.repeat != 1)
    if given:
        raise UserError(f"--resume continues a run as it was planned: drop --{given[0]}")
    plan = runfile.read(out)
    for arch, kernel in plan["jobs"]:
        if arch not in lab.arches or kernel not in lab.kernels:
            raise UserError(f"--resume {out}: the run has {arch}/{kernel}, which configs/ no longer declare")
    unknown = [t for t in plan["testcases"] if t not in lab.testcases]
    if unknown:
        raise UserError(f"--resume {out}: the run has testcase {unknown[0]}, which testcases/ no longer declares")
    return plan


@contextlib.contextmanager
def _run_directory(out: Path, resume: bool) -> Iterator[None]:
    """Hold `out` for this run: a directory that holds a run already is refused unless
    resumed, and a second lab writing into it at the same time is refused."""
    if not resume and (out / runfile.RUN_PLAN).exists():
        raise UserError(f"--out {out}: already holds a run ({runfile.RUN_PLAN}); continue it with "
                        f"--resume {out}, or give another --out")
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".lock", "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "?"
            raise UserError(f"{out}: another lab run (pid {holder}) is writing this directory") from None
        lock.truncate(0)
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        yield


def _jobs_of(lab: cfg.Lab, plan: dict, done: set) -> list:
    """The plan's jobs, each with only the testcases whose cells are not finished yet."""
    jobs = []
    for arch, kernel in plan["jobs"]:
        cases = tuple(lab.testcases[t] for t in plan["testcases"] if (arch, kernel, t) not in done)
        if cases:
            jobs.append(Job(lab.arches[arch], lab.kernels[kernel], cases))
    return jobs


def cmd_run(args) -> int:
    lab = cfg.load_lab()
    out = Path(args.resume) if args.resume else _out_dir(args.out)
    plan = _resumed_plan(lab, args, out) if args.resume else _new_plan(lab, args)
    _check_host(lab, list(dict.fromkeys(arch for arch, _ in plan["jobs"])))
    baseline = _baseline(args)
    journal_path = out / "journal.jsonl"
    done = {c.key for c in Journal.read(journal_path)} if args.resume else set()
    jobs = _jobs_of(lab, plan, done)
    if args.dry_run:
        _, public_key = client_key()
        ports = PortAllocator()
        for job in jobs:
            initrd = planned_initrd(lab, job.arch, public_key) or Path("<initrd: not built yet>")
            kernel = kernel_entry(lab, job.arch, job.kernel).path / "image"
            # A port free now, so the line can be run by hand; a real run picks its own.
            argv = qemu_argv(job.arch, kernel=kernel, initrd=initrd, ssh_port=ports.take(), accel=args.accel,
                             binary=qemu_binary(job.arch))
            print(f"# {job.name}: {', '.join(t.name for t in job.testcases)}")
            print(shlex.join(argv))
        return 0

    # Only now does the run leave anything on disk (--dry-run above creates nothing).
    with _run_directory(out, resume=bool(args.resume)):
        return _run_and_report(lab, args, out, plan, jobs, done, baseline)


def _run_and_report(lab: cfg.Lab, args, out: Path, plan: dict, jobs: list, done: set,
                    baseline: list | None) -> int:
    """Run the jobs and write the reports: of every cell that finished, whatever stops the run."""
    journal = Journal(out / "journal.jsonl")
    progress = Progress(guests=running)
    # A resumed run keeps its run.json (id, start time, plan); a new one writes it first.
    meta = {"run_id": out.name, "started": _now(), "host": socket.gethostname(), **plan,
            "finished": "", "command": sys.argv[1:]}
    if args.resume:
        progress(f"resuming {out}: {len(done)} cells already done")
    else:
        runfile.write(out, meta)
    cells_left = sum(len(j.testcases) for j in jobs)
    progress(f"run {out}: {len(jobs)} jobs ({', '.join(j.name for j in jobs)}), {cells_left} cells, -j {args.jobs}")
    exit_code = None
    crash = None
    runner = None
    try:
        artifacts = prepare(lab, jobs, progress)
        runner = Runner(lab, out, journal, accel=args.accel, progress=progress, params=plan.get("params", {}),
                        repeat=plan.get("repeat", 1), timeout_factor=args.timeout_factor, retries=args.retries,
                        on_cell=progress.cell_done)
        progress.start_cells(cells_left)
        runner.run(jobs, artifacts, args.jobs)
    except KeyboardInterrupt:
        exit_code = EXIT_SIGINT
    except Terminated:
        exit_code = EXIT_SIGTERM
    except Exception:  # noqa: BLE001 - a lab bug: still report every finished cell, then say where the traceback is
        crash = _save_traceback(out)
        exit_code = EXIT_USAGE
    finally:
        progress.close()
        if runner:
            runner.stop.set()
        kill_all(closing=exit_code is not None)
        if exit_code is not None:
            progress("interrupted: guests killed; writing reports for the finished cells")
    cells = Journal.read(journal.path)
    meta["finished"] = _now()
    runfile.write(out, meta)
    _finish(out, cells, meta, baseline, args.baseline)
    print(f"\nresults: {out}/ (matrix.html, junit.xml, results.json, journal.jsonl, logs/)")
    if crash:
        print(f"lab: internal error: {crash[0]} (traceback: {crash[1]}); the reports above have every "
              f"cell that finished", file=sys.stderr)
    return exit_code if exit_code is not None else run_exit_code(cells)


def _save_traceback(directory: Path | None = None) -> tuple[str, Path]:
    """The current exception's one-line summary, and a file with its full traceback
    (in `directory` when given and writable, else a temporary file)."""
    summary = "".join(traceback.format_exception_only(*sys.exc_info()[:2])).strip().splitlines()[-1]
    text = traceback.format_exc()
    try:
        if directory is None:
            raise OSError("no run directory")
        path = directory / "lab-traceback.txt"
        path.write_text(text)
    except OSError:
        fd, name = tempfile.mkstemp(prefix="lab-traceback-", suffix=".txt")
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        path = Path(name)
    return summary, path


def cmd_merge(args) -> int:
    out = Path(args.out)
    baseline = _baseline(args)
    meta, cells, problems = shard.merge([Path(d) for d in args.dirs], out)
    _finish(out, cells, meta, baseline, args.baseline)
    # Kept next to the reports, so a pipeline (and a reader of its artifacts) sees the gap.
    problems_file = out / "merge-problems.txt"
    problems_file.unlink(missing_ok=True)
    if problems:
        problems_file.write_text("".join(f"{p}\n" for p in problems))
    for problem in problems:
        print(f"lab merge: {problem}", file=sys.stderr)
    print(f"\nmerged {len(args.dirs)} runs into {out}/: {len(cells)} cells, {len(problems)} problems")
    return EXIT_USAGE if problems else run_exit_code(cells)


def cmd_report(args) -> int:
    out = Path(args.dir)
    baseline = _baseline(args)
    meta, cells = read_run(out)
    _finish(out, cells, meta, baseline, args.baseline)
    return run_exit_code(cells)


def cmd_compare(args) -> int:
    """Exit 1 when a cell newly fails or errors, so a nightly job can flag regressions."""
    comparison = compare_dirs(Path(args.old), Path(args.new))
    print(render_comparison(comparison))
    return 1 if comparison.regressed else 0


def cmd_list(args) -> int:
    lab = cfg.load_lab()
    built: dict[str, dict] = {}
    for name, arch in lab.arches.items():
        entry = {"image": None, "kernels": {}, "testcases": {}}
        try:
            image = built_image(lab, arch)
            entry["image"] = str(image) if image else None
            for tname, case in lab.testcases.items():
                t = testcase_entry(lab, arch, case)
                entry["testcases"][tname] = str(t.path / tname) if t.meta() else None
            for kname, source in lab.kernels.items():
                k = kernel_entry(lab, arch, source)
                meta = k.meta()
                entry["kernels"][kname] = (str(k.path / "image") if meta["ok"] else f"build failed: {meta['error']}") if meta else None
        except UserError as exc:
            entry["missing"] = str(exc)
        built[name] = entry
    data = {
        "plan": {"arches": list(lab.plan.arches), "kernels": list(lab.plan.kernels),
                 "testcases": list(lab.plan.testcases)},
        "arches": {n: {"description": a.description, "qemu": a.qemu.binary, "toolchain": a.toolchain.triple,
                       "built": built[n]} for n, a in lab.arches.items()},
        "kernels": {n: {"source": k.origin, "tarball": k.tarball, "package": k.debian_package}
                    for n, k in lab.kernels.items()},
        "guest_sources": _guest_sources(lab),
        "testcases": {n: {"description": t.description, "timeout_s": t.timeout_s, "needs": list(t.needs),
                          "kind": t.kind,
                          "params": {p.name: {"type": p.type, "default": p.default, "description": p.description}
                                     for p in t.params.values()}}
                      for n, t in lab.testcases.items()},
    }
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    print("arches:")
    for n, a in data["arches"].items():
        image = a["built"]["image"] or "not built"
        print(f"  {n:12} {a['description']} (image: {image})")
        for k, path in a["built"]["kernels"].items():
            print(f"  {'':12}   kernel {k}: {path or 'not built'}")
        for t, path in a["built"]["testcases"].items():
            print(f"  {'':12}   testcase {t}: {path or 'not built'}")
    print("guest sources (Debian source packages of the guest image, as pinned in configs/lab.toml):")
    for n, g in data["guest_sources"].items():
        print(f"  {n:12} {g['version'] or g['problem']} (pinned: {g['pin']})")
    print("kernels:")
    for n, k in data["kernels"].items():
        print(f"  {n:12} {k['source']}")
    print("testcases:")
    for n, t in data["testcases"].items():
        print(f"  {n:12} {t['description']}")
        for p, spec in t["params"].items():
            print(f"  {'':12}   --param {p}=<{spec['type']}> (default {spec['default']}): {spec['description']}")
    return 0


def _guest_sources(lab: cfg.Lab) -> dict[str, dict]:
    """Each guest source package: its pin, the version it resolves to now, or why it does not."""
    out = {}
    for name, state in source_states(lab).items():
        resolved = not isinstance(state, UserError)
        out[name] = {"pin": str(lab.guest_sources[name]), "version": state.version if resolved else None,
                     "suite": state.suite if resolved else None, "problem": None if resolved else str(state)}
    return out


def cmd_doctor(args) -> int:
    lab = cfg.load_lab()
    arches = cfg.pick("arch", args.arch, lab.arches, lab.plan.arches)
    kernels = cfg.pick("kernel", args.kernel, lab.kernels, lab.plan.kernels)
    results = doctor.checks(lab, arches, kernels)
    print(doctor.render(results))
    return 0 if all(c.ok for c in results) else 1


def cmd_kernels_build(args) -> int:
    lab = cfg.load_lab()
    arches, kernels, _ = _selection(lab, args)
    progress = Progress()
    for a in arches:
        for k in kernels:
            art = ensure_kernel(lab, lab.arches[a], lab.kernels[k], progress)
            print(f"{a}/{k}: {art.version}: {art.image}")
    return 0


def cmd_images_build(args) -> int:
    lab = cfg.load_lab()
    arches = cfg.pick("arch", args.arch, lab.arches, lab.plan.arches)
    progress = Progress()
    for a in arches:
        image = ensure_image(lab, lab.arches[a], progress)
        print(f"{a}: {image.initramfs} (host key {image.host_key.split()[0]})")
    return 0


def cmd_testcases_build(args) -> int:
    lab = cfg.load_lab()
    arches = cfg.pick("arch", args.arch, lab.arches, lab.plan.arches)
    tests = cfg.pick("testcase", args.test, lab.testcases, lab.plan.testcases)
    for a in arches:
        for t in tests:
            binary = ensure_testcase(lab, lab.arches[a], lab.testcases[t])
            print(f"{a}/{t}: {binary.path}")
    return 0


# --- argument parsing ----------------------------------------------------------------


def _up_to(maximum: float, convert: type = int):
    """An argparse type: an int (or float) above 0 and at most `maximum`; nan and inf never pass."""
    kind = "whole number" if convert is int else "number"

    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {kind}") from None
        if not 0 < value <= maximum:  # also false for nan; inf is above any maximum
            raise argparse.ArgumentTypeError(f"{text!r} must be a {kind} above 0 and at most {maximum:g}")
        return value
    return parse


def _baseline_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--baseline", metavar="DIR",
                        help="an earlier run directory: matrix.html and the output open with what changed since")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lab", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def selection(p, test: bool = True) -> None:
        p.add_argument("--arch", help="comma-separated arches (default: the plan's)")
        p.add_argument("--kernel", help="comma-separated kernels (default: the plan's)")
        if test:
            p.add_argument("--test", help="comma-separated testcases (default: the plan's)")

    run = sub.add_parser("run", help="build what is missing, boot, test, report")
    selection(run)
    run.add_argument("-j", "--jobs", type=_up_to(MAX_PARALLEL), default=min(os.cpu_count() or 1, MAX_PARALLEL),
                     help="guests to run at once (default: number of cores)")
    run.add_argument("--out", help="result directory (default: results/<timestamp>)")
    run.add_argument("--shard", metavar="I/N",
                     help="run only this agent's deterministic share of the plan (see lab merge)")
    run.add_argument("--shard-costs", metavar="RESULTS",
                     help="an earlier results.json (or its directory) whose job durations balance the shards")
    run.add_argument("--resume", metavar="DIR",
                     help="continue an interrupted run: cells already in DIR/journal.jsonl are not run again")
    run.add_argument("--dry-run", action="store_true", help="print the QEMU command lines, start nothing")
    run.add_argument("--accel", choices=ACCELERATORS, default="tcg", help="QEMU accelerator (default: tcg)")
    run.add_argument("--timeout-factor", type=_up_to(100.0, float), default=1.0, metavar="F",
                     help="multiply boot, SSH and test deadlines by F (slow or loaded hosts)")
    run.add_argument("--retries", type=int, default=1, choices=range(0, 10), metavar="N",
                     help="retry an infrastructure ERROR (boot, SSH, guest crash) N times (default 1); "
                          "FAIL, SKIP and TIMEOUT are never retried")
    run.add_argument("--repeat", type=_up_to(10000), default=1, metavar="N",
                     help="run each cell N times (racy tests); reports show the rate, e.g. FAIL 2/10")
    run.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                     help="set a testcase parameter (see `lab list`), e.g. --param duration=120")
    run.add_argument("--extra-args", metavar="STRING",
                     help="more of these options in one string (a CI parameter such as Jenkins' LAB_ARGS), "
                          "split like POSIX shell words but never expanded or run")
    _baseline_option(run)
    run.set_defaults(func=cmd_run)

    mrg = sub.add_parser("merge", help="combine the result directories of shards into one run")
    mrg.add_argument("dirs", nargs="+", metavar="DIR")
    mrg.add_argument("--out", required=True, help="the merged result directory")
    _baseline_option(mrg)
    mrg.set_defaults(func=cmd_merge)

    report = sub.add_parser("report", help="re-render the reports of a run directory from its journal")
    report.add_argument("dir")
    _baseline_option(report)
    report.set_defaults(func=cmd_report)

    cmp = sub.add_parser("compare", help="what changed between two runs (exit 1 if a cell newly fails or errors)")
    cmp.add_argument("old", metavar="OLD", help="the earlier run directory")
    cmp.add_argument("new", metavar="NEW", help="the later run directory")
    cmp.set_defaults(func=cmd_compare)

    lst = sub.add_parser("list", help="arches, kernels, testcases and what is built")
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(func=cmd_list)

    doc = sub.add_parser("doctor", help="what this host lacks for the plan, and the package that provides it")
    selection(doc, test=False)
    doc.set_defaults(func=cmd_doctor)

    kernels = sub.add_parser("kernels", help="kernel builds").add_subparsers(dest="action", required=True)
    kb = kernels.add_parser("build", help="build kernels (cached)")
    selection(kb, test=False)
    kb.set_defaults(func=cmd_kernels_build)

    images = sub.add_parser("images", help="guest images").add_subparsers(dest="action", required=True)
    ib = images.add_parser("build", help="build guest images (cached)")
    ib.add_argument("--arch", help="comma-separated arches (default: the plan's)")
    ib.set_defaults(func=cmd_images_build)

    tcs = sub.add_parser("testcases", help="testcase binaries").add_subparsers(dest="action", required=True)
    tb = tcs.add_parser("build", help="cross-compile testcases (cached)")
    tb.add_argument("--arch", help="comma-separated arches (default: the plan's)")
    tb.add_argument("--test", help="comma-separated testcases (default: the plan's)")
    tb.set_defaults(func=cmd_testcases_build)
    return parser


def _on_sigterm(signum, frame):
    raise Terminated()


# Options a CI parameter may not set: the pipeline owns where results go.
_NOT_EXTRA = ("--extra-args", "--out", "--shard", "--resume")


def _with_extra_args(parser: argparse.ArgumentParser, argv: list[str], args):
    """`lab run --extra-args STRING`: STRING's words parsed as if given on the command line."""
    try:
        extra = shlex.split(args.extra_args)
    except ValueError as exc:
        parser.error(f"--extra-args {args.extra_args!r}: {exc}")
    owned = [word for word in extra if word.split("=", 1)[0] in _NOT_EXTRA]
    if owned:
        parser.error(f"--extra-args may not set {owned[0].split('=', 1)[0]}: the pipeline sets it")
    return parser.parse_args([*argv, *extra])


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    if getattr(args, "extra_args", None):
        args = _with_extra_args(parser, argv, args)
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return args.func(args)
    except UserError as exc:
        print(f"lab: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except InfraError as exc:
        print(f"lab: ERROR: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except LabError as exc:
        print(f"lab: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        kill_all()
        return EXIT_SIGINT
    except Terminated:
        kill_all()
        return EXIT_SIGTERM
    except Exception:  # noqa: BLE001 - one line and exit 2, never a traceback and never 1 ("a test failed")
        summary, path = _save_traceback()
        print(f"lab: internal error: {summary} (traceback: {path})", file=sys.stderr)
        return EXIT_USAGE
    finally:
        kill_all()
        signal.signal(signal.SIGTERM, previous)
