#!/usr/bin/env bash
# The scale curve: server CPU per fix and server memory per device as the fleet grows, in
# long-lived mode (one connection per device) and session mode (devices take turns on a
# fixed set of connections), one table.
#
#   bench/scale.sh                      # SCALE_DEVICES="10000 100000 1000000"
#
# Knobs (env):
#   SCALE_DEVICES="10000 100000 1000000"  the points
#   MODES="long-lived sessions"
#   DURATION_S=40                         per point
#   FIXES_PER_DEVICE_S=5                  long-lived offered load: devices × this fixes/s, in
#                                         50-fix batches (one batch per device every 10 s)
#   RAMP_MS=<one batch period>            long-lived connects spread over this, so the
#                                         devices' batches are evenly phased, not in bursts
#   SESSION_CONNECTIONS=1000              connections shared by the devices in session mode
#   SESSION_BATCHES=1                     batches per session
#   LONG_LIVED_MAX=20000                  larger long-lived points are skipped (each device
#                                         is a QUIC connection: client and server memory)
#   CONNECT_CONCURRENCY=64
#   OUT=DIR                               reports, pictures and scale.md (default mktemp)
#   NO_BUILD=1
#
# Each point gets a fresh server (connections_max raised to fit) and a bounded bench run;
# a session-mode point reaches only the devices that fit in DURATION_S (the table says how
# many connected). Writes OUT/scale.md and prints it.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

SCALE_DEVICES=${SCALE_DEVICES:-"10000 100000 1000000"}
MODES=${MODES:-"long-lived sessions"}
DURATION_S=${DURATION_S:-40}
FIXES_PER_DEVICE_S=${FIXES_PER_DEVICE_S:-5}
RAMP_MS=${RAMP_MS:-$(( 50 * 1000 / FIXES_PER_DEVICE_S ))}
SESSION_CONNECTIONS=${SESSION_CONNECTIONS:-1000}
SESSION_BATCHES=${SESSION_BATCHES:-1}
LONG_LIVED_MAX=${LONG_LIVED_MAX:-20000}
CONNECT_CONCURRENCY=${CONNECT_CONCURRENCY:-64}
OUT=${OUT:-$(mktemp -d /tmp/hexflow-scale.XXXXXX)}
mkdir -p "$OUT"
build_release

reports=()
skipped=()
for n in $SCALE_DEVICES; do
  for mode in $MODES; do
    dir=$OUT/$mode-$n
    case $mode in
      long-lived)
        if [ "$n" -gt "$LONG_LIVED_MAX" ]; then
          skipped+=("$n devices long-lived: needs $n connections, above LONG_LIVED_MAX=$LONG_LIVED_MAX")
          continue
        fi
        flags=(--devices "$n" --connections "$n" --inflight 1 --ramp-up-ms "$RAMP_MS"
               --connect-concurrency "$CONNECT_CONCURRENCY" --rate $(( n * FIXES_PER_DEVICE_S )))
        conns=$n ;;
      sessions)
        c=$(( SESSION_CONNECTIONS < n ? SESSION_CONNECTIONS : n ))
        flags=(--devices "$n" --connections "$c" --batches-per-session "$SESSION_BATCHES"
               --inflight 1 --ramp-up-ms 1000)
        conns=$c ;;
      *) echo "unknown mode $mode" >&2; exit 2 ;;
    esac
    echo "== $mode $n devices: $(machine_line)" | tee -a "$OUT/runs.log"
    HEXFLOW__ENDPOINT__CONNECTIONS_MAX=$(( conns + 1000 )) start_hexflow "$dir"
    { hexflow_bench "$dir/report.json" $(( DURATION_S + 60 )) --duration "$DURATION_S" "${flags[@]}" \
        || echo "hexflow-bench exit $?"; } | tee "$dir/bench.out"
    stop_server
    [ -f "$dir/report.json" ] && reports+=("$dir/report.json")
  done
done

{
  if [ ${#reports[@]} -gt 0 ]; then "$BENCH_TABLE" scale "${reports[@]}"; fi
  echo
  for s in "${skipped[@]+"${skipped[@]}"}"; do echo "* skipped: $s"; done
  echo
  echo "Runs (each line: the machine when the point started):"
  echo
  sed 's/^/    /' "$OUT/runs.log"
  echo
  echo "Knobs: DURATION_S=$DURATION_S FIXES_PER_DEVICE_S=$FIXES_PER_DEVICE_S RAMP_MS=$RAMP_MS SESSION_CONNECTIONS=$SESSION_CONNECTIONS" \
    "SESSION_BATCHES=$SESSION_BATCHES CONNECT_CONCURRENCY=$CONNECT_CONCURRENCY"
  echo "Reports and timeline pictures: $OUT/<mode>-<devices>/report.{json,svg}"
} > "$OUT/scale.md"
cat "$OUT/scale.md"
