#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit tests and the end-to-end tests that
# boot real VMs on /dev/kvm. CI runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
[[ -f "$HOME/.cargo/env" ]] && . "$HOME/.cargo/env"

echo "== format"
cargo fmt --all -- --check
cargo fmt --manifest-path guests/Cargo.toml --all -- --check
echo "== lints"
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo clippy --manifest-path guests/Cargo.toml --workspace --quiet \
    --target x86_64-unknown-linux-gnu -- -D warnings
echo "== tests"
cargo test --workspace
