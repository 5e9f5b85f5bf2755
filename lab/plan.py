"""The plan of a run: which (arch, kernel) jobs run which testcases.

Made from the configs and the command line (selection, parameters, repeats),
cut to one agent's share with --shard, or read back from run.json by --resume.
Every agent computes the same shard assignment from the same plan (and the same
cost hints), so N agents with --shard 1/N .. N/N cover every job exactly once.
The unit is a job: one boot serves all its testcases.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from lab import config as cfg
from lab import rundir, safe_read
from lab.schema import SOURCE_KINDS, Arch, DebianBinary, KernelSource, Lab, Testcase
from lab.errors import UserError

MAX_SHARDS = 1000
RESULTS_MAX_BYTES = 256 * safe_read.MIB


@dataclass(frozen=True)
class Job:
    arch: Arch
    kernel: KernelSource
    testcases: tuple[Testcase, ...]

    @property
    def name(self) -> str:
        return f"{self.arch.name}/{self.kernel.name}"


@dataclass(frozen=True)
class Request:
    """What the command line asks for; None means the plan's default."""

    arch: str | None = None
    kernel: str | None = None
    test: str | None = None
    params: tuple[str, ...] = ()  # NAME=VALUE, as given to --param
    repeat: int = 1
    shard: str | None = None  # "I/N"
    shard_costs: Path | None = None  # an earlier results.json (or its directory)


def selection(lab: Lab, arch: str | None, kernel: str | None,
              test: str | None = None) -> tuple[list[str], list[str], list[str]]:
    """The arches, kernels and testcases named (comma-separated), or the plan's."""
    arches = cfg.pick("arch", arch, lab.arches, lab.plan.arches)
    kernels = cfg.pick("kernel", kernel, lab.kernels, lab.plan.kernels)
    tests = cfg.pick("testcase", test, lab.testcases, lab.plan.testcases)
    return arches, kernels, tests


def newest_kernel(lab: Lab, arch_name: str) -> str:
    """The plan's newest kernel for an arch: one that names the arch in its `arches`
    (a kernel kept for that arch, like 6.12-bpo for sparc64) before any other."""
    # kselftests are built from a source archive (lab.kernel_sources)
    kernels = [lab.kernels[name] for name in lab.plan.kernels if isinstance(lab.kernels[name].kind, SOURCE_KINDS)]
    named = [k for k in kernels if arch_name in k.arches]
    return (named or [k for k in kernels if not k.arches] or kernels)[-1].name


def plan_jobs(lab: Lab, arches: list[str], kernels: list[str], tests: list[str],
              kernels_chosen: bool = False) -> list[Job]:
    """arches x kernels; a kernel that declares its arches is only paired with those,
    unless the user chose the kernels explicitly (--kernel)."""
    cases = tuple(lab.testcases[t] for t in tests)
    return [Job(lab.arches[a], lab.kernels[k], cases) for a in arches for k in kernels
            if _paired(lab.arches[a], lab.kernels[k], kernels_chosen)]


def no_pairs(lab: Lab, arches: list[str], kernels: list[str]) -> UserError:
    """What to say when a selection pairs no arch with any kernel: each pair and why
    (the reasons `lab list` gives)."""
    reasons = [f"{a}/{k}: {debian_kernel_missing(lab.arches[a], lab.kernels[k]) or 'not paired'}"
               for a in arches for k in kernels]
    return UserError(f"nothing to run: none of the selected kernels exists for the selected arches ({'; '.join(reasons)})")


def _paired(arch: Arch, kernel: KernelSource, kernels_chosen: bool) -> bool:
    if isinstance(kernel.kind, DebianBinary):  # the archive decides, whatever was asked for
        return debian_kernel_missing(arch, kernel) is None
    return kernels_chosen or not kernel.arches or arch.name in kernel.arches


def debian_kernel_missing(arch: Arch, kernel: KernelSource) -> str | None:
    """Why Debian's kernel `kernel` has nothing for `arch` (None: it has): no [debian]
    flavour, or a suite without that flavour (as the kernel's `arches` says)."""
    if not arch.debian:
        return f"Debian 12 ships no kernel for {arch.name} (no [debian] in configs/arches/{arch.name}.toml)"
    if kernel.arches and arch.name not in kernel.arches:
        return (f"{kernel.kind.suite} has no linux-image-{arch.debian.flavour}:{arch.debian.arch} "
                f"(configs/lab.toml kernels.{kernel.name}.arches)")
    return None


