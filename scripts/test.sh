#!/usr/bin/env bash
# The whole test suite: set up (scripts/bootstrap.sh), pytest on Python 3.12 and 3.13,
# then the C engine's tests again against an AddressSanitizer + UBSan build.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYENV_VERSION="${PYENV_VERSION:-3.12.1:3.13.0}"
scripts/bootstrap.sh || { echo "test.sh: bootstrap failed"; exit 1; }

status=0
for v in ${FASTATTACH_PYTHONS:-3.12 3.13}; do
    echo "== pytest, Python $v"
    ".venv/$v/bin/python" -m pytest -p no:cacheprovider -q -ra "$@" || status=1
done
echo "== AddressSanitizer build, engine tests"
scripts/asan.sh || status=1
exit $status
