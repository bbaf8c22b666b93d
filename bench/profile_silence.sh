#!/usr/bin/env bash
# A CPU profile of the silence scan where 1% of 10M devices cross a threshold at once.
#
#   bench/profile_silence.sh [ROUNDS]      (default 20)
#
# Builds `benches/silence.rs` (bench profile: release with debug info) and runs it with
# SILENCE_PROFILE_CROSSINGS=ROUNDS: one 10M-device table, and ROUNDS times the same 1%
# cross the warning, then the expiry, then resume (three scans with 100,000 events each,
# each printed with its time), under `perf record` (cpu-clock; the VM has no PMU). Prints
# the top symbols by self time; the scan's own symbols are `SilenceTable::scan` (the sweep,
# `visit_watched` and `visit_block` are inlined into it), `touch_watched` (the prefetch),
# `visit`, `Hold::*`. `find_or_claim` / `record_fix` are the fill and the fixes between
# rounds, not the scan. For an annotated view of one symbol:
#   perf annotate -i OUT/perf.data --stdio -s silence::table::SilenceTable::scan
#
# Knobs (env): FREQ=4000 (samples/s), TOP=20, OUT=DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

ROUNDS=${1:-20}
FREQ=${FREQ:-4000}
TOP=${TOP:-20}
OUT=${OUT:-$(mktemp -d /tmp/hexflow-silence-profile.XXXXXX)}
mkdir -p "$OUT"
BIN=$(cargo bench --bench silence --no-run --locked --message-format=json 2>/dev/null |
  python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "silence" and m.get("executable") and "bench" in m["target"]["kind"]:
        print(m["executable"])')
[ -n "$BIN" ] || { echo "could not build benches/silence.rs" >&2; exit 1; }
echo "$(machine_line)" | tee "$OUT/machine.txt"
echo "transparent huge pages: $(cat /sys/kernel/mm/transparent_hugepage/enabled 2>/dev/null || echo unknown)" | tee -a "$OUT/machine.txt"
SILENCE_PROFILE_CROSSINGS=$ROUNDS perf record -e cpu-clock -F "$FREQ" -o "$OUT/perf.data" \
  -- "$BIN" --bench --noplot 2> "$OUT/perf-record.log" | tee "$OUT/rounds.txt"
perf report -i "$OUT/perf.data" --no-children --sort symbol --stdio 2>/dev/null |
  grep '%' | head -n "$TOP" | tee "$OUT/top.txt"
echo "profile: $OUT/perf.data"
