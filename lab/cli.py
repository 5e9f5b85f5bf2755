"""The `lab` command: parses arguments, calls the modules that do the work, and
turns exceptions into exit codes through the one table in lab.exitcodes
(0 nothing failed; 1 a test FAILed or TIMEOUTed; 2 usage/config error or ERROR;
130/143 interrupted)."""

from __future__ import annotations

DESCRIPTION = ("Boot Linux kernels for many architectures under QEMU, run memory-management testcases in "
               "the guests, and report PASS/FAIL per arch, kernel and testcase.")
EXIT_STATUS_HELP = ("exit status: 0 nothing unexpected; 1 a test FAILed, XPASSed or TIMEOUTed; 2 usage, config "
                    "or input error, or an ERROR; 124 `lab shell -- CMD` past --timeout; 129/130/143 hung up, "
                    "interrupted, terminated")

import argparse
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

from lab import config as cfg
from lab import schema
from lab import cache_admin, doctor, exitcodes, history, merge, plan, rundir
from lab.artifacts import prepare
from lab.cache import release_holds
from lab.errors import ERROR_CODES, UserError
from lab.exitcodes import HungUp, Terminated
from lab.guest import PortAllocator
from lab.hosttools import compiler_for, qemu_binary
from lab.images import built_image, ensure_image, planned_initrd, resolved_sources, source_states
from lab.kernel_trees import tree_source
from lab.kernel_images import image_source
from lab import kernels
from lab.kernels import ensure_kernel, planned_image
from lab.progress import Progress
from lab.qemu import ACCELERATORS, kill_all, qemu_argv, qemu_user, running
from lab.ssh import client_key
from lab.report import write_reports
from lab.report.html import write_history
from lab.report.compare import compare, compare_dirs, render_comparison
from lab.report.terminal import render_text
from lab.results import run_exit_code
from lab.runner import Runner
from lab.shell import ShellRequest, open_shell
from lab.testcases import ensure_testcase, testcase_entry

MAX_PARALLEL = 64  # guests at once: each is a QEMU with its memory


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _selection(lab: schema.Lab, args) -> tuple[list[str], list[str], list[str]]:
    return plan.selection(lab, args.arch, args.kernel, getattr(args, "test", None))


def _check_host(lab: schema.Lab, arches: list[str]) -> None:
    """Fail before any work if a QEMU or compiler is missing (exit 2, naming the package),
    the user QEMU runs as is (when root), or a pinned guest source package is not in
    apt's lists (naming the pin)."""
    qemu_user()
    for name in arches:
        qemu_binary(lab.arches[name])
        compiler_for(lab.arches[name])
    resolved_sources(lab)


def _out_dir(requested: str | None, prefix: str = "") -> Path:
    if requested:
        return Path(requested)
    base = Path("results") / (prefix + time.strftime("%Y%m%d-%H%M%S"))
    out, n = base, 1
    while out.exists():
        n += 1
        out = base.with_name(f"{base.name}-{n}")
    return out


def _baseline(args) -> list | None:
    """The baseline run's cells (--baseline DIR), read before any work so a bad path fails fast."""
    if not getattr(args, "baseline", None):
        return None
    return rundir.read_run(Path(args.baseline))[1]


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


def _given_kernel(lab: schema.Lab, args) -> tuple[schema.Lab, str | None, dict]:
    """--tree PATH or --kernel-image PATH adds that kernel (checked) as the run's only one;
    returns the lab, the kernel selection, and how to find that kernel again (for run.json,
    so that --resume can)."""
    if args.fragment and not args.tree:
        raise UserError("--fragment adds to the fragments of a --tree build: give --tree too")
    if args.kernel_config and not args.kernel_image:
        raise UserError("--kernel-config goes with --kernel-image")
    given = [flag for flag in ("kernel", "tree", "kernel_image") if getattr(args, flag)]
    if len(given) > 1:
        options = " and ".join("--" + flag.replace("_", "-") for flag in given)
        raise UserError(f"{options} each say which kernel to boot: give one of them")
    if args.tree:
        recorded = {"tree": _absolute(args.tree), "fragments": [_absolute(f) for f in args.fragment]}
    elif args.kernel_image:
        recorded = {"kernel_image": _absolute(args.kernel_image), "kernel_config": _absolute(args.kernel_config),
                    "arch": _one_arch(lab, args, "--kernel-image").name}
    else:
        return lab, args.kernel, {}
    source = _source_of(lab, recorded, "")
    return lab.with_kernel(source), source.name, recorded


