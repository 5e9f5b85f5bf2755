"""The Jenkinsfile, checked offline: Groovy 2.4's parser (Jenkins' own version) and the
declarative pipeline's rules (scripts/check_jenkinsfile.py). Each rule is shown to
catch a broken copy of the real file."""

import importlib.util

import pytest

from conftest import REPO

_spec = importlib.util.spec_from_file_location("check_jenkinsfile", REPO / "scripts" / "check_jenkinsfile.py")
check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check)
JENKINSFILE = (REPO / "Jenkinsfile").read_text()


def test_the_jenkinsfile_parses_and_keeps_the_declarative_rules(capsys):
    assert check.main([str(REPO / "Jenkinsfile")]) == 0, capsys.readouterr().out
    calls = check.outline(REPO / "Jenkinsfile")
    stages = next(c for c in calls[0]["body"] if c["name"] == "stages")
    assert [c["name"] for c in stages["body"]] == ["stage", "stage"]


def _problems(tmp_path, old: str, new: str) -> list[str]:
    assert old in JENKINSFILE
    broken = tmp_path / "Jenkinsfile"
    broken.write_text(JENKINSFILE.replace(old, new, 1))
    try:
        return check.problems(check.outline(broken), "Jenkinsfile")
    except ValueError as exc:
        return [f"parse: {exc}"]


@pytest.mark.parametrize("old, new, complaint", [
    ("        stage('Merge') {\n", "        stage('Merge') \n", "parse: "),  # a brace short
    ("sh label: 'clean', script: 'rm -rf shards merged baseline history'",
     "sh label: 'clean', script: \"rm -rf shards/${params.LAB_ARGS}\"", "script is a GString"),
    ("    triggers {", "    trigger {", "'trigger' is not allowed in pipeline"),
    ("sh label: 'setup', script: './just setup'", "sh label: 'setup', scrip: './just setup'",
     "sh: unknown argument 'scrip'"),
    ("junit testResults:", "junitt testResults:", "'junitt' is not a step this pipeline may use in always"),
    ("            steps {\n                sh label: 'clean'", "            stepz {\n                sh label: 'clean'",
     "'stepz' is not allowed in stage"),
    ("selector: lastSuccessful(stable: false)", "selector: lastSuccessful(stabel: false)",
     "lastSuccessful: unknown argument 'stabel'"),
])
def test_each_rule_catches_a_broken_copy(tmp_path, old, new, complaint):
    found = _problems(tmp_path, old, new)
    assert any(complaint in line for line in found), found


def test_a_stage_needs_exactly_one_body(tmp_path):
    found = _problems(tmp_path, "stage('Merge') {\n            agent { label 'qemu-lab' }\n            steps {",
                      "stage('Merge') {\n            agent { label 'qemu-lab' }\n            stages {} \n steps {")
    assert any("stage: needs a name and exactly one of" in line for line in found), found
