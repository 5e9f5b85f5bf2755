"""Debian's archive through apt: what a pinned suite offers, and fetching exactly that.

A pin (package, suite, optional version) is resolved from apt's local lists
only (`apt-cache madison`, no network), so planning and `lab list` cost nothing
and every fetch asks for one exact version. Fetches go to the archive: a
transient failure (a 5xx, a timeout, a reset) is retried a few times with a
pause; a 404 is not retried, because the archive no longer has that version and
the pin in configs/lab.toml must change.
"""

from __future__ import annotations

import functools
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from debian.deb822 import Deb822, Dsc
from debian.debian_support import Version

from lab import procs
from lab.buildlog import run_into_log
from lab.cache import Entry, Workspace, content_key, ensure
from lab.schema import AptPin
from lab.errors import ArchiveError, BuildError, MissingToolError, PinError
from lab.hosttools import require_tool

SOURCE, BINARY = "deb-src", "deb"
_INDEX = {SOURCE: "Sources", BINARY: "Packages"}  # madison's last word for each kind of entry
SETUP_STEP = ("./just setup writes it (scripts/setup-host: /etc/apt/sources.list.d/qemu-lab.sources "
              "from `python3 -m lab.hostdeps sources`, then apt-get update)")

RETRY_PAUSES_S = (5.0, 20.0)  # pauses before the second and third attempt of a fetch
FETCH_DEADLINE_S = 900.0  # one apt-get run; linux-source-6.12 is ~150 MB
# apt's own retries off (ours are counted and logged); connects and reads bounded.
APT_OPTIONS = ("-q", "-o", "Acquire::Retries=0", "-o", "Acquire::http::Timeout=60",
               "-o", "Acquire::https::Timeout=60")
_FAILED_FETCH = re.compile(r"^E: Failed to fetch (\S+)\s+(.*?)\s*$", re.MULTILINE)


@dataclass(frozen=True)
class Offer:
    """One version of a package that a suite's apt lists offer."""

    package: str
    version: str
    suite: str

    def __str__(self) -> str:
        return f"{self.version} ({self.suite})"


def apt_environment(apt_config: Path | None) -> dict[str, str]:
    """What apt commands run with: the host's apt, or the state of `apt_config` (an apt.conf
    of the lab's own, for other architectures' packages; lab.debian_kernels)."""
    return {"APT_CONFIG": str(apt_config)} if apt_config else {}


def _apt_query(argv: list[str], apt_config: Path | None = None) -> str:
    if apt_config is not None:
        # The lab's own apt state keeps apt's binary cache beside its lists: hosts such as
        # Debian's container images turn it off (apt.conf.d/docker-clean), and then every
        # query re-parses the lists of seven architectures (4 s; with the cache 0.05 s).
        # apt rebuilds it itself when the lists change.
        argv = [argv[0], "-o", f"Dir::Cache::pkgcache={apt_config.parent / 'cache' / 'pkgcache.bin'}",
                "-o", "Dir::Cache::srcpkgcache=", *argv[1:]]
    try:
        return procs.run(argv, capture_output=True, text=True, timeout_s=procs.PROBE_TIMEOUT_S,
                         env={**os.environ, **apt_environment(apt_config)}).stdout
    except FileNotFoundError:
        raise MissingToolError(argv[0], "apt") from None


def offers(package: str, kind: str, apt_config: Path | None = None) -> list[Offer]:
    """Every version of `package` (a source package for SOURCE) in apt's lists, newest first."""
    found = set()
    # A foreign architecture's package is asked for as pkg:arch; madison names the
    # native architecture's packages without the qualifier, and says the arch of each.
    name, _, arch = package.partition(":")
    for line in _apt_query(["apt-cache", "madison", package], apt_config).splitlines():
        # "pkg | version | URI suite/component [arch] Packages|Sources"
        parts = [p.strip() for p in line.split("|")]
        where = parts[2].split() if len(parts) == 3 else []
        if (parts[0].partition(":")[0] == name and len(where) >= 3 and where[-1] == _INDEX[kind]
                and (not arch or where[-2] == arch)):
            found.add(Offer(package, parts[1], where[1].split("/")[0]))
    return sorted(found, key=lambda o: (Version(o.version), o.suite), reverse=True)


def show_field(spec: str, name: str, apt_config: Path | None = None) -> str:
    """One field of the record `apt-cache show SPEC` prints first (e.g. pkg:arch=version); "" if absent."""
    text = _apt_query(["apt-cache", "show", spec], apt_config)
    record = next(iter(Deb822.iter_paragraphs(text.splitlines())), None)
    return (record or {}).get(name, "")


def configured_suites(kind: str) -> set[str]:
    """Suites that apt's sources have an entry of this kind (deb or deb-src) for."""
    out = _apt_query(["apt-get", "indextargets", "--format", "$(RELEASE) $(TARGET_OF)"])
    return {suite for suite, _, target in (line.partition(" ") for line in out.splitlines()) if target == kind}


def _listing(available: list[Offer]) -> str:
    return ", ".join(map(str, available)) or "none"