def _absolute(path: str | None) -> str:
    """A path as run.json records it: absolute, since --resume may run from elsewhere."""
    return str(Path(path).expanduser().absolute()) if path else ""


def _source_of(lab: schema.Lab, recorded: dict, resumed: str) -> schema.KernelSource:
    """The kernel a --tree or --kernel-image run named (as run.json records it)."""
    if "tree" in recorded:
        return tree_source(Path(recorded["tree"]), [Path(f) for f in recorded["fragments"]])
    if recorded["arch"] not in lab.arches:
        raise UserError(f"--resume {resumed}: run.json's given_kernel.arch {recorded['arch']!r} is not declared")
    config = recorded["kernel_config"]
    return image_source(Path(recorded["kernel_image"]), lab.arches[recorded["arch"]], Path(config) if config else None)


def _one_arch(lab: schema.Lab, args, option: str) -> schema.Arch:
    """The single --arch an option needs (an image, a shell): UserError naming the option otherwise."""
    arches = cfg.pick("arch", args.arch, lab.arches, ()) if args.arch else []
    if len(arches) != 1:
        raise UserError(f"{option} needs exactly one --arch (got {', '.join(arches) or 'none'})")
    return lab.arches[arches[0]]


def _plan_request(args, kernel: str | None) -> plan.Request:
    return plan.Request(arch=args.arch, kernel=kernel, test=args.test, params=tuple(args.param),
                        repeat=args.repeat, shard=args.shard,
                        shard_costs=Path(args.shard_costs) if args.shard_costs else None)


def _resumed_plan(lab: schema.Lab, args, out: Path) -> tuple[schema.Lab, dict]:
    """The plan in `out`, with the kernel of a --tree or --kernel-image run found again
    where run.json says (and refused if it is no longer the kernel the run had)."""
    given = [flag for flag in ("arch", "kernel", "test", "out", "shard", "tree", "kernel_image")
             if getattr(args, flag)]
    given += ["param"] * bool(args.param) + ["repeat"] * (args.repeat != 1)
    if given:
        raise UserError(f"--resume continues a run as it was planned: drop --{given[0].replace('_', '-')}")
    meta = rundir.read(out)
    recorded = rundir.given_kernel(meta, out)
    if recorded:
        source = _source_of(lab, recorded, str(out))
        planned = {kernel for _, kernel in meta["jobs"]}
        if planned != {source.name}:
            raise UserError(f"--resume {out}: the run's kernel was {', '.join(sorted(planned))}; "
                            f"{recorded.get('tree') or recorded.get('kernel_image')} is {source.name} now "
                            f"(changed since): start a new run")
        lab = lab.with_kernel(source)
    return lab, plan.resumed_plan(lab, out)


def cmd_run(args) -> int:
    lab = cfg.load_lab()
    out = Path(args.resume) if args.resume else _out_dir(args.out)
    if args.resume:
        lab, run_plan = _resumed_plan(lab, args, out)
    else:
        lab, kernel, recorded = _given_kernel(lab, args)
        run_plan = plan.new_plan(lab, _plan_request(args, kernel))
        if recorded:  # found again by --resume
            run_plan["given_kernel"] = recorded
    _check_host(lab, list(dict.fromkeys(arch for arch, _ in run_plan["jobs"])))
    baseline = _baseline(args)
    done = {c.key for c in rundir.cells(out)} if args.resume else set()
    jobs = plan.jobs_of(lab, run_plan, done)
    if args.dry_run:
        return _dry_run(lab, args, jobs)
    # Only now does the run leave anything on disk (--dry-run above creates nothing).
    with rundir.hold(out, resume=bool(args.resume)):
        return _run_and_report(lab, args, out, run_plan, jobs, done, baseline)


def _dry_run(lab: schema.Lab, args, jobs: list[plan.Job]) -> int:
    """Print each job's QEMU command line; build and start nothing."""
    _, public_key = client_key()
    ports, run_as = PortAllocator(), qemu_user()
    for job in jobs:
        initrd = planned_initrd(lab, job.arch, public_key) or Path("<initrd: not built yet>")
        kernel = planned_image(lab, job.arch, job.kernel)
        # A port free now, so the line can be run by hand; a real run picks its own.
        argv = qemu_argv(job.arch, kernel=kernel, initrd=initrd, ssh_port=ports.take(), accel=args.accel,
                         binary=qemu_binary(job.arch), run_as=run_as)
        print(f"# {job.name}: {', '.join(t.name for t in job.testcases)}")
        print(shlex.join(argv))
    return exitcodes.OK


