#!/usr/bin/env python3
"""Check a declarative Jenkinsfile offline: Groovy 2.4's parser (the one Jenkins runs
pipelines on) reads it, and its outline (scripts/jenkinsfile_outline.groovy) is
checked against the declarative pipeline's rules: which sections go where, what a
stage holds, which steps and which of their named arguments exist, and that no
shell step's script is a GString (built from parameters at run time).

    python3 scripts/check_jenkinsfile.py [Jenkinsfile]    (./just check-jenkinsfile)

Exit 0 and "ok", or 1 and a line per problem (FILE:LINE: ...). Not checked: that
the agents have the plugins (Copy Artifact, JUnit) in versions with these
arguments, agent labels, the sandbox's approval of what script blocks call, and
whatever only fails when it runs (a misspelled property in a script block).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

OUTLINE = Path(__file__).with_name("jenkinsfile_outline.groovy")
DEADLINE_S = 120

# What each directive may contain (declarative pipeline syntax).
SECTIONS = {
    "pipeline": {"agent", "environment", "options", "parameters", "triggers", "tools", "stages", "post",
                 "libraries"},
    "stage": {"agent", "environment", "options", "when", "steps", "stages", "parallel", "matrix", "post",
              "input", "tools", "failFast"},
    "matrix": {"axes", "agent", "stages", "excludes", "environment", "options", "post", "when", "input", "tools"},
    "stages": {"stage"},
    "parallel": {"stage"},
    "axes": {"axis"},
    "axis": {"name", "values"},
    "agent": {"label", "node", "docker", "dockerfile", "any", "none"},
    "environment": {"="},
    "triggers": {"cron", "pollSCM", "upstream"},
    "parameters": {"string", "text", "booleanParam", "choice", "password"},
    "options": {"timeout", "buildDiscarder", "disableConcurrentBuilds", "timestamps", "retry",
                "skipDefaultCheckout", "copyArtifactPermission", "durabilityHint", "quietPeriod",
                "preserveStashes", "parallelsAlwaysFailFast", "skipStagesAfterUnstable", "disableResume"},
    "post": {"always", "changed", "fixed", "regression", "aborted", "failure", "success", "unstable",
             "unsuccessful", "cleanup", "notBuilt"},
}
STAGE_BODIES = {"steps", "stages", "parallel", "matrix"}  # a stage has exactly one
STEP_BLOCKS = {"steps", "script", *SECTIONS["post"]}  # blocks of steps (script: with Groovy around them)
# The steps this pipeline may use, with their named arguments (None: any).
STEPS: dict[str, set[str] | None] = {
    "sh": {"script", "label", "returnStatus", "returnStdout", "encoding"},
    "script": set(),
    "echo": {"message"},
    "stash": {"name", "includes", "excludes", "allowEmpty", "useDefaultExcludes"},
    "unstash": {"name"},
    "copyArtifacts": {"projectName", "selector", "filter", "excludes", "target", "optional",
                      "fingerprintArtifacts", "flatten", "parameters", "resultVariableSuffix",
                      "includeBuildNumberInTargetPath"},
    "junit": {"testResults", "allowEmptyResults", "skipMarkingBuildUnstable", "keepLongStdio", "keepProperties",
              "healthScaleFactor", "skipPublishingChecks", "stdioRetention", "checksName"},
    "archiveArtifacts": {"artifacts", "allowEmptyArchive", "excludes", "fingerprint", "onlyIfSuccessful",
                         "caseSensitive", "defaultExcludes", "followSymlinks"},
    "unstable": {"message"},
    "error": {"message"},
    "readFile": {"file", "encoding"},
    "writeFile": {"file", "text", "encoding"},
    "fileExists": {"file"},
    "dir": {"path"},
}
# Calls that build an argument's value, not steps: (what they may be used in, their named arguments).
VALUES: dict[str, set[str]] = {
    "lastSuccessful": {"stable"}, "lastCompleted": set(), "specific": {"buildNumber"},
    "logRotator": {"numToKeepStr", "daysToKeepStr", "artifactNumToKeepStr", "artifactDaysToKeepStr"},
    "timeout": {"time", "unit", "activity"}, "cron": set(), "label": set(),
    "string": {"name", "defaultValue", "description", "trim"},
}
SHELL_ARGUMENTS = {"sh": "script"}  # never a GString: the shell would run text built from parameters


def outline(jenkinsfile: Path) -> list[dict]:
    """The file's outline from Groovy's parser; a syntax error is a ValueError with its message."""
    done = subprocess.run(["groovy", str(OUTLINE), str(jenkinsfile)], capture_output=True, text=True,
                          timeout=DEADLINE_S)
    if done.returncode != 0:
        raise ValueError(done.stderr.strip() or f"groovy exited {done.returncode}")
    return json.loads(done.stdout)


def problems(calls: list[dict], where: str) -> list[str]:
    """Every way the outline breaks the declarative rules, as "WHERE:LINE: ..." lines."""
    if [c["name"] for c in calls] != ["pipeline"]:
        return [f"{where}:1: the file must be one pipeline {{ ... }} block, found {[c['name'] for c in calls]}"]
    found: list[str] = []
    _check(calls[0], "top level", where, found)
    return found


def _check(call: dict, parent: str, where: str, found: list[str]) -> None:
    name, line = call["name"], call["line"]
    say = lambda text: found.append(f"{where}:{line}: {text}")  # noqa: E731
    if parent in SECTIONS and name not in SECTIONS[parent]:
        say(f"{name!r} is not allowed in {parent} (allowed: {', '.join(sorted(SECTIONS[parent]))})")
        return
    if parent in STEP_BLOCKS and name != "=" and name not in STEPS:
        say(f"{name!r} is not a step this pipeline may use in {parent} (known: {', '.join(sorted(STEPS))})")
    known_args = STEPS.get(name) if parent in STEP_BLOCKS else VALUES.get(name)
    for arg in call["named"]:
        if known_args is not None and arg not in known_args and name in {*STEPS, *VALUES}:
            say(f"{name}: unknown argument {arg!r} (known: {', '.join(sorted(known_args)) or 'none'})")
    if SHELL_ARGUMENTS.get(name) in call["interpolated"]:
        say(f"{name}: {SHELL_ARGUMENTS[name]} is a GString: the shell would run text built at run time; "
            "use '''...''' and pass values in the environment")
    if name == "stage":
        bodies = [c["name"] for c in call["body"] if c["name"] in STAGE_BODIES]
        if call["positional"] != 1 or len(bodies) != 1:
            say(f"stage: needs a name and exactly one of {', '.join(sorted(STAGE_BODIES))} (found {bodies})")
    if name == "matrix" and not {"axes", "stages"} <= {c["name"] for c in call["body"]}:
        say("matrix: needs axes and stages")
    inner = parent if name == "=" else name
    for child in call["body"]:
        _check(child, inner if call["closure"] or name == "=" else f"{name}()", where, found)


def main(argv: list[str]) -> int:
    jenkinsfile = Path(argv[0] if argv else "Jenkinsfile")
    try:
        found = problems(outline(jenkinsfile), str(jenkinsfile))
    except ValueError as exc:
        found = [f"{jenkinsfile}: Groovy cannot parse it: {exc}"]
    except FileNotFoundError:
        found = ["groovy is not installed (./just setup installs it)"]
    print("\n".join(found) if found else f"{jenkinsfile}: ok")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
