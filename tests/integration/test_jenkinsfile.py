"""The Jenkinsfile's shell steps, run as written on this machine: setup, three shards, merge.

No Jenkins here, so what Jenkins itself does (cron, agents, stash/unstash, the
junit and archiveArtifacts steps) is checked by reading the file; every `sh`
step is taken from the Jenkinsfile verbatim and run with the environment Jenkins
would give it, in a copy of the checkout, against real QEMU.
"""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import xmlschema

from conftest import REPO

pytestmark = pytest.mark.integration

JENKINSFILE = (REPO / "Jenkinsfile").read_text()
SCHEMA = xmlschema.XMLSchema(str(REPO / "tests" / "data" / "jenkins-junit.xsd"))
# A small slice of the plan, so the three shards get one job each.
LAB_ARGS = "--arch i386-pae,x86_64,riscv64 --kernel 6.1 --test swp_exclusive"
# The pipeline's environment block, as Jenkins gives it to every sh step.
PIPELINE_ENV = dict(re.findall(r"^\s+([A-Z_]+) = '([^']*)'", JENKINSFILE, re.M))


def _sh_steps() -> list[tuple[str, str]]:
    """(label, script) of every `sh label: ..., script: ...` step, in file order."""
    pattern = re.compile(r"sh[ (]label: '([^']+)',(?: \w+: \w+,)* script: (?:'''(.*?)'''|'([^']*)')", re.S)
    return [(m.group(1), m.group(2) if m.group(2) is not None else m.group(3))
            for m in pattern.finditer(JENKINSFILE)]


def _step(label: str, occurrence: int = 0) -> str:
    return [script for name, script in _sh_steps() if name == label][occurrence]


