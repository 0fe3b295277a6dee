#!/usr/bin/env bash
# Network figures, unikernel vs host process, side by side in one run:
#   UDP echo round-trip time (p50/p99), TCP throughput to a sink, HTTP requests/s (wrk).
#
# Everything happens in two private network namespaces made here and deleted at the
# end (also on failure); no host interface is touched and no traffic leaves them:
#
#   lvm-bench-$$ (the clients)          lvm-bench-$$-peer
#     lvmtap0 10.0.0.1/24 ── tap ──  unikernel 10.0.0.2       (lightvm run … --net)
#     vethc   10.0.1.1/24 ── veth ── vethp 10.0.1.2           (host processes)
#
# Usage: scripts/bench-net.sh [--quick]   (run as root; needs iproute2 and wrk)
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -f "$HOME/.cargo/env" ]] && . "$HOME/.cargo/env"

ROUNDS=20000; MIB=256; WRK_SECS=10; CONNS=32
if [[ "${1:-}" == "--quick" ]]; then ROUNDS=2000; MIB=64; WRK_SECS=3; fi

cargo build --release --quiet
LIGHTVM=$PWD/target/release/lightvm
PEER=$PWD/target/release/lightvm-netpeer
declare -A IMG
for app in udp-echo sink httpd; do IMG[$app]=$("$LIGHTVM" build "guests/$app" 2>/dev/null); done

NS=lvm-bench-$$; PNS=$NS-peer
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    ip netns del "$PNS" 2>/dev/null || true
    ip netns del "$NS" 2>/dev/null || true
}
trap cleanup EXIT
ip netns add "$NS"; ip netns add "$PNS"
in_ns() { ip netns exec "$NS" "$@"; }
in_peer() { ip netns exec "$PNS" "$@"; }
in_ns ip link set lo up; in_peer ip link set lo up
in_ns ip tuntap add dev lvmtap0 mode tap
in_ns ip addr add 10.0.0.1/24 dev lvmtap0
in_ns ip link set lvmtap0 up
in_ns ip link add vethc type veth peer name vethp netns "$PNS"
in_ns ip addr add 10.0.1.1/24 dev vethc; in_ns ip link set vethc up
in_peer ip addr add 10.0.1.2/24 dev vethp; in_peer ip link set vethp up

# start_vm APP: boots the unikernel on the tap and waits for it to listen.
start_vm() {
    local log; log=$(mktemp)
    # `ip netns exec` execs the command, so $! is the VMM itself.
    ip netns exec "$NS" "$LIGHTVM" run "${IMG[$1]}" --mem 64M --net tap=lvmtap0 \
        --cmdline "ip=10.0.0.2/24 gw=10.0.0.1" >"$log" 2>&1 &
    VM=$!; PIDS+=("$VM")
    for _ in $(seq 100); do grep -qE "listening|serving" "$log" && return; sleep 0.05; done
    echo "bench-net: $1 did not start:"; cat "$log"; exit 1
}
stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }
start_peer() {
    ip netns exec "$PNS" "$PEER" "$@" >/dev/null 2>&1 &
    PEERPID=$!; PIDS+=("$PEERPID"); sleep 0.3
}

echo "== UDP echo round trip, 64-byte datagrams, $ROUNDS rounds"
start_vm udp-echo;            start_peer udp-echo 10.0.1.2:7
in_ns "$PEER" udp-rtt 10.0.0.2:7 "$ROUNDS" | sed 's/^/unikernel  /'
in_ns "$PEER" udp-rtt 10.0.1.2:7 "$ROUNDS" | sed 's/^/process    /'
stop "$VM"; stop "$PEERPID"

echo "== TCP throughput to a sink, $MIB MiB"
start_vm sink;                start_peer sink 10.0.1.2:9
in_ns "$PEER" tcp-send 10.0.0.2:9 "$MIB" | sed 's/^/unikernel  /'
in_ns "$PEER" tcp-send 10.0.1.2:9 "$MIB" | sed 's/^/process    /'
stop "$VM"; stop "$PEERPID"

echo "== HTTP GET / with keep-alive: wrk, 1 thread, $CONNS connections, ${WRK_SECS}s"
start_vm httpd;               start_peer httpd 10.0.1.2:80
for target in unikernel:10.0.0.2 process:10.0.1.2; do
    printf '%-10s ' "${target%%:*}"
    in_ns wrk -t1 -c"$CONNS" -d"${WRK_SECS}s" --latency "http://${target#*:}/" \
        | awk '/Requests\/sec/ {rps=$2} /^ +50%/ {p50=$2} /^ +99%/ {p99=$2} /Non-2xx|Socket errors/ {err=err" "$0}
               END {printf "%s requests/s, latency p50 %s p99 %s%s\n", rps, p50, p99, err}'
done
stop "$VM"; stop "$PEERPID"
