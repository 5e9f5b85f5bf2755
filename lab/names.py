"""The names that become file names: arches, kernels and testcases.

Logs and report pages are written to paths built from these names, and names
also arrive in journals and run.json files from other machines (`lab merge`,
`lab report`, `--resume`). Every name is checked against this one pattern
wherever it is read, so none can leave the directory it names a file in.
"""

from __future__ import annotations

import re

_NAME = re.compile(r"[A-Za-z0-9_+-][A-Za-z0-9._+-]{0,63}")
RULE = "letters, digits, '.', '_', '-' and '+', not starting with '.', at most 64 characters"


def is_valid(name: object) -> bool:
    return isinstance(name, str) and _NAME.fullmatch(name) is not None


def is_safe_relative_path(path: object) -> bool:
    """A path inside a run directory: relative, made of valid names (so no '..', no '/' at the start)."""
    return isinstance(path, str) and all(is_valid(part) for part in path.split("/"))