def _run(script: str, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    # Jenkins runs an sh step with `sh -xe` in the workspace.
    return subprocess.run(["sh", "-xe", "-c", script], cwd=cwd, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=1800)


def test_the_pipeline_has_the_pieces_jenkins_needs():
    assert re.search(r"triggers \{\s*cron\('H 1 \* \* \*'\)", JENKINSFILE), "nightly cron trigger"
    values = re.search(r"name 'SHARD'\s*values ([^\n]+)", JENKINSFILE).group(1)
    shards = re.search(r"SHARDS = '(\d+)'", JENKINSFILE).group(1)
    assert [v.strip(" '") for v in values.split(",")] == [str(n) for n in range(1, int(shards) + 1)]
    assert "agent { label 'qemu-lab' }" in JENKINSFILE
    assert 'stash name: "shard-${SHARD}", includes: "shards/${SHARD}/**"' in JENKINSFILE
    assert 'unstash "shard-${shard}"' in JENKINSFILE
    assert "junit testResults: 'merged/junit.xml'" in JENKINSFILE
    assert re.search(r"archiveArtifacts artifacts: '[^']*merged/matrix.html", JENKINSFILE)
    assert [label for label, _ in _sh_steps()] == ["setup", "shard", "clean", "setup", "merge", "history", "verdict"]
    # What Jenkins does around the steps: last night's results as the baseline and the
    # earlier nightlies for history (Copy Artifact), the description and the verdict.
    assert "selector: lastSuccessful(stable: false)" in JENKINSFILE and "target: 'baseline'" in JENKINSFILE
    assert "filter: 'merged/journal.jsonl, merged/run.json'" in JENKINSFILE
    assert 'target: "history/${night.number}"' in JENKINSFILE
    assert "currentBuild.description = readFile('merged/changes.txt').readLines()[0]" in JENKINSFILE
    assert re.search(r"if \(verdict == 1\) \{\s*unstable\(", JENKINSFILE)
    assert "skipMarkingBuildUnstable: true" in JENKINSFILE, "only the verdict makes a build UNSTABLE"
    archived = re.search(r"archiveArtifacts artifacts: '([^']*)'", JENKINSFILE).group(1).split(", ")
    assert {"merged/journal.jsonl", "merged/run.json", "merged/changes.txt", "merged/history.html"} <= set(archived)
    assert _step("setup") == "./just setup", "the README's setup, nothing else"


@pytest.fixture
def workspace(tmp_path):
    """A copy of the checkout as an agent's workspace (without the venv and results)."""
    ws = tmp_path / "workspace"
    shutil.copytree(REPO, ws, ignore=shutil.ignore_patterns(".venv", "results", "shards", "merged", ".git",
                                                              "__pycache__", ".pytest_cache", "*.egg-info"))
    return ws


def _shards(workspace: Path, env: dict) -> None:
    """Stage "Shards": each matrix cell runs setup and its shard in its own workspace."""
    done = _run(_step("setup"), workspace, env)
    assert done.returncode == 0, done.stderr[-2000:]
    for shard in ("1", "2", "3"):
        done = _run(_step("shard"), workspace, {**env, "SHARD": shard})
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        assert f"lab run --shard {shard}/3: exit status " in done.stdout


def _merge(workspace: Path, env: dict, archived: list[Path]) -> tuple[str, int]:
    """Stage "Merge", as Jenkins runs it: clean; unstash (the shard directories are in
    place already) and copyArtifacts (the newest archived night as the baseline, all of
    them as history); setup, merge, history; the verdict. Returns the build's
    description and the verdict's exit status (1: UNSTABLE)."""
    shards = workspace / "shards"
    kept = workspace.parent / "stash"
    shutil.move(shards, kept)
    assert _run(_step("clean"), workspace, env).returncode == 0
    shutil.move(kept, shards)
    for number, night in enumerate(archived, 1):
        for target in ([workspace / "baseline"] if night == archived[-1] else []) + [workspace / f"history/{number}"]:
            (target / "merged").mkdir(parents=True)
            for name in ("journal.jsonl", "run.json"):  # the copyArtifacts filter
                shutil.copy(night / name, target / "merged" / name)
    for label in ("setup", "merge", "history"):
        done = _run(_step(label), workspace, env)
        assert done.returncode == 0, label + done.stdout[-2000:] + done.stderr[-2000:]
    verdict = _run(_step("verdict"), workspace, env).returncode
    description = (workspace / "merged/changes.txt").read_text().splitlines()[0]
    return description, verdict


def _archive(workspace: Path, night: int) -> Path:
    """archiveArtifacts: the night's merged directory, kept by Jenkins."""
    return Path(shutil.copytree(workspace / "merged", workspace.parent / f"archive/{night}"))


def test_two_nights_as_jenkins_runs_them_the_second_names_what_changed(workspace):
    env = {**PIPELINE_ENV, "LAB_ARGS": LAB_ARGS}
    _shards(workspace, env)
    description, verdict = _merge(workspace, env, archived=[])
    merged = workspace / "merged"
    cells = {(c["arch"], c["status"]) for c in json.loads((merged / "results.json").read_text())["cells"]}
    # The known facts: i386-pae and riscv64 lose the marker on 6.1 (expected), x86_64 keeps it.
    assert cells == {("i386-pae", "XFAIL"), ("x86_64", "PASS"), ("riscv64", "XFAIL")}
    assert SCHEMA.is_valid(str(merged / "junit.xml"))
    assert (merged / "matrix.html").is_file() and not (merged / "merge-problems.txt").exists()
    per_shard = [json.loads((workspace / "shards" / s / "run.json").read_text())["jobs"] for s in ("1", "2", "3")]
    assert sorted(j for jobs in per_shard for j in jobs) == [["i386-pae", "6.1"], ["riscv64", "6.1"],
                                                             ["x86_64", "6.1"]]
    assert (description, verdict) == ("no earlier successful nightly to compare with", 0), "SUCCESS"
    first = _archive(workspace, 1)

    # The next night, x86_64's boot deadline is edited down to 1 s: that cell ERRORs.
    arch_toml = workspace / "configs/arches/x86_64.toml"
    arch_toml.write_text(arch_toml.read_text().replace("boot_timeout_s = 90", "boot_timeout_s = 1"))
    _shards(workspace, env)
    description, verdict = _merge(workspace, env, archived=[first])
    assert description == "1 newly erroring, 2 unchanged"
    assert verdict == 1, "UNSTABLE"
    html = (merged / "matrix.html").read_text()
    changes = html[html.index('id="changes"'):html.index("<h2>Matrix</h2>")]
    assert "1 newly erroring, 2 unchanged" in changes and "Newly erroring: 1" in changes
    assert re.findall(r'<a href="[^"]*">([^<]*)</a>:', changes) == ["x86_64/6.1 swp_exclusive"]
    history = (merged / "history.html").read_text()
    assert history.count('class="night"') == 2 and "x86_64/6.1 swp_exclusive" in history


def test_the_merge_step_fails_when_a_shard_is_missing(workspace):
    env = {**PIPELINE_ENV, "LAB_ARGS": LAB_ARGS}
    assert _run(_step("setup"), workspace, env).returncode == 0
    done = _run(_step("shard"), workspace, {**env, "SHARD": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    for shard in ("2", "3"):  # shards that ran nothing: a plan of the same id, no cells
        (workspace / "shards" / shard).mkdir(parents=True)
        shutil.copy(workspace / "shards/1/run.json", workspace / "shards" / shard / "run.json")
        (workspace / "shards" / shard / "journal.jsonl").write_text("")
    done = _run(_step("merge"), workspace, env)
    assert done.returncode != 0
    assert "missing:" in (workspace / "merged/merge-problems.txt").read_text()
