# qemu-lab tasks. On a machine without `just`, run them as ./just <recipe>.
set shell := ["bash", "-euo", "pipefail", "-c"]
# Recipe arguments reach commands as "$@", exactly as given: never {{ARGS}}, which
# pastes them into the script text for bash to parse again ('x;id' would run id).
set positional-arguments

python := ".venv/bin/python"

# Build everything that is missing, boot, test and print the matrix (default plan).
run *ARGS: setup
    .venv/bin/lab run "$@"

# Unit tests and the real-QEMU integration tests.
test *ARGS: setup
    {{python}} -m pytest -v -ra tests "$@"

# The unit tests alone (about 30 s, no QEMU): the loop while editing the lab.
unit *ARGS: setup
    {{python}} -m pytest -q tests/unit "$@"

# The Jenkinsfile through Groovy's parser and the declarative pipeline's rules (no Jenkins needed).
check-jenkinsfile: setup
    {{python}} scripts/check_jenkinsfile.py Jenkinsfile

# Per-cell timings (QEMU start -> ready -> SSH -> test done) and total wall time.
bench *ARGS: setup
    {{python}} -m lab.bench "$@"

# Host packages (apt) and the Python package in .venv.
setup:
    scripts/setup-host
    {{python}} -m pip install -q --disable-pip-version-check -e '.[test]'

# Screenshot a run's matrix.html with headless Chromium (docs/matrix.png is made this way).
screenshot DIR OUT="docs/matrix.png" SIZE="2250x950": setup
    {{python}} -m lab.report.browser "$1/matrix.html" "$2" --size "$3"
