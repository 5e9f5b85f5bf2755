"""`lab run`: the plan (or the plan resumed), the builds, the guests, the reports."""

from __future__ import annotations

import shlex
import socket
import sys
from pathlib import Path

from lab import config as cfg
from lab import schema
from lab import exitcodes, plan, rundir
from lab.artifacts import prepare
from lab.errors import UserError
from lab.exitcodes import Terminated
from lab.guest import PortAllocator
from lab.hosttools import qemu_binary
from lab.images import planned_initrd
from lab.kernel_trees import tree_source
from lab.kernel_images import image_source
from lab.kernels import planned_image
from lab.progress import Progress
from lab.qemu import qemu_argv, qemu_user
from lab.ssh import client_key
from lab.results import run_exit_code
from lab.runner import Runner
from lab.cmd_common import now, check_host, out_dir, baseline_of, finish_reports, one_arch, outcome


def given_kernel(lab: schema.Lab, args) -> tuple[schema.Lab, str | None, dict]:
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
                    "arch": one_arch(lab, args, "--kernel-image").name}
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
    out = Path(args.resume) if args.resume else out_dir(args.out)
    if args.resume:
        lab, run_plan = _resumed_plan(lab, args, out)
    else:
        lab, kernel, recorded = given_kernel(lab, args)
        run_plan = plan.new_plan(lab, _plan_request(args, kernel))
        if recorded:  # found again by --resume
            run_plan["given_kernel"] = recorded
    check_host(lab, list(dict.fromkeys(arch for arch, _ in run_plan["jobs"])))
    baseline = baseline_of(args)
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
    progress = Progress(guests=args.guests.running)
    # A resumed run keeps its run.json (id, start time, plan); a new one writes it first.
    meta = {"run_id": out.name, "started": now(), "host": socket.gethostname(), **run_plan,
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
                        timeout_factor=args.timeout_factor, retries=args.retries, on_cell=progress.cell_done,
                        guests=args.guests)
        progress.start_cells(cells_left)
        runner.run(jobs, artifacts, args.jobs)
    except BaseException as exc:  # noqa: BLE001 - whatever stops the run, every finished cell is reported
        stopped, signalled = _stopped_by(exc, out), isinstance(exc, (KeyboardInterrupt, Terminated))
    finally:
        progress.close()
        if runner:
            runner.stop.set()
        args.guests.kill_all(closing=stopped is not None)
        if stopped is not None:
            why = "interrupted" if signalled else "stopped by the error below"  # printed after the reports
            progress(f"{why}: guests killed; writing reports for the finished cells")
    cells = rundir.cells(out)
    meta["finished"] = now()
    rundir.write(out, meta)
    finish_reports(out, cells, meta, baseline, args.baseline)
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
    return outcome(exc, traceback_dir=out)
