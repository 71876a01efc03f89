#!/usr/bin/env bash
# Make .venv/3.12 and .venv/3.13 (or the FASTATTACH_PYTHONS given) with fastattach built and every
# test and benchmark dependency. Inside the sid chroot it makes .venv/3.14 and .venv/3.15 the same
# way (the chroot brings its own Debian packages: FASTATTACH_SKIP_APT=1). Idempotent: a second
# run only rebuilds the C extension. Only PyPI and Debian are reached.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYENV_VERSION="${PYENV_VERSION:-3.12.1:3.13.0}"
# Set but empty (scripts/test.sh with FASTATTACH_PYTHONS=""): the Debian packages only.
PYTHONS="${FASTATTACH_PYTHONS-3.12 3.13}"

# The real editor client for the end-to-end tests (Debian's Emacs and dap-mode), valgrind for
# the benchmark's instruction counts (benchmarks/bench_instructions.py), and debootstrap for the
# sid chroot that holds CPython 3.14 and 3.15 (scripts/sid-chroot.sh).
DEBIAN_PACKAGES="emacs-nox elpa-dap-mode valgrind debootstrap"
if ! dpkg -s $DEBIAN_PACKAGES >/dev/null 2>&1 && [ "${FASTATTACH_SKIP_APT:-0}" != 1 ]; then
    echo "bootstrap: apt-get install $DEBIAN_PACKAGES"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $DEBIAN_PACKAGES >/dev/null
fi

for v in $PYTHONS; do
    venv=".venv/$v"
    if [ ! -x "$venv/bin/python" ]; then
        "python$v" -m venv "$venv"
    fi
    "$venv/bin/python" -m pip install -q --upgrade pip >/dev/null
    "$venv/bin/python" -m pip install -q -r requirements-dev.txt
    "$venv/bin/python" -m pip install -q --no-build-isolation -Cbuild-dir="build/$v" \
        -Ccmake.define.FASTATTACH_WERROR=ON -e .
done
