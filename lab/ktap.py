"""kselftest output (TAP 13, as tools/testing/selftests/kselftest.h prints it), subtest
by subtest, with names that are unique and stable from night to night.

Lines are read with tappy (PyPI `tap.py`); what is kselftest's own is read here:
the XFAIL/XPASS directives, `# [RUN] ...` lines that say what the next result is
about (cow.c's descriptions repeat: "No leak from parent into child" dozens of
times), `# [INFO] ...` section headings, and the `# Totals:` line.

A subtest is named by its `[RUN]` line (or, where no `[RUN]` came since the last
result, by the `[INFO]` line just before it, as mkdirty prints them), not by its
description: a SKIP prints its reason where a PASS prints its description, so a
name built from the description would change with the result and break the
per-subtest history. Only where a
name is still ambiguous (several results after one `[RUN]`, or none at all) is the
description used, and then an occurrence counter.
"""

from __future__ import annotations

import fnmatch
import re
import time
from dataclasses import dataclass, field, replace

from tap.parser import Parser

from lab.errors import GuestOutputError

# The text is the guest's: every pattern here is linear in the line (no lazy group
# before an optional tail), numbers have a bounded number of digits, lines are cut
# to a bounded length before any pattern sees them, and the whole parse has a deadline.
_CONTEXT = re.compile(r"#\s*\[(RUN|INFO)\](.*)")
_TOTALS = re.compile(r"#\s*Totals:(.*)")
_COUNT = re.compile(r"(\w{1,32}):(\d{1,9})(?!\d)")
MAX_LINE_CHARS = 4096  # kselftest lines are under 200; the rest of a longer line is not read
MAX_TAP_BYTES = 16 << 20  # cow on arm64 6.12 prints about 90 KiB
PARSE_TIMEOUT_S = 60.0
MAX_NUMBER = 1_000_000  # a plan or test number above this is no kselftest's (cow plans 655)
# ok/not ok + directive -> status. TAP's TODO is an expected failure when it fails and
# an unexpected pass when it passes (TAP 13: "ok # TODO" is a bonus, not a failure).
_DIRECTIVES = {"SKIP": "SKIP", "XFAIL": "XFAIL", "XPASS": "XPASS"}
_TODO = {True: "XPASS", False: "XFAIL"}


@dataclass(frozen=True)
class Subtest:
    number: int
    name: str  # unique within the run, stable while the test's structure is
    status: str  # PASS, FAIL, SKIP, XFAIL or XPASS
    detail: str  # the description or the directive's reason, as printed
    section: str  # the heading it came under ("" before the first)
    expected: str = ""  # why the configs expect it to FAIL (then FAIL is XFAIL, PASS is XPASS)


@dataclass
class Report:
    subtests: list[Subtest] = field(default_factory=list)
    planned: int | None = None  # the "1..N" line
    totals: dict[str, int] = field(default_factory=dict)  # the "# Totals:" line
    bail_out: str | None = None  # the reason after "Bail out!"
    skipped_whole: str | None = None  # the reason of "1..0 # SKIP reason": the test skipped everything

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for sub in self.subtests:
            counts[sub.status] = counts.get(sub.status, 0) + 1
        return counts

    def expect(self, globs: tuple[str, ...], reason: str) -> None:
        """The configs expect the subtests whose names match one of `globs` to FAIL: a
        FAIL among them becomes XFAIL, a PASS XPASS. The first expectation that matches
        a subtest decides it."""
        for i, sub in enumerate(self.subtests):
            if sub.expected or not any(fnmatch.fnmatchcase(sub.name, g) for g in globs):
                continue
            status = {"FAIL": "XFAIL", "PASS": "XPASS"}.get(sub.status, sub.status)
            self.subtests[i] = replace(sub, status=status, expected=reason)

    def verdict(self) -> tuple[str, str] | None:
        """(status, message) of the whole test from its subtests; None when it printed
        no TAP at all (the caller judges by the exit code)."""
        if not self.subtests and self.bail_out is None:
            if self.skipped_whole is not None:
                return "SKIP", f"skipped whole: {self.skipped_whole or 'no reason given'}"
            return None  # no TAP, or an empty plan: the exit code says it
        counts = self.counts()
        summary = " · ".join(f"{status.lower()} {n}" for status, n in sorted(counts.items())) or "no subtests"
        failed = [s for s in self.subtests if s.status == "FAIL"]
        if failed:
            return "FAIL", f"{summary}; first: {failed[0].name}: {failed[0].detail}"
        # Some tests end with "Bail out! N out of M tests failed" (mkdirty): after every
        # planned subtest, with each failure expected, that is a summary, not an abort.
        summarised = (self.planned is not None and len(self.subtests) >= self.planned
                      and any(s.status == "XFAIL" and s.expected for s in self.subtests))
        if self.bail_out is not None and not summarised:
            return "FAIL", f"{summary}; Bail out! {self.bail_out}"
        if self.planned is not None and len(self.subtests) < self.planned:
            return "FAIL", f"{summary}; only {len(self.subtests)} of {self.planned} planned subtests reported"
        if xpassed := [s for s in self.subtests if s.status == "XPASS"]:
            why = f" (expected FAIL: {xpassed[0].expected})" if xpassed[0].expected else ""
            return "XPASS", f"{summary}; first: {xpassed[0].name} passed{why}"
        if self.subtests and counts.get("SKIP", 0) == len(self.subtests):
            return "SKIP", f"{summary}; first: {self.subtests[0].detail}"
        if xfailed := [s for s in self.subtests if s.status == "XFAIL" and s.expected]:
            return "XFAIL", f"{summary}; expected: {xfailed[0].name} ({xfailed[0].expected})"
        return "PASS", summary


