"""`lab shell`: one guest handed to a person (lab.shell does the work)."""

from __future__ import annotations

import sys

from lab import config as cfg
from lab import plan
from lab.errors import UserError
from lab.progress import Progress
from lab.shell import ShellRequest, open_shell
from lab.cmd_common import check_host, out_dir, one_arch
from lab.cmd_run import given_kernel


def cmd_shell(args) -> int:
    """Boot one guest and hand it over: a shell, one command (-- CMD ARGS) or the console."""
    lab = cfg.load_lab()
    arch = one_arch(lab, args, "lab shell")
    lab, kernel, _ = given_kernel(lab, args)
    kernels = cfg.pick("kernel", kernel, lab.kernels, ()) if kernel else [plan.newest_kernel(lab, arch.name)]
    if len(kernels) != 1:
        raise UserError(f"lab shell boots one kernel (got --kernel {kernel})")
    tests = cfg.pick("testcase", args.test, lab.testcases, lab.plan.testcases)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if command and args.console:
        raise UserError("--console attaches to the serial console: it runs no command (drop -- CMD or --console)")
    check_host(lab, [arch.name])
    jobs = plan.plan_jobs(lab, [arch.name], kernels, tests, kernels_chosen=True)
    if not jobs:
        raise plan.no_pairs(lab, [arch.name], kernels)
    job, = jobs
    work = out_dir(args.out, prefix="shell-")
    request = ShellRequest(job=job, work=work, command=tuple(command), console=args.console,
                           command_timeout_s=args.timeout, accel=args.accel, timeout_factor=args.timeout_factor)
    progress = Progress(stream=sys.stderr)
    try:
        return open_shell(lab, request, progress, args.guests)
    finally:
        progress.close()
