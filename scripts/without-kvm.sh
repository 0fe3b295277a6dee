#!/usr/bin/env bash
# Runs a command as it would run on a host without /dev/kvm (the machines of kind B
# in shared/DESIGN.md), on a host that has one: in a private mount namespace whose
# /dev is a fresh tmpfs holding the usual device nodes, but no kvm. For checking
# the no-KVM paths — the process platform by default, the kvm tests reported as
# skipped — before a change lands. Needs root (a mount namespace).
#
#   scripts/without-kvm.sh env CARGO_TARGET_DIR="$PWD/target/no-kvm" ./scripts/test.sh
#
# A separate target directory keeps the builds for the two kinds of host apart
# (the tests' kvm cfg is decided when they are built).
# Give it as an absolute path: Cargo runs build scripts and tests in each
# crate's own directory.
set -euo pipefail
if [[ $# -eq 0 ]]; then
    echo "usage: $0 COMMAND [ARG...]" >&2
    exit 2
fi
exec unshare --mount --propagation private bash -c '
    set -euo pipefail
    host_dev=$(mktemp -d)
    mount --rbind /dev "$host_dev"
    mount -t tmpfs -o mode=755,nosuid tmpfs /dev
    for node in null zero full random urandom tty ptmx net/tun; do
        [[ -e "$host_dev/$node" ]] || continue
        mkdir -p "/dev/$(dirname "$node")"
        touch "/dev/$node"
        mount --bind "$host_dev/$node" "/dev/$node"
    done
    for dir in pts shm mqueue; do
        [[ -d "$host_dev/$dir" ]] || continue
        mkdir -p "/dev/$dir"
        mount --rbind "$host_dev/$dir" "/dev/$dir"
    done
    ln -s /proc/self/fd /dev/fd
    ln -s /proc/self/fd/0 /dev/stdin
    ln -s /proc/self/fd/1 /dev/stdout
    ln -s /proc/self/fd/2 /dev/stderr
    umount -l "$host_dev"
    rmdir "$host_dev"
    exec "$@"
' without-kvm "$@"
