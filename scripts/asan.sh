#!/usr/bin/env bash
# Build _fasttrace with -fsanitize=address,undefined into its own venv and run the tests
# that drive the C engine (alone and behind a real pydevd) under it.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYENV_VERSION="${PYENV_VERSION:-3.12.1:3.13.0}"
v="${FASTATTACH_ASAN_PYTHON:-3.12}"
venv=".venv/asan-$v"
[ -x "$venv/bin/python" ] || "python$v" -m venv "$venv"
"$venv/bin/python" -m pip install -q -r requirements-dev.txt
"$venv/bin/python" -m pip install -q --no-build-isolation --force-reinstall --no-deps \
    -Cbuild-dir="build/asan-$v" -Ccmake.define.FASTATTACH_SANITIZE=ON -Ccmake.define.FASTATTACH_WERROR=ON .
libasan="$(gcc -print-file-name=libasan.so)"
# The interpreter itself is not instrumented: preload the runtime, let ASan see every
# allocation (PYTHONMALLOC=malloc), and skip leak checks (CPython keeps memory at exit).
# Run from tests/ so the installed (sanitized) package is imported, not ./python.
cd tests
LD_PRELOAD="$libasan" PYTHONMALLOC=malloc ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 \
    UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
    "../$venv/bin/python" -m pytest -p no:cacheprovider -q -c ../pyproject.toml --rootdir .. \
    test_fasttrace.py test_conditions.py test_gate.py test_debuggee_signals.py
