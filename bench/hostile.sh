#!/usr/bin/env bash
# Issue 11's hostile-client suite: each attack of its table against a fresh release server,
# with a legit fleet beside it, judged by the issue's done-when.
#
#   bench/hostile.sh [ATTACK ...]     ATTACK: an `hexflow-hostile --attack` value, or
#                                     second-serve | admin-slow (default: all of them)
#
# Per network attack: a fresh `hexflow serve` (127.0.0.1, random port, fresh data dir), then
# `hexflow-hostile`: a legit fleet of LEGIT_DEVICES devices from 127.0.0.2 sending
# LEGIT_RATE fixes/s in sessions of 5 s (warmup 5 s, baseline 10 s), the attack from
# 127.0.0.3 for ATTACK_S, then AFTER_S without it (the attacker vanishes: nothing closed).
# Verdict per attack: legit connects >= 95 % during and after, ack p99 during <= 2x the
# baseline's, server RSS growth <= 256 MiB. Two more rows are local, not network, attacks:
#   second-serve  a second `hexflow serve` on the live data directory must refuse to start,
#                 and the first keeps acking and keeps its WAL;
#   admin-slow    60 admin connections that send one byte per second; /healthz must answer
#                 within 1 s meanwhile.
# Knobs (env): LEGIT_DEVICES=500 LEGIT_RATE=20000 ATTACK_S=25 AFTER_S=15 OUT=DIR NO_BUILD=1,
# and HEXFLOW__* overrides for the server. Bounded: each step is wrapped in `timeout`; the
# servers are stopped with SIGTERM. Writes OUT/hostile.md and prints it.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
HOSTILE=$BIN/hexflow-hostile
network=(slot-leak initial-flood no-hello one-token poison-seq slowloris pre-auth-bytes bomb garbage-token)
attacks=("$@")
[ ${#attacks[@]} -gt 0 ] || attacks=("${network[@]}" second-serve admin-slow)
LEGIT_DEVICES=${LEGIT_DEVICES:-500}
LEGIT_RATE=${LEGIT_RATE:-20000}
ATTACK_S=${ATTACK_S:-25}
AFTER_S=${AFTER_S:-15}
OUT=${OUT:-$(mktemp -d /tmp/hexflow-hostile.XXXXXX)}
mkdir -p "$OUT"
build_release
[ -x "$HOSTILE" ] || { echo "missing $HOSTILE" >&2; exit 1; }
export HEXFLOW__ADMIN__LISTEN=${HEXFLOW__ADMIN__LISTEN:-127.0.0.1:$(( 40000 + RANDOM % 20000 ))}
results=()

run_network() {
  local a=$1 dir=$OUT/$1
  start_hexflow "$dir"
  local rc=0
  timeout --signal=INT --kill-after=10 $(( 30 + ATTACK_S + AFTER_S + 60 )) "$HOSTILE" \
    --server "$SERVER_ADDR" --ca "$SERVER_DATA/tls/ca.pem" --data-dir "$SERVER_DATA" \
    --server-pid "$SERVER_PID" --attack "$a" --legit-devices "$LEGIT_DEVICES" \
    --legit-rate "$LEGIT_RATE" --attack-s "$ATTACK_S" --after-s "$AFTER_S" \
    --json "$dir/report.json" >"$dir/summary.txt" 2>"$dir/hostile.log" || rc=$?
  cat "$dir/summary.txt"
  stop_server
  [ -s "$dir/report.json" ] || { echo "$a: no report (exit $rc), see $dir" >&2; results+=("$a|no report (exit $rc)"); return; }
}

run_second_serve() {
  local dir=$OUT/second-serve
  start_hexflow "$dir"
  local first=$SERVER_PID rc=0 wal_before wal_after
  wal_before=$(ls "$SERVER_DATA"/wal | sort | tr '\n' ' ')
  timeout 20 "$HEXFLOW" serve --data-dir "$SERVER_DATA" --listen 127.0.0.1:0 \
    >"$dir/second.log" 2>&1 || rc=$?
  wal_after=$(ls "$SERVER_DATA"/wal | sort | tr '\n' ' ')
  local verdict=FAIL
  # The second server must exit non-zero by itself (124 = it was still running), leave
  # the WAL as it was, and the first must still take a batch.
  if [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && [ "$wal_before" = "$wal_after" ] \
    && timeout 60 "$HEXFLOW_BENCH" --server "$SERVER_ADDR" --ca "$SERVER_DATA/tls/ca.pem" \
      --data-dir "$SERVER_DATA" --devices 10 --duration 2 --no-progress >"$dir/after.txt" 2>&1 \
    && kill -0 "$first"; then
    verdict=PASS
  fi
  echo "second-serve: exit $rc: $(grep -m1 -i 'lock\|error' "$dir/second.log" || true)"
  echo "  verdict: $verdict (WAL before: $wal_before, after: $wal_after)"
  results+=("second-serve|second server exit $rc, WAL untouched $([ "$wal_before" = "$wal_after" ] && echo yes || echo no), first still acks: $verdict")
  stop_server
}

run_admin_slow() {
  local dir=$OUT/admin-slow admin=${HEXFLOW__ADMIN__LISTEN}
  start_hexflow "$dir"
  local host=${admin%:*} port=${admin##*:} pids=() worst=0 ok=0
  for i in $(seq 1 60); do
    ( exec 3<>"/dev/tcp/$host/$port" || exit 0
      for c in G E T ' ' /; do printf '%s' "$c" >&3 2>/dev/null || exit 0; sleep 1; done ) &
    pids+=($!)
  done
  sleep 1
  for i in $(seq 1 10); do
    local t
    t=$(curl -s -o /dev/null -m 1 -w '%{http_code} %{time_total}' "http://$admin/healthz" || echo "000 1")
    [ "${t%% *}" = 200 ] && ok=$((ok + 1))
    worst=$(python3 -c "print(max($worst, ${t##* }))")
    sleep 0.3
  done
  kill "${pids[@]}" 2>/dev/null || true; wait "${pids[@]}" 2>/dev/null || true
  local verdict=FAIL; [ "$ok" -eq 10 ] && verdict=PASS
  echo "admin-slow: /healthz $ok/10 answered 200 within 1 s beside 60 slow clients, slowest ${worst} s"
  echo "  verdict: $verdict"
  results+=("admin-slow|/healthz $ok/10 within 1 s, slowest ${worst} s: $verdict")
  stop_server
}

{ machine_line; echo "commit: $(git rev-parse --short HEAD)"; } | tee "$OUT/machine.txt"
for a in "${attacks[@]}"; do
  case $a in
    second-serve) run_second_serve ;;
    admin-slow) run_admin_slow ;;
    *) run_network "$a" ;;
  esac
done

python3 - "$OUT" "${results[@]}" <<'PY' | tee "$OUT/hostile.md"
import json, os, sys
out, extra = sys.argv[1], sys.argv[2:]
print(open(os.path.join(out, "machine.txt")).read().strip().replace("\n", "; "))
print()
print("| attack | legit connected: baseline / during / after | ack p99 ms: baseline / during (ratio) | server RSS growth MiB | attack connections held (p50 / max ms) | verdict |")
print("|---|---|---|---|---|---|")
for name in sorted(os.listdir(out)):
    p = os.path.join(out, name, "report.json")
    if not os.path.exists(p):
        continue
    r = json.load(open(p))
    L, v = r["legit"], r["verdict"]
    pct = lambda ph: f'{L[ph]["connected"]}/{L[ph]["connect_attempts"]}'
    hold = r.get("attack_hold")
    hold = f'{hold["p50"] / 1000:.0f} / {hold["max"] / 1000:.0f}' if hold else "–"
    print(f'| {name} | {pct("baseline")} / {pct("attack")} / {pct("after")} '
          f'| {L["baseline"]["ack"]["p99"] / 1000:.1f} / {L["attack"]["ack"]["p99"] / 1000:.1f} ({v["p99_ratio"]:.2f}) '
          f'| {v["rss_growth_mib"]:.1f} | {hold} | {"PASS" if v["pass"] else "FAIL"} |')
for e in extra:
    name, text = e.split("|", 1)
    print(f"| {name} | {text} | | | | |")
PY
echo "reports: $OUT"
