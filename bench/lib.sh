# Shared helpers of bench/compare.sh, bench/scale.sh and bench/profile.sh (sourced, not run).
#
# Every server started here runs on 127.0.0.1 on a fresh data directory, is stopped with
# SIGTERM (then SIGKILL after 10 s) by stop_server, and by the EXIT trap if the script dies.
# Bench runs are wrapped in `timeout` as a second bound on top of their own.

BIN=${BIN:-target/release}
HEXFLOW=$BIN/hexflow
HEXFLOW_BENCH=$BIN/hexflow-bench
BARE_SERVER=$BIN/bare-server
BARE_CLIENT=$BIN/bare-client
BENCH_TABLE=$BIN/bench-table
SERVER_PID=
SERVER_ADDR=
SERVER_DATA=

build_release() {
  if [ -z "${NO_BUILD:-}" ]; then
    cargo build --release -p hexflow -p bench --bins >&2
  fi
  for b in "$HEXFLOW" "$HEXFLOW_BENCH" "$BARE_SERVER" "$BARE_CLIENT" "$BENCH_TABLE"; do
    [ -x "$b" ] || { echo "missing $b (build with cargo build --release -p hexflow -p bench --bins)" >&2; exit 1; }
  done
}

# The machine and how busy it is, one line.
machine_line() {
  echo "machine: nproc=$(nproc), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load $(cut -d' ' -f1-3 /proc/loadavg)"
}

# wait_for FILE PATTERN: up to 30 s for PATTERN to appear in FILE.
wait_for() {
  for _ in $(seq 1 300); do
    grep -q "$2" "$1" 2>/dev/null && return 0
    kill -0 "$SERVER_PID" 2>/dev/null || { echo "server died:" >&2; cat "$1" >&2; return 1; }
    sleep 0.1
  done
  echo "timed out waiting for '$2' in $1" >&2
  return 1
}

# start_hexflow DIR: the release server on DIR/data, a random port. Extra HEXFLOW__* env
# passes through (e.g. HEXFLOW__ENDPOINT__CONNECTIONS_MAX=30000).
start_hexflow() {
  local dir=$1 port=$(( 20000 + RANDOM % 20000 ))
  mkdir -p "$dir"
  SERVER_DATA=$dir/data
  "$HEXFLOW" serve --data-dir "$SERVER_DATA" --listen "127.0.0.1:$port" >"$dir/server.log" 2>&1 &
  SERVER_PID=$!
  SERVER_ADDR=127.0.0.1:$port
  wait_for "$dir/server.log" "listening on"
}

# start_bare DIR [bare-server flags]: the baseline server, any free port.
start_bare() {
  local dir=$1; shift
  mkdir -p "$dir"
  "$BARE_SERVER" --listen 127.0.0.1:0 --cert-out "$dir/cert.pem" --exit-after-s 3600 "$@" \
    >"$dir/server.log" 2>&1 &
  SERVER_PID=$!
  wait_for "$dir/server.log" "listening on"
  SERVER_ADDR=$(sed -n 's/^listening on //p' "$dir/server.log" | head -1)
}

stop_server() {
  [ -n "$SERVER_PID" ] || return 0
  kill -TERM "$SERVER_PID" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=
}

trap stop_server EXIT

# hexflow_bench JSON SECONDS_BOUND [flags]: hexflow-bench against the running hexflow server.
hexflow_bench() {
  local json=$1 bound=$2; shift 2
  timeout --signal=INT --kill-after=10 "$bound" "$HEXFLOW_BENCH" --server "$SERVER_ADDR" \
    --ca "$SERVER_DATA/tls/ca.pem" --data-dir "$SERVER_DATA" --server-pid "$SERVER_PID" \
    --no-progress --json "$json" "$@"
}

# bare_client DIR JSON SECONDS_BOUND [flags]: bare-client against the running baseline.
bare_client() {
  local dir=$1 json=$2 bound=$3; shift 3
  timeout --signal=INT --kill-after=10 "$bound" "$BARE_CLIENT" --server "$SERVER_ADDR" \
    --ca "$dir/cert.pem" --server-pid "$SERVER_PID" --json "$json" "$@"
}