@functools.cache
def resolve(pin: AptPin, kind: str, apt_config: Path | None = None) -> Offer:
    """The exact version a pin asks for: its version, or the newest its suite offers.

    Resolved once per process, so every build and report of a run sees the same version.
    """
    available = offers(pin.package, kind, apt_config)
    matching = [o for o in available if (not pin.suite or o.suite == pin.suite)
                and (not pin.version or o.version == pin.version)]
    if matching:
        return matching[0]
    if pin.suite and not apt_config and pin.suite not in configured_suites(kind):
        raise PinError(f"{pin.where}: suite '{pin.suite}' has no {kind} entry in apt's sources, so "
                       f"{pin.package} cannot be resolved; {SETUP_STEP}")
    asked = f"{pin.package} {pin.version or '(newest)'}" + (f" from suite '{pin.suite}'" if pin.suite else "")
    raise PinError(f"{pin.where}: {asked} is not in apt's lists; they offer: {_listing(available)}")


def fetch(pin: AptPin, kind: str, cwd: Path, log: Path, deadline_s: float = FETCH_DEADLINE_S,
          apt_config: Path | None = None) -> Offer:
    """Fetch exactly the version `pin` resolves to into `cwd`: `apt-get source` (unpacked) for SOURCE,
    `apt-get download` (the .deb) for BINARY. Transient archive errors are retried after a pause."""
    offer = resolve(pin, kind, apt_config)
    command = ["source", "--only-source"] if kind == SOURCE else ["download"]
    argv = ["apt-get", *APT_OPTIONS, *command, f"{pin.package}={offer.version}"]
    problem = None
    for attempt, pause in enumerate((0.0, *RETRY_PAUSES_S), 1):
        if problem:
            with log.open("a") as fh:
                fh.write(f"# transient archive error ({problem}); attempt {attempt} in {pause:.0f} s\n")
            time.sleep(pause)
        problem = _attempt(argv, pin, offer, kind, cwd, log, deadline_s, apt_config)
        if problem is None:
            return offer
    raise ArchiveError(f"fetching {pin.package} {offer.version} failed {attempt} times, last: {problem} "
                       f"(log: {log})")


def _attempt(argv: list[str], pin: AptPin, offer: Offer, kind: str, cwd: Path, log: Path,
             deadline_s: float, apt_config: Path | None) -> str | None:
    """One apt-get run: None when it worked, what went wrong when that may be transient; else raise."""
    status, output = run_into_log(argv, log, timeout_s=deadline_s, cwd=cwd, env=apt_environment(apt_config))
    if status == 0:
        return None
    failures = _FAILED_FETCH.findall(output)
    missing = [url for url, reason in failures if reason.startswith("404")]
    if missing:
        raise PinError(f"{pin.where}: the archive no longer has {pin.package} {offer.version} "
                       f"(pinned: {pin}; 404 for {missing[0]}); apt's lists offer: "
                       f"{_listing(offers(pin.package, kind, apt_config))}")
    if failures:
        return f"{failures[0][0]}: {failures[0][1]}"
    if status is None:
        return f"no answer within {deadline_s:.0f} s"
    last = (output.strip().splitlines() or [f"exit status {status}"])[-1]
    raise BuildError(f"apt-get fetching {pin.package}={offer.version} failed: {last} (log: {log})")


@dataclass(frozen=True)
class SourcePackage:
    """A fetched, unpacked Debian source package in the cache."""

    offer: Offer
    path: Path  # the unpacked source tree
    dsc: Path  # beside it: names every file of the source with its hash

    @property
    def identity(self) -> str:
        """A key for the content: the .dsc (version and every file's sha256)."""
        return content_key(self.dsc.read_bytes())


def source_entry(offer: Offer) -> Entry:
    return Entry("debian-sources", content_key(offer.package, offer.version))


def _cached_source(entry: Entry, offer: Offer) -> SourcePackage | None:
    meta = entry.meta()
    return SourcePackage(offer, entry.path / meta["dir"], entry.path / meta["dsc"]) if meta else None


def source_package(pin: AptPin, allow_fetch: bool = True) -> SourcePackage | None:
    """The unpacked source of exactly the version `pin` resolves to, fetched once into the cache.

    Cached by package and version: a new pin, or a new version in the pinned suite,
    fetches anew; an old version is never reused for it. With allow_fetch=False, None when not fetched.
    """
    offer = resolve(pin, SOURCE)
    entry = source_entry(offer)
    if (found := _cached_source(entry, offer)) or not allow_fetch:
        return found
    require_tool("dpkg-source", "dpkg-dev")

    def fetch_source(space: Workspace) -> dict:
        fetch(pin, SOURCE, space.result, space.log)
        dirs = [p.name for p in space.result.iterdir() if p.is_dir()]
        dscs = [p.name for p in space.result.glob("*.dsc")]
        if len(dirs) != 1 or len(dscs) != 1:
            raise BuildError(f"apt-get source {pin.package}={offer.version}: expected one tree and one .dsc, "
                             f"got {sorted(dirs)} {sorted(dscs)} (log: {space.log})")
        got = Dsc((space.result / dscs[0]).read_bytes()).get("Version")
        if got != offer.version:
            raise BuildError(f"apt-get source {pin.package}={offer.version} fetched version {got} (log: {space.log})")
        return {"package": offer.package, "version": offer.version, "suite": offer.suite,
                "dir": dirs[0], "dsc": dscs[0]}

    ensure(entry, fetch_source, log_name="fetch.log")
    return _cached_source(entry, offer)