def _run_and_report(lab: schema.Lab, args, out: Path, run_plan: dict, jobs: list[plan.Job], done: set,
                    baseline: list | None) -> int:
    """Run the jobs and write the reports: of every cell that finished, whatever stops the run."""
    progress = Progress(guests=running)
    # A resumed run keeps its run.json (id, start time, plan); a new one writes it first.
    meta = {"run_id": out.name, "started": _now(), "host": socket.gethostname(), **run_plan,
            "finished": "", "command": sys.argv[1:]}
    if args.resume:
        progress(f"resuming {out}: {len(done)} cells already done")
    else:
        rundir.write(out, meta)
    cells_left = sum(len(j.testcases) for j in jobs)
    progress(f"run {out}: {len(jobs)} jobs ({', '.join(j.name for j in jobs)}), {cells_left} cells, -j {args.jobs}")
    stopped = None  # (exit code, what to say after the reports) when the run did not end by itself
    signalled = False  # stopped by Ctrl-C, SIGTERM or SIGHUP rather than by an error
    runner = None
    try:
        artifacts = prepare(lab, jobs, progress)
        runner = Runner(lab, out, rundir.journal(out), accel=args.accel, progress=progress,
                        params=run_plan.get("params", {}), repeat=run_plan.get("repeat", 1),
                        timeout_factor=args.timeout_factor, retries=args.retries, on_cell=progress.cell_done)
        progress.start_cells(cells_left)
        runner.run(jobs, artifacts, args.jobs)
    except BaseException as exc:  # noqa: BLE001 - whatever stops the run, every finished cell is reported
        stopped, signalled = _stopped_by(exc, out), isinstance(exc, (KeyboardInterrupt, Terminated))
    finally:
        progress.close()
        if runner:
            runner.stop.set()
        kill_all(closing=stopped is not None)
        if stopped is not None:
            why = "interrupted" if signalled else "stopped by the error below"  # printed after the reports
            progress(f"{why}: guests killed; writing reports for the finished cells")
    cells = rundir.cells(out)
    meta["finished"] = _now()
    rundir.write(out, meta)
    _finish(out, cells, meta, baseline, args.baseline)
    print(f"\nresults: {out}/ (matrix.html, junit.xml, results.json, journal.jsonl, logs/)")
    if stopped is None:
        return run_exit_code(cells)
    if stopped[1]:
        print(f"{stopped[1]}; the reports above have every cell that finished", file=sys.stderr)
    return stopped[0]


def _stopped_by(exc: BaseException, out: Path) -> tuple[int, str]:
    """The exit code for what stopped a run, and what to tell the user (nothing for a signal)."""
    if not isinstance(exc, (Exception, KeyboardInterrupt, Terminated)):
        raise exc  # SystemExit and the like are not the run's business
    return _outcome(exc, traceback_dir=out)


def _save_traceback(directory: Path | None = None) -> tuple[str, Path]:
    """The current exception's one-line summary, and a file with its full traceback
    (in `directory` when given and writable, else a temporary file)."""
    summary = "".join(traceback.format_exception_only(*sys.exc_info()[:2])).strip().splitlines()[-1]
    text = traceback.format_exc()
    try:
        if directory is None:
            raise OSError("no run directory")
        path = directory / rundir.TRACEBACK
        path.write_text(text)
    except OSError:
        fd, name = tempfile.mkstemp(prefix="lab-traceback-", suffix=".txt")
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        path = Path(name)
    return summary, path


def cmd_shell(args) -> int:
    """Boot one guest and hand it over: a shell, one command (-- CMD ARGS) or the console."""
    lab = cfg.load_lab()
    arch = _one_arch(lab, args, "lab shell")
    lab, kernel, _ = _given_kernel(lab, args)
    kernels = cfg.pick("kernel", kernel, lab.kernels, ()) if kernel else [plan.newest_kernel(lab, arch.name)]
    if len(kernels) != 1:
        raise UserError(f"lab shell boots one kernel (got --kernel {kernel})")
    tests = cfg.pick("testcase", args.test, lab.testcases, lab.plan.testcases)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if command and args.console:
        raise UserError("--console attaches to the serial console: it runs no command (drop -- CMD or --console)")
    _check_host(lab, [arch.name])
    jobs = plan.plan_jobs(lab, [arch.name], kernels, tests, kernels_chosen=True)
    if not jobs:
        raise plan.no_pairs(lab, [arch.name], kernels)
    job, = jobs
    work = _out_dir(args.out, prefix="shell-")
    request = ShellRequest(job=job, work=work, command=tuple(command), console=args.console,
                           command_timeout_s=args.timeout, accel=args.accel, timeout_factor=args.timeout_factor)
    progress = Progress(stream=sys.stderr)
    try:
        return open_shell(lab, request, progress)
    finally:
        progress.close()


