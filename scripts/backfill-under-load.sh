#!/usr/bin/env bash
# Backfill throughput while the application writes through a mirroring
# Tandem (issue: backfill beside live writes). Runs the correctness test
# backfill_live::backfill_under_a_mixed_workload_needs_no_repair in release
# mode (300k pre-existing rows, 8 connections of the mixed workload for the
# whole copy, then verify without --repair), unpaced and paced, and writes
# its backfill summaries to bench/results/<date>-<rev>-backfill-under-load.txt.
#
#   scripts/backfill-under-load.sh            # pauses 0 and 10 ms between a writer's transactions
#   PAUSES="0 2 10" ROWS=1000000 scripts/backfill-under-load.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PAUSES=${PAUSES:-"0 10"}
ROWS=${ROWS:-300000}
out="bench/results/$(date +%F)-$(git rev-parse --short HEAD)-backfill-under-load.txt"
{
  echo "backfill under load: $ROWS pre-existing rows in acct, 8 writer connections through Tandem"
  echo "host: $(nproc) cores, $(uname -r); commit $(git rev-parse --short HEAD)"
  echo
} > "$out"
for p in $PAUSES; do
  echo "== writers pause ${p} ms between transactions" | tee -a "$out"
  TANDEM_BACKFILL_ROWS=$ROWS TANDEM_BACKFILL_LOAD_PAUSE_MS=$p \
    cargo test --release --test it backfill_under_a_mixed -- --nocapture 2>&1 \
    | sed -n '/^backfill summary/,/^workload:/p; /^test result/p' | tee -a "$out"
done
echo "written to $out"
