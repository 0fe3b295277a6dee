#!/usr/bin/env bash
# Builds everything, boots the hello unikernel on every platform this host has (kvm
# where /dev/kvm is usable, the sandboxed-process platform everywhere), and times
# its boot next to a static process doing the same work, measured in the same run.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
[[ -f "$HOME/.cargo/env" ]] && . "$HOME/.cargo/env"

echo "== building lightvm"
cargo build --release --quiet
# The target is named in .cargo/config.toml (lightvm is linked statically).
lightvm=./target/x86_64-unknown-linux-gnu/release/lightvm
echo "== building the hello unikernel"
hello=$("$lightvm" build guests/hello)
echo "== the platforms this host can run it on"
"$lightvm" platforms
for platform in $("$lightvm" platforms --available); do
    echo "== booting it on the $platform platform"
    "$lightvm" run --platform "$platform" "$hello"
done
echo "== boot time: process vs container vs unikernel (same run)"
"$lightvm" bench boot "$@"
