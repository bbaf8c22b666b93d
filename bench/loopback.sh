#!/usr/bin/env bash
# Loopback fleet run with server-side accounting.
#
#   bench/loopback.sh DEVICES CONNECTIONS DURATION_S [more hexflow-bench flags...]
#
# Starts the release `hexflow serve` on a fresh data directory (127.0.0.1, random port), runs
# the release `hexflow-bench` against it, and prints: fixes acked, server CPU seconds
# (utime+stime from /proc) during the run, server CPU µs per fix, server RSS (baseline,
# mid-run, peak) and the bench's latency percentiles. Extra env: HEXFLOW__* config overrides
# are passed to the server (e.g. HEXFLOW__STORAGE__WAL_FSYNC=false for the unsafe mode).
# Bounded: the bench stops after DURATION_S (+ grace); the server is stopped with SIGTERM.
set -euo pipefail
cd "$(dirname "$0")/.."
devices=${1:?devices}; connections=${2:?connections}; duration=${3:?duration}; shift 3
srv=target/release/hexflow; gen=target/release/hexflow-bench
[ -x $srv ] && [ -x $gen ] || cargo build --release -p hexflow -p bench --bins
work=$(mktemp -d /tmp/hexflow-loopback.XXXXXX)
port=$(( 20000 + RANDOM % 20000 ))
$srv serve --data-dir "$work/data" --listen "127.0.0.1:$port" >"$work/server.log" 2>&1 &
pid=$!
trap 'kill -9 $pid 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do grep -q listening "$work/server.log" 2>/dev/null && break; sleep 0.1; done
cpu() { awk '{print $14 + $15}' /proc/$pid/stat; }
rss_kb() { awk '/^VmRSS/ {print $2}' /proc/$pid/status; }
tck=$(getconf CLK_TCK)
rss0=$(rss_kb); cpu0=$(cpu)
( sleep $(( duration * 2 / 3 )); rss_kb > "$work/rss_mid" ) &
$gen --server "127.0.0.1:$port" --ca "$work/data/tls/ca.pem" --data-dir "$work/data" --server-pid $pid \
  --devices "$devices" --connections "$connections" --duration "$duration" \
  --no-progress --json "$work/report.json" "$@" | tee "$work/bench.out"
cpu1=$(cpu); rss_peak=$(awk '/^VmHWM/ {print $2}' /proc/$pid/status)
kill -TERM $pid; wait $pid || true; trap - EXIT
fixes=$(python3 -c "import json,sys; print(json.load(open('$work/report.json'))['fixes_acked'])")
python3 - "$fixes" "$cpu0" "$cpu1" "$tck" "$rss0" "$(cat "$work/rss_mid" 2>/dev/null || echo 0)" "$rss_peak" "$connections" "$devices" <<'PY'
import sys
fixes, c0, c1, tck, rss0, rssmid, peak, conns, devs = map(float, sys.argv[1:])
cpu_s = (c1 - c0) / tck
print(f"server: cpu {cpu_s:.2f} s for {int(fixes)} fixes = {cpu_s * 1e6 / max(fixes, 1):.2f} µs/fix")
print(f"server: rss baseline {rss0/1024:.1f} MiB, mid-run {rssmid/1024:.1f} MiB, peak {peak/1024:.1f} MiB")
print(f"server: (mid-run - baseline) / connections = {(rssmid - rss0) * 1024 / max(conns, 1):.0f} bytes")
PY
echo "work dir: $work (report.json, server.log)"
