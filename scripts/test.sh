#!/usr/bin/env bash
# The whole test suite, on every supported Python: set up (scripts/bootstrap.sh), ruff, pytest on
# 3.12 and 3.13 (pyenv, on the host), the C engine's tests again against an AddressSanitizer
# + UBSan build, then pytest on 3.14 and 3.15 inside a Debian sid chroot (scripts/sid-chroot.sh:
# made once with debootstrap and cached outside the checkout). A machine where the chroot
# cannot be made fails here; it does not skip those Pythons.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYENV_VERSION="${PYENV_VERSION:-3.12.1:3.13.0}"
HOST_PYTHONS="${FASTATTACH_PYTHONS-3.12 3.13}"
CHROOT_PYTHONS="${FASTATTACH_CHROOT_PYTHONS-3.14 3.15}"
started=$SECONDS
FASTATTACH_PYTHONS="$HOST_PYTHONS" scripts/bootstrap.sh || { echo "test.sh: bootstrap failed"; exit 1; }

status=0
lint_python=".venv/${HOST_PYTHONS%% *}/bin/python"
if [ -n "$HOST_PYTHONS" ]; then
    echo "== ruff"
    "$lint_python" -m ruff check python tests benchmarks examples scripts || status=1
fi
for v in $HOST_PYTHONS; do
    echo "== pytest, Python $v"
    ".venv/$v/bin/python" -m pytest -p no:cacheprovider -q -ra "$@" || status=1
done
if [ -n "$HOST_PYTHONS" ]; then
    echo "== AddressSanitizer build, engine tests"
    scripts/asan.sh || status=1
fi
if [ -n "$CHROOT_PYTHONS" ]; then
    echo "== Debian sid chroot for Python $CHROOT_PYTHONS"
    if scripts/sid-chroot.sh ensure; then
        # Quoted for the shell inside the chroot: the pytest arguments pass through unchanged.
        args=$(printf ' %q' "$@")
        scripts/sid-chroot.sh run bash -c "
            FASTATTACH_SKIP_APT=1 FASTATTACH_PYTHONS='$CHROOT_PYTHONS' scripts/bootstrap.sh || { echo 'test.sh: bootstrap in the chroot failed'; exit 1; }
            status=0
            for v in $CHROOT_PYTHONS; do
                echo \"== pytest, Python \$v (sid chroot)\"
                .venv/\$v/bin/python -m pytest -p no:cacheprovider -q -ra $args || status=1
            done
            exit \$status" || status=1
    else
        echo "test.sh: the sid chroot for Python $CHROOT_PYTHONS could not be made (see above); failing"
        status=1
    fi
fi
echo "test.sh: finished in $((SECONDS - started)) s, status $status"
exit $status
