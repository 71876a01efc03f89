#!/usr/bin/env bash
# CPython 3.14 and 3.15 exist for these machines only as Debian sid packages, which need a
# newer glibc than bookworm's. This script makes a Debian sid chroot with debootstrap (once:
# it is cached outside the checkout and reused), bind-mounts the checkout into it at the same
# path, runs the given command inside, and always unmounts afterwards.
#
#   scripts/sid-chroot.sh run CMD...   run CMD in the chroot, in this checkout
#   scripts/sid-chroot.sh ensure       only make (or check) the cached chroot
#   scripts/sid-chroot.sh path         print where the chroot is cached
#
# The mirror is the Debian archive the machine's own apt sources name; no host is written here.
# FASTATTACH_CHROOT overrides the cache location; FASTATTACH_CHROOT_BINDS names more host folders
# to bind-mount (colon-separated).
set -euo pipefail
cd "$(dirname "$0")/.."
checkout="$PWD"
root="${FASTATTACH_CHROOT:-/var/cache/fastattach/sid-chroot}"

# Everything the suite needs inside: both interpreters with headers and venv, a compiler,
# valgrind for the instruction counts, Emacs and dap-mode for the editor tests, procps for
# ps/kill in the tests, and Debian's de-vendored debugpy with its separate pydevd.
PACKAGES="python3.14 python3.14-dev python3.14-venv python3.15 python3.15-dev python3.15-venv
gcc libc6-dev valgrind procps ca-certificates emacs-nox elpa-dap-mode
python3-debugpy python3-pydevd"
stamp_text="$(echo $PACKAGES | tr ' ' '\n' | sort | tr '\n' ' ')"

# The machine's archive may be a dated snapshot, as its own apt configuration allows.
APT_OPTIONS="-o Acquire::Check-Valid-Until=false -o Acquire::Check-Date=false"

