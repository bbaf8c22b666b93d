#!/usr/bin/env bash
# Soak run of the crash harness (tests/crash.rs): many SIGKILL/restart cycles
# of the real `hexflow serve` binary, in release mode.
#
#   scripts/soak.sh                      # 500 cycles, random seed (printed)
#   HEXFLOW_CRASH_CYCLES=2000 scripts/soak.sh
#   HEXFLOW_CRASH_SEED=1234 scripts/soak.sh   # reproduce a failure
#
# Also runs the fault-injection sweep of storage (crash and failure at every
# file operation) with a few different base seeds.
set -euo pipefail
cd "$(dirname "$0")/.."

export HEXFLOW_CRASH_CYCLES="${HEXFLOW_CRASH_CYCLES:-500}"
echo "soak: ${HEXFLOW_CRASH_CYCLES} kill/restart cycles (release), seed ${HEXFLOW_CRASH_SEED:-random}"
cargo test -p hexflow --release --test crash -- --nocapture

for seed in 1 2 3 4 5; do
    echo "soak: storage fault-injection sweep, HEXFLOW_FAULT_SEED=${seed}"
    HEXFLOW_FAULT_SEED="${seed}" cargo test -p storage --release --test fault_injection -- --nocapture
done
echo "soak: ok"
