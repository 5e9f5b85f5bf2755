"""The `lab` command: the parser, and main(), which calls the subcommand (lab.cmd_*)
and turns what stops it into an exit code (lab.cmd_common, lab.exitcodes)."""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys

from lab.cache import release_holds
from lab.exitcodes import HungUp, Terminated
from lab.qemu import ACCELERATORS, Guests
from lab.cmd_common import exit_for
from lab.cmd_run import cmd_run
from lab.cmd_shell import cmd_shell
from lab.cmd_reports import cmd_merge, cmd_report, cmd_compare, cmd_history
from lab.cmd_cache import cmd_cache, cmd_cache_prune
from lab.cmd_list import cmd_list, cmd_doctor
from lab.cmd_build import cmd_kernels_build, cmd_images_build, cmd_testcases_build

DESCRIPTION = ("Boot Linux kernels for many architectures under QEMU, run memory-management testcases in "
               "the guests, and report PASS/FAIL per arch, kernel and testcase.")
EXIT_STATUS_HELP = ("exit status: 0 nothing unexpected; 1 a test FAILed, XPASSed or TIMEOUTed; 2 usage, config "
                    "or input error, or an ERROR; 124 `lab shell -- CMD` past --timeout; 129/130/143 hung up, "
                    "interrupted, terminated")
MAX_PARALLEL = 64  # guests at once: each is a QEMU with its memory


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
    args.guests = guests = Guests()  # every QEMU the command starts: killed below, whatever ends it
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    # A closed terminal (a `lab shell` window, an ssh session to the agent) stops the lab
    # the same way: guests powered off or killed, reports written.
    previous_hup = signal.signal(signal.SIGHUP, _on_sighup)
    try:
        return args.func(args)
    except Exception as exc:  # noqa: BLE001 - one line and a code from the table, never a traceback
        return exit_for(exc)
    except (KeyboardInterrupt, Terminated) as exc:
        guests.kill_all()
        return exit_for(exc)
    finally:
        guests.kill_all()
        release_holds()
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGHUP, previous_hup)
