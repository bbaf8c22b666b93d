#!/usr/bin/env bash
# hexflow against the bare-quinn baseline, back to back in one invocation, one table of
# ratios (hexflow / bare) with the machine in the header.
#
#   bench/compare.sh [SCENARIO ...]      SCENARIO: handshakes | sessions | messages (default: all)
#
# Each scenario runs the release hexflow server + hexflow-bench, then bare-server +
# bare-client with the same shape, each server on a fresh data dir and stopped after its
# run; the clients sample the server's CPU and RSS from /proc (--server-pid). Knobs (env),
# defaults are a quick smoke run, the issue's sizes in brackets:
#
#   HANDSHAKE_CONNECTIONS=2000 [20000]  connections that connect and stay idle
#   HOLD_S=15 [40]                      run length of that scenario (must cover the connects)
#   CONNECT_CONCURRENCY=64              connection attempts in flight (both clients)
#   SESSION_CONNECTIONS=100 [1000]      connection slots cycling sessions
#   SESSION_DEVICES=100000              distinct hexflow devices for those sessions
#   SESSIONS_S=10 [30]
#   MESSAGE_CONNECTIONS=500             long-lived connections pipelining requests (hexflow-bench
#                                       devices send at most ~1000 fixes/s each: keep it high)
#   MESSAGE_INFLIGHT=4
#   MESSAGE_RATE=0                      offered fixes/s (0 = closed loop); bare gets the same
#   MESSAGES_S=10 [30]
#   OUT=DIR                             where reports, pictures and compare.md go (default mktemp)
#   NO_BUILD=1                          use the binaries in target/release as they are
#
# Bounded: every run stops by itself (its --duration + grace) and is also wrapped in
# `timeout`; the servers are stopped with SIGTERM. Writes OUT/compare.md and prints it.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

scenarios=("$@")
[ ${#scenarios[@]} -gt 0 ] || scenarios=(handshakes sessions messages)
HANDSHAKE_CONNECTIONS=${HANDSHAKE_CONNECTIONS:-2000}
HOLD_S=${HOLD_S:-15}
CONNECT_CONCURRENCY=${CONNECT_CONCURRENCY:-64}
SESSION_CONNECTIONS=${SESSION_CONNECTIONS:-100}
SESSION_DEVICES=${SESSION_DEVICES:-100000}
SESSIONS_S=${SESSIONS_S:-10}
MESSAGE_CONNECTIONS=${MESSAGE_CONNECTIONS:-500}
MESSAGE_INFLIGHT=${MESSAGE_INFLIGHT:-4}
MESSAGE_RATE=${MESSAGE_RATE:-0}
MESSAGES_S=${MESSAGES_S:-10}
OUT=${OUT:-$(mktemp -d /tmp/hexflow-compare.XXXXXX)}
mkdir -p "$OUT"
build_release

# The hexflow server must admit every connection of the largest scenario.
conns_max=$(( HANDSHAKE_CONNECTIONS > 10000 ? HANDSHAKE_CONNECTIONS + 1000 : 11000 ))
export HEXFLOW__ENDPOINT__CONNECTIONS_MAX=${HEXFLOW__ENDPOINT__CONNECTIONS_MAX:-$conns_max}

table_args=()
for s in "${scenarios[@]}"; do
  dir=$OUT/$s
  mkdir -p "$dir"
  echo "== $s: $(machine_line)" | tee -a "$OUT/runs.log"
  case $s in
    handshakes)
      n=$HANDSHAKE_CONNECTIONS
      # hexflow: long-lived devices, one batch at connect then one every 50 s (rate n fixes/s).
      start_hexflow "$dir/hexflow"
      { hexflow_bench "$dir/hexflow.json" $(( HOLD_S + 60 )) --devices "$n" --connections "$n" \
        --duration "$HOLD_S" --ramp-up-ms 0 --connect-concurrency "$CONNECT_CONCURRENCY" \
        --rate "$n" --inflight 1 || echo "hexflow-bench exit $?"; } | tee "$dir/hexflow.out"
      stop_server
      start_bare "$dir/bare"
      { bare_client "$dir/bare" "$dir/bare.json" $(( HOLD_S + 60 )) --mode hold --connections "$n" \
        --duration "$HOLD_S" --ramp-up-ms 0 --connect-concurrency "$CONNECT_CONCURRENCY" \
        || echo "bare-client exit $?"; } | tee "$dir/bare.out"
      stop_server
      ;;
    sessions)
      c=$SESSION_CONNECTIONS
      start_hexflow "$dir/hexflow"
      { hexflow_bench "$dir/hexflow.json" $(( SESSIONS_S + 60 )) --devices "$SESSION_DEVICES" \
        --connections "$c" --batches-per-session 1 --inflight 1 --duration "$SESSIONS_S" \
        --ramp-up-ms 1000 || echo "hexflow-bench exit $?"; } | tee "$dir/hexflow.out"
      stop_server
      start_bare "$dir/bare"
      { bare_client "$dir/bare" "$dir/bare.json" $(( SESSIONS_S + 60 )) --mode sessions \
        --connections "$c" --duration "$SESSIONS_S" --ramp-up-ms 1000 || echo "bare-client exit $?"; } \
        | tee "$dir/bare.out"
      stop_server
      ;;
    messages)
      c=$MESSAGE_CONNECTIONS
      start_hexflow "$dir/hexflow"
      { hexflow_bench "$dir/hexflow.json" $(( MESSAGES_S + 60 )) --devices "$c" --connections "$c" \
        --inflight "$MESSAGE_INFLIGHT" --rate "$MESSAGE_RATE" --duration "$MESSAGES_S" \
        --ramp-up-ms 1000 || echo "hexflow-bench exit $?"; } | tee "$dir/hexflow.out"
      stop_server
      start_bare "$dir/bare"
      { bare_client "$dir/bare" "$dir/bare.json" $(( MESSAGES_S + 60 )) --mode messages \
        --connections "$c" --inflight "$MESSAGE_INFLIGHT" --rate "$MESSAGE_RATE" \
        --duration "$MESSAGES_S" --ramp-up-ms 1000 || echo "bare-client exit $?"; } | tee "$dir/bare.out"
      stop_server
      ;;
    *) echo "unknown scenario $s (handshakes, sessions, messages)" >&2; exit 2 ;;
  esac
  table_args+=("$s" "$dir/hexflow.json" "$dir/bare.json")
done

{
  "$BENCH_TABLE" compare "${table_args[@]}"
  echo
  echo "Runs (each line: the machine when the scenario started):"
  echo
  sed 's/^/    /' "$OUT/runs.log"
  echo
  echo "Knobs: HANDSHAKE_CONNECTIONS=$HANDSHAKE_CONNECTIONS HOLD_S=$HOLD_S CONNECT_CONCURRENCY=$CONNECT_CONCURRENCY" \
    "SESSION_CONNECTIONS=$SESSION_CONNECTIONS SESSION_DEVICES=$SESSION_DEVICES SESSIONS_S=$SESSIONS_S" \
    "MESSAGE_CONNECTIONS=$MESSAGE_CONNECTIONS MESSAGE_INFLIGHT=$MESSAGE_INFLIGHT MESSAGE_RATE=$MESSAGE_RATE MESSAGES_S=$MESSAGES_S"
  echo "Reports and timeline pictures: $OUT/<scenario>/{hexflow,bare}.{json,svg}"
} > "$OUT/compare.md"
cat "$OUT/compare.md"
