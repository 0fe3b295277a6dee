#!/usr/bin/env bash
# Builds everything, boots the hello unikernel, and times its boot next to a static
# process doing the same work, measured in the same run.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
[[ -f "$HOME/.cargo/env" ]] && . "$HOME/.cargo/env"

echo "== building lightvm"
cargo build --release --quiet
echo "== building the hello unikernel"
hello=$(./target/release/lightvm build guests/hello)
echo "== booting it"
./target/release/lightvm run "$hello"
echo "== boot time: process vs container vs unikernel (same run)"
./target/release/lightvm bench boot "$@"
