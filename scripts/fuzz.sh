#!/usr/bin/env bash
# Coverage-guided fuzzing of lightvm's parsers and decoders (crates/fuzz), with
# libFuzzer on stable Rust: SanitizerCoverage is an LLVM pass that stable rustc
# runs through `-C passes` and `-C llvm-args` (no -Z flag, no nightly, no
# cargo-fuzz); libfuzzer-sys builds libFuzzer itself with the C++ compiler.
#
#   scripts/fuzz.sh list                   the targets and what each feeds
#   scripts/fuzz.sh run TARGET [RUNS]      one target for RUNS executions (1000000)
#   scripts/fuzz.sh all [RUNS]             every target in turn
#   scripts/fuzz.sh replay TARGET FILE...  run inputs (a crash) through a target
#   scripts/fuzz.sh api [CASES] [SEED]     the daemon's API against docs/openapi.json
#                                          (api-conformance: schemathesis's checks),
#                                          CASES requests (10000) to a daemon it starts
#
# Each run starts from the target's seeds plus its corpus in target/fuzz/corpus/,
# which grows across runs; crashes land in target/fuzz/crashes/TARGET/. Runs are
# niced; extra libFuzzer flags go in LIBFUZZER_FLAGS (e.g. -max_total_time=600).
# Overflow checks and debug assertions are on, as in cargo-fuzz.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -f "$HOME/.cargo/env" ]] && . "$HOME/.cargo/env"

triple=$(rustc -vV | sed -n 's/^host: //p')
out=target/fuzz
driver() { cargo run --quiet --release -p lightvm-fuzz --bin fuzz-driver -- "$@"; }

build() {
    # The flags apply to the target triple only (never to build scripts and
    # proc-macros), so the triple is named; the build has its own target dir.
    RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks \
--cfg fuzzing" \
        nice -n 19 cargo build --quiet --release -p lightvm-fuzz --features libfuzzer \
        --bin lightvm-fuzz --target "$triple" --target-dir "$out/build"
}

run() {
    local target=$1 runs=${2:-1000000}
    local corpus=$out/corpus/$target seeds=$out/seeds/$target crashes=$out/crashes/$target
    mkdir -p "$corpus" "$crashes"
    driver seeds "$target" "$seeds" || { echo "$target: could not write its seeds" >&2; return 1; }
    local log=$out/$target.log
    echo "== $target: $runs executions (log: $log)"
    local status=0
    # shellcheck disable=SC2086 # LIBFUZZER_FLAGS is a list of flags
    LIGHTVM_FUZZ_TARGET=$target nice -n 19 "$out/build/$triple/release/lightvm-fuzz" \
        -runs="$runs" -rss_limit_mb=4096 -timeout=10 -print_final_stats=1 \
        -artifact_prefix="$crashes/" ${LIBFUZZER_FLAGS:-} "$corpus" "$seeds" \
        >"$log" 2>&1 || status=$?
    grep -E '^(stat::number_of_executed_units|Done |==[0-9]+== ERROR|SUMMARY)' "$log" || true
    if ((status != 0)); then
        echo "$target: libFuzzer exited with $status; the input is in $crashes/" >&2
        tail -n 40 "$log" >&2
        return "$status"
    fi
}

case "${1:-}" in
list) driver list ;;
run)
    [[ $# -ge 2 ]] || { echo "usage: $0 run TARGET [RUNS]" >&2; exit 2; }
    driver list | awk '{ print $1 }' | grep -qx "$2" || { echo "no target $2" >&2; exit 2; }
    build
    run "$2" "${3:-}"
    ;;
all)
    build
    failed=0
    for target in $(driver list | awk '{ print $1 }'); do
        run "$target" "${2:-}" || failed=1
    done
    exit "$failed"
    ;;
replay)
    [[ $# -ge 3 ]] || { echo "usage: $0 replay TARGET FILE..." >&2; exit 2; }
    driver replay "${@:2}"
    ;;
api)
    # A real daemon (release build) on a socket and state directory of its own;
    # the seed is printed, and `--seed S --cases N --stop-at-first` replays.
    nice -n 19 cargo build --quiet --release -p lightvm -p lightvm-fuzz \
        --bin lightvm --bin api-conformance
    bin=target/$triple/release
    seed=()
    [[ -n "${3:-}" ]] && seed=(--seed "$3")
    nice -n 19 "$bin/api-conformance" --lightvm "$bin/lightvm" --cases "${2:-10000}" "${seed[@]}"
    ;;
*)
    sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
