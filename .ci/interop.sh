#!/usr/bin/env bash
# Starts the real `hexflow serve` on 127.0.0.1, drives it with `hexflow-bench` for a few
# seconds, stops it with SIGTERM (graceful: everything acked is flushed to Parquet), then
# checks the Parquet with DuckDB and pyarrow from a virtualenv made here.
set -euo pipefail
cd "$(dirname "$0")/.."
# One build of every binary (one feature set): per-package builds resolve features
# differently and would each rebuild arrow/parquet.
cargo build --locked --workspace --bins
work=$(mktemp -d)
data="$work/data"
port=$(( 20000 + RANDOM % 20000 ))
HEXFLOW__ADMIN__LISTEN="127.0.0.1:$((port + 1))" \
  ./target/debug/hexflow serve --data-dir "$data" --listen "127.0.0.1:$port" >"$work/server.log" 2>&1 &
server=$!
trap 'kill -9 $server 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do [ -f "$data/tls/ca.pem" ] && grep -q "listening" "$work/server.log" && break; sleep 0.2; done
./target/debug/hexflow-bench --server "127.0.0.1:$port" --ca "$data/tls/ca.pem" --data-dir "$data" \
  --devices 2000 --connections 200 --duration 5 --no-progress --json "$work/report.json"
# The admin endpoint answers while the server runs: metrics agree with the report.
python3 - "127.0.0.1:$((port + 1))" "$work/report.json" <<'PY'
import json, sys, urllib.request
base, report = "http://" + sys.argv[1], json.load(open(sys.argv[2]))
metrics = urllib.request.urlopen(base + "/metrics", timeout=5).read().decode()
ok = int(next(l.split()[1] for l in metrics.splitlines() if l.startswith("hexflow_batches_ok_total ")))
assert ok >= report["batches_acked"] - report["acks_by_status"].get("DUPLICATE", 0), (ok, report["batches_acked"])
device = json.loads(urllib.request.urlopen(base + "/devices/1", timeout=5).read())
assert device["device_id"] == 1, device
print(f"admin ok: batches_ok_total={ok}, device 1: {device}")
PY
kill -TERM $server
wait $server || { echo "server exited non-zero"; tail -50 "$work/server.log"; exit 1; }
trap - EXIT
tail -5 "$work/server.log"

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/pip install --quiet --disable-pip-version-check duckdb pyarrow polars deltalake datafusion
.venv/bin/python .ci/interop.py "$data" "$work/report.json"
# The server's lake through every reader, through the Delta log and as plain Parquet.
.venv/bin/python .ci/lake_interop.py "$data"

# A generated lake (6 simulated hours of 2,000 devices, one fix per 10 s, shaped as the
# server writes it), compacted by the operator command, read by every reader again, with
# the share of row groups a region + time query reads.
gen="$work/gen"
./target/debug/hexflow-lakegen --data-dir "$gen" --devices 2000 --hours 6 >"$work/gen.json"
rows=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['rows'])" "$work/gen.json")
HEXFLOW__STORAGE__ROW_GROUP_ROWS_MAX=32768 ./target/debug/hexflow lake compact --all --data-dir "$gen" | tail -1
./target/debug/hexflow lake vacuum --now --data-dir "$gen"
./target/debug/hexflow lake status --data-dir "$gen"
.venv/bin/python .ci/lake_interop.py "$gen" --compacted --expect-rows "$rows"
rm -rf "$work"
