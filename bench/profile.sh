#!/usr/bin/env bash
# A CPU profile of the release server under a fixed open-loop load.
#
#   bench/profile.sh [SECONDS] [RATE_FIXES_PER_S] [DEVICES] [more hexflow-bench flags]
#   (defaults: 12 s, 140000 fixes/s, 200 devices, one long-lived connection each)
#
# Starts hexflow on a fresh data dir, runs hexflow-bench at --rate RATE for WARMUP_S +
# SECONDS + 2 s, and records `perf record -g -p <server>` for SECONDS once the warm-up is
# over. Then `perf script` is folded by `bench-table fold` into:
#   OUT/profile.folded   one `thread;outer;...;inner count` line per stack (flamegraph.pl /
#                        inferno input)
#   OUT/profile.svg      a flame graph (root at the top), hover a frame for its share
#   OUT/profile.md       samples per thread, the top symbols by self and inclusive samples
# plus OUT/report.{json,svg} of the load generator (the ack latency during the profile).
#
# Knobs (env): WARMUP_S=3, FREQ=499 (samples/s per CPU), CALL_GRAPH=dwarf (or fp: cheaper,
# but Rust release builds have no frame pointers), TOP=25, OUT=DIR, NO_BUILD=1.
# HW counters are not needed: the event is cpu-clock (this VM has no PMU).
#
# If perf cannot record here (perf_event_paranoid, no perf), it falls back to valgrind
# --tool=callgrind on a SHORT run (valgrind slows the server ~50x: the rate is divided by
# 50) and says so; read OUT/callgrind.out with callgrind_annotate.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

SECONDS_PROFILE=${1:-12}; RATE=${2:-140000}; DEVICES=${3:-200}; shift $(( $# < 3 ? $# : 3 ))
WARMUP_S=${WARMUP_S:-3}
FREQ=${FREQ:-499}
CALL_GRAPH=${CALL_GRAPH:-dwarf}
TOP=${TOP:-25}
OUT=${OUT:-$(mktemp -d /tmp/hexflow-profile.XXXXXX)}
mkdir -p "$OUT"
build_release
echo "$(machine_line)" | tee "$OUT/machine.txt"

perf_ok() {
  command -v perf >/dev/null || return 1
  perf record -e cpu-clock -o "$OUT/probe.data" -- true >/dev/null 2>&1 || return 1
  rm -f "$OUT/probe.data"
}

duration=$(( WARMUP_S + SECONDS_PROFILE + 2 ))
if perf_ok; then
  start_hexflow "$OUT"
  { hexflow_bench "$OUT/report.json" $(( duration + 60 )) --devices "$DEVICES" --connections "$DEVICES" \
      --duration "$duration" --rate "$RATE" --ramp-up-ms 1000 "$@" || echo "hexflow-bench exit $?"; } \
      > "$OUT/bench.out" &
  bench_pid=$!
  sleep "$WARMUP_S"
  echo "recording $SECONDS_PROFILE s of pid $SERVER_PID at $FREQ Hz (call graph $CALL_GRAPH)"
  perf record -e cpu-clock -F "$FREQ" --call-graph "$CALL_GRAPH" -p "$SERVER_PID" \
    -o "$OUT/perf.data" -- sleep "$SECONDS_PROFILE" 2> "$OUT/perf-record.log" || cat "$OUT/perf-record.log"
  wait "$bench_pid" || true
  stop_server
  cat "$OUT/bench.out"
  echo "folding (perf script can take a minute with dwarf call graphs)"
  perf script -i "$OUT/perf.data" > "$OUT/perf.script" 2> "$OUT/perf-script.log"
  "$BENCH_TABLE" fold "$OUT/perf.script" "$OUT/profile" "$TOP"
  rm -f "$OUT/perf.script"
  echo
  echo "flame graph: $OUT/profile.svg  folded stacks: $OUT/profile.folded  perf data: $OUT/perf.data"
  echo "self time by symbol, as perf sees it: perf report -i $OUT/perf.data --no-children --sort symbol"
else
  echo "perf cannot record here: falling back to valgrind --tool=callgrind on a short run" | tee "$OUT/FALLBACK"
  command -v valgrind >/dev/null || { echo "no valgrind either" >&2; exit 1; }
  port=$(( 20000 + RANDOM % 20000 ))
  SERVER_DATA=$OUT/data
  valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind.out" \
    "$HEXFLOW" serve --data-dir "$SERVER_DATA" --listen "127.0.0.1:$port" >"$OUT/server.log" 2>&1 &
  SERVER_PID=$!
  SERVER_ADDR=127.0.0.1:$port
  wait_for "$OUT/server.log" "listening on"
  { hexflow_bench "$OUT/report.json" $(( SECONDS_PROFILE + 120 )) --devices "$DEVICES" \
      --connections "$DEVICES" --duration "$SECONDS_PROFILE" --rate $(( RATE / 50 )) \
      --connect-timeout-ms 60000 "$@" || echo "hexflow-bench exit $?"; } | tee "$OUT/bench.out"
  stop_server
  callgrind_annotate "$OUT/callgrind.out" 2>/dev/null | head -n $(( TOP + 25 )) | tee "$OUT/profile.md"
fi
echo "output: $OUT"
