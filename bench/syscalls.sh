#!/usr/bin/env bash
# System calls per exchange, per server: `strace -c -f` on the server (all
# its threads) while `bench load` drives it, divided by the exchanges the
# load generator counted. One `ping` line and its `pong` is an exchange.
#
#   bench/syscalls.sh [CLIENTS] [MS] [PROTOCOL] [KIND...]
#   bench/syscalls.sh 64 3000 lines frontdesk-turns tokio epoll frontdesk
#
# Needs strace and a release build of the bench
# (`cargo build --release -p bench`). strace slows every system call, so
# the rates it prints mean nothing; the counts per exchange do.
set -euo pipefail
cd "$(dirname "$0")/.."
clients=${1:-64}
ms=${2:-3000}
protocol=${3:-lines}
shift $(( $# < 3 ? $# : 3 ))
kinds=("$@")
[ ${#kinds[@]} -eq 0 ] && kinds=(frontdesk-turns tokio epoll)
bench=target/release/bench
[ -x "$bench" ] || { echo "build it first: cargo build --release -p bench" >&2; exit 1; }
command -v strace >/dev/null || { echo "strace is needed (apt-get install strace)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for kind in "${kinds[@]}"; do
    "$bench" serve "$kind" "$protocol" --workers 8 >"$work/serve" 2>&1 &
    server=$!
    for _ in $(seq 100); do
        grep -q "listening on" "$work/serve" && break
        sleep 0.1
    done
    addr=$(grep -o "127.0.0.1:[0-9]*" "$work/serve" | head -1)
    strace -c -f -p "$server" -o "$work/strace" 2>/dev/null &
    tracer=$!
    # strace attaches to every thread before the load starts.
    sleep 1
    load=$("$bench" load "$protocol" "$addr" "$clients" 0 "$ms")
    kill -INT "$tracer"
    wait "$tracer" 2>/dev/null || true
    kill "$server"
    wait "$server" 2>/dev/null || true
    exchanges=$(echo "$load" | awk '{print $1}')
    echo "== $kind, $protocol, $clients clients: $exchanges exchanges"
    awk -v n="$exchanges" '
        $NF == "total" { printf "   all system calls: %.2f per exchange\n", $4 / n; next }
        NF >= 5 && $4 ~ /^[0-9]+$/ { printf "   %-16s %.3f\n", $NF, $4 / n }
    ' "$work/strace"
done
