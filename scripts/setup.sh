#!/usr/bin/env bash
# Installs what building and testing lightvm needs on a fresh Debian machine, with
# or without /dev/kvm. Idempotent and quiet when everything is already there.
set -euo pipefail

# Debian packages:
# - a C toolchain with static glibc (the process baseline of the benchmarks, crates
#   that build C), util-linux's unshare/setpriv (tests);
# - linux-source-6.1 and what building it needs (`lightvm kernel build`), cpio for
#   initramfs images;
# - iproute2, curl, ping (the network tests' namespaces, taps and probes), wrk and
#   apache2-utils (ab) for the HTTP figures;
# - what `lightvm bench` uses: runc (the container platform), librsvg2-bin
#   (rsvg-convert: the PNG of each plot) and a font for the plots' text;
# - the Linux programs the personality's tests run unmodified: musl-tools (static
#   musl programs), busybox-static, nginx-light, redis-server and iperf3 (their
#   binaries only: the services they would start are kept from starting).
PACKAGES=(
    build-essential libc6-dev util-linux pkg-config musl-tools
    busybox-static nginx-light redis-server redis-tools iperf3
    linux-source-6.1 flex bison bc libelf-dev libssl-dev cpio xz-utils
    iproute2 curl iputils-ping wrk apache2-utils
    runc librsvg2-bin fonts-dejavu-core
)

missing=()
for package in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$package")
done
if ((${#missing[@]})); then
    echo "setup: installing ${missing[*]}"
    SUDO=""
    [[ $(id -u) -eq 0 ]] || SUDO="sudo"
    $SUDO apt-get update -qq
    # The tests need the servers' binaries, not a running nginx or redis on the
    # host: where no policy says otherwise, keep the packages from starting them.
    policy=/usr/sbin/policy-rc.d
    made_policy=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
        $SUDO chmod 755 "$policy"
        made_policy=1
    fi
    status=0
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null || status=$?
    ((made_policy)) && $SUDO rm -f "$policy"
    ((status == 0)) || exit "$status"
fi

if ! command -v cargo >/dev/null 2>&1; then
    [[ -f "$HOME/.cargo/env" ]] && . "$HOME/.cargo/env"
fi
if ! command -v cargo >/dev/null 2>&1; then
    echo "setup: cargo not found. lightvm needs a stable Rust toolchain (1.87 or newer):" >&2
    echo "       install it with rustup (https://rustup.rs), then run this again." >&2
    exit 1
fi
rustup component list --installed 2>/dev/null | grep -q '^clippy' \
    || rustup component add clippy rustfmt >/dev/null 2>&1 || true

if [[ ! -e /dev/kvm ]]; then
    echo "setup: no /dev/kvm here: unikernels run on the process platform; the kvm platform and Linux microVMs (and their tests) need KVM" >&2
fi