def new_plan(lab: Lab, request: Request) -> dict:
    """The run's plan; with a shard, "jobs" is this shard's part of the full plan in "plan"."""
    arches, kernels, tests = selection(lab, request.arch, request.kernel, request.test)
    jobs = plan_jobs(lab, arches, kernels, tests, kernels_chosen=bool(request.kernel))
    if not jobs:
        raise no_pairs(lab, arches, kernels)
    params = cfg.param_overrides([lab.testcases[t] for t in tests], list(request.params))
    full = {"arches": arches, "kernels": kernels, "testcases": tests,
            "jobs": [[j.arch.name, j.kernel.name] for j in jobs], "params": params, "repeat": request.repeat}
    run = {**full, "plan": full, "plan_id": plan_id(full), "shard": request.shard or ""}
    if request.shard:
        index, count = parse_shard(request.shard)
        run["jobs"] = assign(full["jobs"], count, job_costs(request.shard_costs), len(tests))[index - 1]
    return run


def resumed_plan(lab: Lab, out: Path) -> dict:
    """The plan in `out`/run.json, as long as the configs still declare all it names."""
    plan = rundir.read(out)
    for arch, kernel in plan["jobs"]:
        if arch not in lab.arches or kernel not in lab.kernels:
            raise UserError(f"--resume {out}: the run has {arch}/{kernel}, which configs/ no longer declare")
    unknown = [t for t in plan["testcases"] if t not in lab.testcases]
    if unknown:
        raise UserError(f"--resume {out}: the run has testcase {unknown[0]}, which testcases/ no longer declares")
    return plan


def jobs_of(lab: Lab, plan: dict, done: set) -> list[Job]:
    """The plan's jobs, each with only the testcases whose cells are not finished yet."""
    jobs = []
    for arch, kernel in plan["jobs"]:
        cases = tuple(lab.testcases[t] for t in plan["testcases"] if (arch, kernel, t) not in done)
        if cases:
            jobs.append(Job(lab.arches[arch], lab.kernels[kernel], cases))
    return jobs


def parse_shard(text: str) -> tuple[int, int]:
    """"I/N" with 1 <= I <= N."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise UserError(f"--shard {text!r}: expected I/N, e.g. 2/3") from None
    if not 1 <= count <= MAX_SHARDS:
        raise UserError(f"--shard {text!r}: N must be between 1 and {MAX_SHARDS}")
    if not 1 <= index <= count:
        raise UserError(f"--shard {text!r}: I must be between 1 and N")
    return index, count


def plan_id(plan: dict) -> str:
    """Identifies a plan: shards of one plan share it; runs of different plans never do."""
    keys = ("jobs", "testcases", "params", "repeat")
    return hashlib.sha256(json.dumps({k: plan[k] for k in keys}, sort_keys=True).encode()).hexdigest()[:16]


def job_costs(results_json: Path | None) -> dict[tuple[str, str], float]:
    """Seconds each job took in an earlier run (results.json), to balance shards by."""
    if results_json is None:
        return {}
    if results_json.is_dir():
        results_json = results_json / rundir.RESULTS
    costs: dict[tuple[str, str], float] = {}
    try:
        for cell in json.loads(safe_read.read_text(results_json, RESULTS_MAX_BYTES, UserError))["cells"]:
            key = (cell["arch"], cell["kernel"])
            seconds = float(cell.get("duration_s", 0.0)) + float(cell.get("timings", {}).get("ssh_s", 0.0))
            if not (isinstance(key[0], str) and isinstance(key[1], str) and 0 <= seconds < 1e9):
                raise ValueError(f"a cell with arch {key[0]!r}, kernel {key[1]!r}, {seconds} seconds")
            costs[key] = costs.get(key, 0.0) + seconds
    except (OSError, ValueError, KeyError, TypeError, AttributeError, OverflowError, RecursionError) as exc:
        raise UserError(f"--shard-costs {results_json}: not a results.json ({type(exc).__name__}: {exc})") from None
    return costs


def assign(jobs: list[list[str]], count: int, costs: dict[tuple[str, str], float],
           cells_per_job: int) -> list[list[list[str]]]:
    """Jobs ([arch, kernel]) into `count` shards, largest first onto the least loaded shard.

    A job without a known cost costs the mean of the known ones (or its cell count when
    none is known), so a new arch does not land on a shard by accident of order.
    """
    known = [costs[tuple(j)] for j in jobs if tuple(j) in costs]
    default = sum(known) / len(known) if known else float(cells_per_job)
    weighted = sorted(jobs, key=lambda j: (-costs.get(tuple(j), default), j))
    shards: list[list[list[str]]] = [[] for _ in range(count)]
    loads = [0.0] * count
    for job in weighted:
        target = min(range(count), key=lambda i: (loads[i], i))
        shards[target].append(job)
        loads[target] += costs.get(tuple(job), default)
    order = {tuple(j): n for n, j in enumerate(jobs)}
    return [sorted(shard, key=lambda j: order[tuple(j)]) for shard in shards]