def cmd_merge(args) -> int:
    out = Path(args.out)
    baseline = _baseline(args)
    meta, cells, problems = merge.merge([Path(d) for d in args.dirs], out)
    _finish(out, cells, meta, baseline, args.baseline)
    for problem in problems:
        print(f"lab merge: {problem}", file=sys.stderr)
    print(f"\nmerged {len(args.dirs)} runs into {out}/: {len(cells)} cells, {len(problems)} problems")
    return exitcodes.PROBLEM if problems else run_exit_code(cells)


def cmd_report(args) -> int:
    out = Path(args.dir)
    baseline = _baseline(args)
    meta, cells = rundir.read_run(out)
    _finish(out, cells, meta, baseline, args.baseline)
    return run_exit_code(cells)


def cmd_compare(args) -> int:
    """Exit 1 when a cell newly fails or errors, so a nightly job can flag regressions."""
    comparison = compare_dirs(Path(args.old), Path(args.new))
    print(render_comparison(comparison))
    return exitcodes.FINDING if comparison.regressed else exitcodes.OK


def cmd_history(args) -> int:
    """history.html and a line per cell over the nights given (the newest night's
    directory unless --out); racy testcases (kind = "race") get their failure rate."""
    lab = cfg.load_lab()
    racy = frozenset(name for name, case in lab.testcases.items() if case.kind == "race")
    nights = history.read_nights([Path(d) for d in args.dirs])
    histories = history.cell_histories(nights, racy)
    page = write_history(Path(args.out) if args.out else Path(nights[-1].directory), nights, histories)
    print(history.render_history(nights, histories))
    print(f"\nhistory: {page}")
    return exitcodes.OK


def cmd_cache(args) -> int:
    """What the cache holds: an entry per line, what the plan needs, what prune would free."""
    needed, unjudged = cache_admin.needed_keys(cfg.load_lab())
    entries = cache_admin.list_entries(needed)
    print(f"{'kind':<15} {'key':<20} {'size':>10}  {'last used':<16} {'plan':<6} what")
    for e in sorted(entries, key=lambda e: (e.kind, -e.last_used)):
        used = time.strftime("%Y-%m-%d %H:%M", time.localtime(e.last_used))
        print(f"{e.kind:<15} {e.key:<20} {cache_admin.human(e.size):>10}  {used:<16} "
              f"{'needs' if e.needed else '-':<6} {e.what}")
    other = cache_admin.other_usage()
    for name, size in other:
        print(f"{name:<15} {'':<20} {cache_admin.human(size):>10}  (never pruned)")
    for note in unjudged:
        print(f"note: {note}")
    total = sum(e.size for e in entries) + sum(size for _, size in other)
    spare = sum(e.size for e in entries if not e.needed)
    print(f"\n{cache_admin.cache_root()}: {cache_admin.human(total)} in {len(entries)} entries; the plan needs "
          f"{cache_admin.human(total - spare)}; `lab cache prune` would free {cache_admin.human(spare)}")
    return exitcodes.OK


def cmd_cache_prune(args) -> int:
    """Remove what the default plan does not need, least recently used first, down to --max-size."""
    max_size = cache_admin.parse_size(args.max_size) if args.max_size else None
    if max_size is not None and (size := cache_admin.disk_usage(cache_admin.cache_root())) <= max_size:
        print(f"cache: {cache_admin.human(size)}, at most --max-size {args.max_size}: nothing to prune")
        return exitcodes.OK
    needed, unjudged = cache_admin.needed_keys(cfg.load_lab())
    for note in unjudged:
        print(f"note: {note}")
    entries = cache_admin.list_entries(needed)
    other = sum(size for _, size in cache_admin.other_usage())
    result = cache_admin.prune(entries, other, max_size, progress=print)
    for entry in result.held:
        print(f"kept {entry.kind}/{entry.key}: a running lab holds it")
    print(f"cache: {cache_admin.human(result.size_before)} -> {cache_admin.human(result.size_after)} "
          f"({len(result.removed)} entries removed)")
    if max_size is not None and result.size_after > max_size:
        print(f"lab cache prune: still {cache_admin.human(result.size_after - max_size)} over --max-size "
              f"{args.max_size}: the plan needs the rest", file=sys.stderr)
    return exitcodes.OK