die() { echo "sid-chroot: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "needs root (debootstrap, chroot and mount); running as uid $(id -u)"

# The Debian archive this machine's apt already uses: the URI of the source that carries the
# main archive (not -security), in deb822 (.sources) or one-line (.list) form.
debian_mirror() {
    python3 - <<'EOF'
import glob, re, sys
found = []
for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
    for stanza in re.split(r"\n\s*\n", open(path).read()):
        fields = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line:
                continue
            key, _, value = line.partition(":")
            fields[key.strip().lower()] = value.split()
        suites = fields.get("suites", [])
        if "deb" in fields.get("types", []) and "main" in fields.get("components", []) \
                and suites and not any(s.endswith("-security") for s in suites) \
                and "debian-archive-keyring" in " ".join(fields.get("signed-by", [])):
            found += fields.get("uris", [])
for path in ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*.list")):
    try:
        lines = open(path).read().splitlines()
    except OSError:
        continue
    for line in lines:
        words = re.sub(r"\[[^]]*\]", "", line.split("#")[0]).split()
        if len(words) >= 4 and words[0] == "deb" and "/debian" in words[1] \
                and not words[2].endswith("-security") and "main" in words[3:]:
            found.append(words[1])
if not found:
    sys.exit("no Debian main archive found in /etc/apt/sources.list{,.d}")
print(found[0])
EOF
}

# Unmount everything below the chroot, deepest first: also what a killed run left behind.
unmount_all() {
    local m
    for m in $(awk -v r="$root" '$2 == r || index($2, r "/") == 1 {print $2}' /proc/mounts | sort -r); do
        umount -l "$m" 2>/dev/null || true
    done
}

ensure_chroot() {
    if [ -f "$root/.fastattach-ready" ] && [ "$(cat "$root/.fastattach-ready")" = "$stamp_text" ]; then
        return 0
    fi
    unmount_all
    if ! command -v debootstrap >/dev/null; then
        echo "sid-chroot: apt-get install debootstrap"
        apt-get update -qq || die "apt-get update failed"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null \
            || die "cannot install debootstrap with apt-get; 3.14 and 3.15 cannot be tested on this machine"
    fi
    local mirror
    mirror="$(debian_mirror)" || die "cannot read the Debian mirror from the apt sources"
    if [ ! -f "$root/.debootstrap-done" ]; then
        echo "sid-chroot: debootstrap sid from the machine's Debian archive into $root (several minutes)"
        rm -rf "$root"
        mkdir -p "$root"
        debootstrap --variant=minbase sid "$root" "$mirror" >"$root.debootstrap.log" 2>&1 \
            || { tail -20 "$root.debootstrap.log" >&2; die "debootstrap failed (log: $root.debootstrap.log)"; }
        touch "$root/.debootstrap-done"
    fi
    echo "deb $mirror sid main" >"$root/etc/apt/sources.list"
    cp /etc/resolv.conf "$root/etc/resolv.conf"
    mount_for_run
    echo "sid-chroot: apt-get install in the chroot"
    chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
        sh -c "apt-get $APT_OPTIONS update -qq && apt-get $APT_OPTIONS install -y -qq --no-install-recommends $(echo $PACKAGES)" \
        >"$root.apt.log" 2>&1 || { tail -20 "$root.apt.log" >&2; unmount_all; die "apt-get install in the chroot failed (log: $root.apt.log)"; }
    unmount_all
    echo "$stamp_text" >"$root/.fastattach-ready"
}

mount_for_run() {
    mkdir -p "$root/proc" "$root/dev" "$root/sys" "$root$checkout"
    mount -t proc proc "$root/proc"
    mount --rbind /dev "$root/dev"
    mount --make-rslave "$root/dev"
    mount -t sysfs sysfs "$root/sys" 2>/dev/null || true
    mount --bind "$checkout" "$root$checkout"
    # More host folders at the same path, e.g. FASTATTACH_CHROOT_BINDS="$(pyenv root)" so that the
    # host's 3.12 and 3.13 venvs run inside too (a benchmark of all four Pythons in one run).
    local extra
    for extra in $(echo "${FASTATTACH_CHROOT_BINDS:-}" | tr ':' ' '); do
        [ -d "$extra" ] || die "FASTATTACH_CHROOT_BINDS: $extra is not a folder"
        mkdir -p "$root$extra"
        mount --bind "$extra" "$root$extra"
    done
    # pip inside reaches PyPI the way the host's pip does: same CA bundle and settings.
    cp /etc/resolv.conf "$root/etc/resolv.conf"
    if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
        mkdir -p "$root/etc/fastattach-host"
        cp /etc/ssl/certs/ca-certificates.crt "$root/etc/fastattach-host/ca-certificates.crt"
    fi
}

case "${1:-}" in
    path) echo "$root" ;;
    ensure) ensure_chroot ;;
    run)
        shift
        [ $# -gt 0 ] || die "usage: $0 run CMD..."
        ensure_chroot
        # A private mount namespace: the mounts vanish with it, and runs side by side do
        # not unmount each other's. The trap covers the machine where unshare is refused.
        if [ -z "${FASTATTACH_CHROOT_NS:-}" ] && unshare -m --propagation private true 2>/dev/null; then
            FASTATTACH_CHROOT_NS=1 exec unshare -m --propagation private "$0" run "$@"
        fi
        [ -n "${FASTATTACH_CHROOT_NS:-}" ] || trap unmount_all EXIT
        mount_for_run
        status=0
        chroot "$root" /usr/bin/env -i PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
            LANG=C.UTF-8 TERM="${TERM:-dumb}" CI="${CI:-}" \
            PIP_CERT=/etc/fastattach-host/ca-certificates.crt PIP_DISABLE_PIP_VERSION_CHECK=1 \
            PIP_DEFAULT_TIMEOUT="${PIP_DEFAULT_TIMEOUT:-180}" FASTATTACH_IN_CHROOT=1 \
            sh -c 'cd "$1" && shift && exec "$@"' sh "$checkout" "$@" || status=$?
        exit $status
        ;;
    *) die "usage: $0 {run CMD...|ensure|path}" ;;
esac
