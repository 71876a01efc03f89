#!/usr/bin/env bash
# Set up a fresh machine (scripts/bootstrap.sh), then run a real debug session against a
# sample app on each Python: examples/demo.py narrates it.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYENV_VERSION="${PYENV_VERSION:-3.12.1:3.13.0}"
scripts/bootstrap.sh
for v in ${FASTATTACH_PYTHONS:-3.12 3.13}; do
    echo "== demo on Python $v"
    ".venv/$v/bin/python" examples/demo.py
done