def _built(lab: schema.Lab, arch: schema.Arch) -> dict:
    """What the cache holds for one arch: image, kernels (with their ccache counts), testcases."""
    entry: dict = {"image": None, "kernels": {}, "kernel_ccache": {}, "testcases": {}}
    try:
        image = built_image(lab, arch)
        entry["image"] = str(image) if image else None
        for tname, case in lab.testcases.items():
            t = testcase_entry(lab, arch, case)
            entry["testcases"][tname] = str(t.path / tname) if t.meta() else None
        for kname, source in lab.kernels.items():
            # hits and misses of the build that made it (none for kernels built before ccache)
            entry["kernels"][kname], entry["kernel_ccache"][kname] = kernels.listing(lab, arch, source)
    except UserError as exc:
        entry["missing"] = str(exc)
    return entry


def cmd_list(args) -> int:
    lab = cfg.load_lab()
    built = {name: _built(lab, arch) for name, arch in lab.arches.items()}
    data = {
        "plan": {"arches": list(lab.plan.arches), "kernels": list(lab.plan.kernels),
                 "testcases": list(lab.plan.testcases)},
        "arches": {n: {"description": a.description, "qemu": a.qemu.binary, "toolchain": a.toolchain.triple,
                       "built": built[n]} for n, a in lab.arches.items()},
        "kernels": {n: {"source": kernels.describe(k), "kind": type(k.kind).__name__}
                    for n, k in lab.kernels.items()},
        "guest_sources": _guest_sources(lab),
        "testcases": {n: {"description": t.description, "timeout_s": t.timeout_s, "needs": list(t.needs),
                          "kind": t.kind,
                          "params": {p.name: {"type": p.type, "default": p.default, "description": p.description}
                                     for p in t.params.values()}}
                      for n, t in lab.testcases.items()},
        "error_codes": dict(ERROR_CODES),
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
    print("error codes (of an ERROR cell; what a known ERROR in configs/lab.toml names with error = \"CODE\"):")
    for code, meaning in ERROR_CODES.items():
        print(f"  {code:22} {meaning}")
    return 0


def _guest_sources(lab: schema.Lab) -> dict[str, dict]:
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


class _Parser(argparse.ArgumentParser):
    """argparse without prefix matching: `--ou` is not `--out`. An option is its whole
    name, so what a CI parameter may not set cannot be reached by abbreviation.
    Subcommands inherit the class (argparse builds them with type(parent))."""

    def __init__(self, *args, **kwargs):
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="lab", description=DESCRIPTION, epilog=EXIT_STATUS_HELP)
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
    run.add_argument("--tree", metavar="PATH",
                     help="build and boot the kernel tree at PATH as it is on disk (uncommitted edits included), "
                          "incrementally, instead of the plan's kernels")
    run.add_argument("--fragment", action="append", default=[], metavar="FILE",
                     help="with --tree: one more config fragment after the arch's (repeatable)")
    run.add_argument("--kernel-image", metavar="PATH",
                     help="boot this built kernel image (bzImage, Image, zImage or vmlinux, as the arch's QEMU "
                          "machine takes it) on the one --arch, instead of the plan's kernels")
    run.add_argument("--kernel-config", metavar="FILE",
                     help="with --kernel-image: its .config, checked against the arch's fragments before it boots "
                          "(default: a .config found beside the image)")
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

    sh = sub.add_parser("shell", help="boot one guest with the testcases in it and open a shell there "
                                      "(or run one command: lab shell --arch A -- CMD ARGS)")
    sh.add_argument("--arch", required=True, help="the arch to boot (one)")
    sh.add_argument("--kernel", help="the kernel to boot (one; default: the plan's newest for the arch)")
    sh.add_argument("--test", help="comma-separated testcases whose binaries go into the guest (default: the plan's)")
    sh.add_argument("--tree", metavar="PATH", help="build and boot this kernel tree, as with lab run --tree")
    sh.add_argument("--fragment", action="append", default=[], metavar="FILE", help="with --tree: one more fragment")
    sh.add_argument("--kernel-image", metavar="PATH", help="boot this built kernel image, as with lab run")
    sh.add_argument("--kernel-config", metavar="FILE", help="with --kernel-image: its .config, checked first")
    sh.add_argument("--console", action="store_true",
                    help="attach to the serial console instead of SSH (Ctrl-] leaves)")
    sh.add_argument("--timeout", type=_up_to(7 * 86400.0, float), default=3600.0, metavar="S",
                    help="with -- CMD: stop waiting for CMD after S seconds (exit 124; default 3600)")
    sh.add_argument("--out", help="where the console log goes (default: results/shell-<timestamp>)")
    sh.add_argument("--accel", choices=ACCELERATORS, default="tcg", help="QEMU accelerator (default: tcg)")
    sh.add_argument("--timeout-factor", type=_up_to(100.0, float), default=1.0, metavar="F",
                    help="multiply the boot and SSH deadlines by F")
    sh.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD ARGS",
                    help="run this in the guest instead of a shell; lab exits with its status")
    sh.set_defaults(func=cmd_shell)

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

    hst = sub.add_parser("history", help="each cell's status over several nights (run directories, any order): "
                                         "history.html and a line per cell")
    hst.add_argument("dirs", nargs="+", metavar="DIR")
    hst.add_argument("--out", help="where history.html goes (default: the newest night's directory)")
    hst.set_defaults(func=cmd_history)

    cache = sub.add_parser("cache", help="what the cache holds (kind, key, size, last used, whether the plan "
                                         "needs it); `lab cache prune` removes what it does not")
    cache.set_defaults(func=cmd_cache)
    cache_actions = cache.add_subparsers(dest="action", metavar="ACTION")
    prune = cache_actions.add_parser("prune", help="remove entries the default plan does not need, least "
                                                   "recently used first, never one a running lab holds")
    prune.add_argument("--max-size", metavar="SIZE",
                       help="stop once the cache is at most SIZE (e.g. 60G); default: remove them all")
    prune.set_defaults(func=cmd_cache_prune)

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


