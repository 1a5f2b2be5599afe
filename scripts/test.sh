#!/usr/bin/env bash
# Everything from a fresh clone: set up .venv, then run the test suite offline. Extra arguments go to pytest.
# The suite runs in PYTEST_WORKERS processes (default 2, pytest-xdist; 0 runs it in this one), each test file on one
# worker so its module fixtures are built once, the longest files first (tests/conftest.py LONGEST_FIRST; xdist's own
# reordering by number of tests is off); with workers, torch uses one thread each (no oversubscription).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
. scripts/env.sh
WORKERS=${PYTEST_WORKERS:-2}
if [ "$WORKERS" != 0 ]; then
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
  exec python -m pytest -n "$WORKERS" --dist loadfile --no-loadscope-reorder "$@"
fi
exec python -m pytest "$@"
