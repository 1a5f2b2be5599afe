#!/usr/bin/env bash
# Everything from a fresh clone: set up .venv, then run the test suite offline. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
. scripts/env.sh
python -m pytest "$@"
