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


def _sh_steps() -> list[tuple[str, str]]:
    """(label, script) of every `sh label: ..., script: ...` step, in file order."""
    pattern = re.compile(r"sh label: '([^']+)', script: (?:'''(.*?)'''|'([^']*)')", re.S)
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
    assert [label for label, _ in _sh_steps()] == ["setup", "shard", "clean", "setup", "merge"]
    assert _step("setup") == "./just setup", "the README's setup, nothing else"


@pytest.fixture
def workspace(tmp_path):
    """A copy of the checkout as an agent's workspace (without the venv and results)."""
    ws = tmp_path / "workspace"
    shutil.copytree(REPO, ws, ignore=shutil.ignore_patterns(".venv", "results", "shards", "merged", ".git",
                                                              "__pycache__", ".pytest_cache", "*.egg-info"))
    return ws


def test_setup_three_shards_and_merge_as_jenkins_runs_them(workspace):
    env = {"SHARDS": "3", "LAB_ARGS": LAB_ARGS}
    # Stage "Shards": each matrix cell runs setup and its shard in its own workspace.
    done = _run(_step("setup"), workspace, env)
    assert done.returncode == 0, done.stderr[-2000:]
    for shard in ("1", "2", "3"):
        done = _run(_step("shard"), workspace, {**env, "SHARD": shard})
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        assert f"lab run --shard {shard}/3: exit status 0" in done.stdout
    # Stage "Merge": clean, unstash (the shard directories are already in place), setup, merge.
    shards = workspace / "shards"
    kept = workspace.parent / "stash"
    shutil.move(shards, kept)
    assert _run(_step("clean"), workspace, env).returncode == 0
    shutil.move(kept, shards)
    done = _run(_step("merge"), workspace, env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]

    merged = workspace / "merged"
    cells = {(c["arch"], c["status"]) for c in json.loads((merged / "results.json").read_text())["cells"]}
    # The known facts: i386-pae and riscv64 lose the marker on 6.1 (expected), x86_64 keeps it.
    assert cells == {("i386-pae", "XFAIL"), ("x86_64", "PASS"), ("riscv64", "XFAIL")}
    assert SCHEMA.is_valid(str(merged / "junit.xml"))
    assert (merged / "matrix.html").is_file() and not (merged / "merge-problems.txt").exists()
    per_shard = [json.loads((shards / s / "run.json").read_text())["jobs"] for s in ("1", "2", "3")]
    assert sorted(j for jobs in per_shard for j in jobs) == [["i386-pae", "6.1"], ["riscv64", "6.1"],
                                                             ["x86_64", "6.1"]]


def test_the_merge_step_fails_when_a_shard_is_missing(workspace):
    env = {"SHARDS": "3", "LAB_ARGS": LAB_ARGS}
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
