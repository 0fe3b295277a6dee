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
# The workspace's tests include the fuzz targets' smoke pass (crates/fuzz/tests/
# smoke.rs: each target's seeds and 2,000 mutations) and api-conformance's against
# a daemon (crates/lightvm/tests/api_conformance.rs: 400 cases); the campaigns are
# scripts/fuzz.sh, run by hand (README, "Fuzzing").
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace 2>&1 | tee "$log"
# cargo prints one "test result" line per test binary (the last is often an empty
# doc-test run): close with the totals over all of them.
awk '/^test result:/ { passed += $4; failed += $6; ignored += $8 }
     END { printf "tests: %d passed, %d failed, %d skipped\n", passed, failed, ignored }' "$log"