@dataclass
class _Pending:
    number: int
    status: str
    detail: str
    context: str
    section: str


def parse(text: str, timeout_s: float = PARSE_TIMEOUT_S) -> Report:
    """Every subtest in kselftest output (also cut short: what was printed counts).

    Raises GuestOutputError when the text cannot be judged: more than MAX_TAP_BYTES,
    or not read within timeout_s."""
    if len(text) > MAX_TAP_BYTES:
        raise GuestOutputError(f"the test printed {len(text) >> 20} MiB, more than the "
                               f"{MAX_TAP_BYTES >> 20} MiB of TAP the lab reads")
    deadline = time.monotonic() + timeout_s
    report, pending = Report(), []
    parser = Parser()
    context, section, heading_candidate = "", "", None
    # What was said since the last result: a [RUN], or only an [INFO] (mkdirty names
    # each test with an [INFO] line; in cow an [INFO] there is a note on the [RUN]).
    run_since_result, info_since_result = False, None
    for raw in text.splitlines():
        if time.monotonic() > deadline:
            raise GuestOutputError(f"its TAP output was not read within {timeout_s:.0f} s")
        line = raw[:MAX_LINE_CHARS].strip()
        if match := _CONTEXT.match(line):
            kind, said = match.group(1), match.group(2).strip()
            if heading_candidate is not None and kind == "RUN":
                section = heading_candidate  # a context line with no result of its own was a heading
            heading_candidate = said
            if kind == "RUN":
                context, run_since_result = said, True
            else:
                info_since_result = said
            continue
        if match := _TOTALS.match(line):
            report.totals = {k: int(v) for k, v in _COUNT.findall(match.group(1))}
            continue
        try:
            parsed = parser.parse_line(line)
        except ValueError:  # a number past Python's digit limit: not TAP kselftest prints
            continue
        if max(getattr(parsed, "expected_tests", 0) or 0, getattr(parsed, "number", 0) or 0) > MAX_NUMBER:
            continue
        if parsed.category == "plan":
            report.planned = parsed.expected_tests
            if parsed.expected_tests == 0 and parsed.skip:
                report.skipped_whole = (parsed.directive.reason or "").strip()
        elif parsed.category == "bail":
            report.bail_out = parsed.reason.strip()
        elif parsed.category == "test":
            if not run_since_result and info_since_result is not None:
                context = info_since_result
            heading_candidate, run_since_result, info_since_result = None, False, None
            pending.append(_result(parsed, context, section))
    report.subtests = _named(pending)
    return report


def _result(parsed, context: str, section: str) -> _Pending:
    directive = (parsed.directive.text or "").strip()
    word, _, reason = directive.partition(" ")
    status = _TODO[bool(parsed.ok)] if word.upper() == "TODO" else _DIRECTIVES.get(word.upper())
    if status is None:
        status, detail = ("PASS" if parsed.ok else "FAIL"), parsed.description.strip() or directive
    else:
        detail = reason.strip() or parsed.description.strip()
    return _Pending(parsed.number or 0, status, detail, context, section)


def _named(pending: list[_Pending]) -> list[Subtest]:
    """Names from the [RUN] context; the description where one context has several
    results or there is none; a counter for what is still the same."""
    per_context: dict[str, int] = {}
    for p in pending:
        per_context[p.context] = per_context.get(p.context, 0) + 1
    seen: dict[str, int] = {}
    subtests = []
    for p in pending:
        if p.context and per_context[p.context] == 1:
            base = p.context
        else:
            base = f"{p.context} / {p.detail}" if p.context else p.detail or f"subtest {p.number}"
        seen[base] = seen.get(base, 0) + 1
        name = base if seen[base] == 1 else f"{base} #{seen[base]}"
        subtests.append(Subtest(p.number, name, p.status, p.detail, p.section))
    return subtests
