"""The Jenkinsfile passes the LAB_ARGS build parameter as one argument: no shell sees its words."""

import json
import os
import re
import subprocess
import sys

from conftest import REPO

JENKINSFILE = (REPO / "Jenkinsfile").read_text()


def test_lab_args_reach_lab_as_one_argument(tmp_path):
    shard_step = re.search(r"sh label: 'shard', script: '''(.*?)'''", JENKINSFILE, re.S).group(1)
    (tmp_path / "just").write_text(f"#!{sys.executable}\nimport json, sys\n"
                                   "print('ARGV', json.dumps(sys.argv[1:]))\nsys.exit(1)\n")
    (tmp_path / "just").chmod(0o755)
    hostile = "--arch 'x;touch pwned' $(touch pwned2) `touch pwned3` *"
    done = subprocess.run(["sh", "-xe", "-c", shard_step], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "SHARD": "1", "SHARDS": "3", "LAB_ARGS": hostile}, timeout=30)
    argv = json.loads(done.stdout.split("ARGV ", 1)[1].splitlines()[0])
    assert argv == ["run", "--shard", "1/3", "--out", "shards/1", f"--extra-args={hostile}"]
    assert not list(tmp_path.glob("pwned*"))