def _on_sighup(signum, frame):
    raise HungUp()


# Options a CI parameter may not set: the pipeline owns where results go (argparse dests).
_NOT_EXTRA = ("extra_args", "out", "shard", "resume")


def _with_extra_args(parser: argparse.ArgumentParser, argv: list[str], args):
    """`lab run --extra-args STRING`: STRING's words parsed as if given on the command line.

    What the words may not set is checked on what argparse parsed, not on the words, so
    no spelling (`--out=X`, a prefix, a short option) gets around it."""
    try:
        extra = shlex.split(args.extra_args)
    except ValueError as exc:
        parser.error(f"--extra-args {args.extra_args!r}: {exc}")
    combined = parser.parse_args([*argv, *extra])
    for dest in _NOT_EXTRA:
        if getattr(combined, dest, None) != getattr(args, dest, None):
            parser.error(f"--extra-args may not set --{dest.replace('_', '-')}: the pipeline sets it")
    return combined


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    if getattr(args, "extra_args", None):
        args = _with_extra_args(parser, argv, args)
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    # A closed terminal (a `lab shell` window, an ssh session to the agent) stops the lab
    # the same way: guests powered off or killed, reports written.
    previous_hup = signal.signal(signal.SIGHUP, _on_sighup)
    try:
        return args.func(args)
    except Exception as exc:  # noqa: BLE001 - one line and a code from the table, never a traceback
        return _exit_for(exc)
    except (KeyboardInterrupt, Terminated) as exc:
        kill_all()
        return _exit_for(exc)
    finally:
        kill_all()
        release_holds()
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGHUP, previous_hup)


def _exit_for(exc: BaseException) -> int:
    """One line on stderr (none for a signal) and the exit code lab.exitcodes gives."""
    code, message = _outcome(exc)
    if message:
        try:
            print(message, file=sys.stderr)
        except OSError:
            pass  # stderr was a terminal that is gone (SIGHUP): the exit code still says it
    return code


def _outcome(exc: BaseException, traceback_dir: Path | None = None) -> tuple[int, str]:
    """The exit code lab.exitcodes gives for `exc`, and the line that says why (empty for a
    signal). Anything the table does not name is a lab bug: never a traceback on the terminal,
    and never 1 ("a test failed"): exit 2 and where the traceback was saved."""
    known = exitcodes.for_exception(exc)
    if known is None:
        summary, path = _save_traceback(traceback_dir)
        return exitcodes.PROBLEM, f"lab: internal error: {summary} (traceback: {path})"
    code, label = known
    return code, f"lab: {label}: {exc}" if isinstance(exc, Exception) else ""
