#!/usr/bin/env bash
# Mirroring on/off under sysbench oltp_read_write, alternating runs, with
# what the host did meanwhile: each run's transactions per second, the
# share of CPU time the machine sat idle and context switches per
# transaction (both from /proc/stat, machine-wide). For trying one mirror
# setting or one build against the unmirrored Tandem without the whole
# `make bench`. Part of what mirroring costs on a 2-core host is idle time
# left by the commit latency it adds, which no process's CPU time shows.
#
# Two Tandems share one primary database: AB_OFF_BIN without a secondary,
# AB_ON_BIN mirroring to a copy of it on the same MariaDB, with
# AB_MIRROR_YAML (one key per line) added to its `migration:` section, for
# example AB_MIRROR_YAML="journal_commit_wait: 2ms". Each mirrored run sits
# between two unmirrored ones; on/off divides each by the mean of those two.
#
# Knobs (environment): AB_TIME (seconds per run, default 15), AB_ROUNDS
# (mirrored runs, default 3), AB_THREADS (default 8), AB_OFF_BIN and
# AB_ON_BIN (default ./target/release/tandem, built by `make release`),
# AB_MIRROR_YAML (default empty).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench-configs.sh
keep_output mirror-ab

TIME=${AB_TIME:-15}
ROUNDS=${AB_ROUNDS:-3}
THREADS=${AB_THREADS:-8}
OFF_BIN=${AB_OFF_BIN:-./target/release/tandem}
ON_BIN=${AB_ON_BIN:-./target/release/tandem}
DB=tandem_ab
OFF_PORT=33182
ON_PORT=33183
ON_ADMIN=33193
WORK=$(mktemp -d)
cleanup() {
  kill $(cat "$WORK"/*.pid 2>/dev/null) 2>/dev/null || true
  my -e "DROP DATABASE IF EXISTS $DB; DROP DATABASE IF EXISTS ${DB}_next" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
for bin in "$OFF_BIN" "$ON_BIN"; do
  [ -x "$bin" ] || { echo "mirror-ab: $bin is not an executable (make release builds ./target/release/tandem)" >&2; exit 2; }
done

unmirrored_config "$WORK/off.yaml" $OFF_PORT $DB
mirrored_config "$WORK/on.yaml" $ON_PORT $ON_ADMIN $DB "$WORK/journal" "${AB_MIRROR_YAML:-}"
"$ON_BIN" check-config --config "$WORK/on.yaml" >/dev/null
my -e "DROP DATABASE IF EXISTS $DB; CREATE DATABASE $DB; SET GLOBAL max_connections = GREATEST(@@global.max_connections, 1200)"
SB="--db-driver=mysql --mysql-host=127.0.0.1 --mysql-db=$DB --tables=4 --table-size=10000"
echo "preparing 4 tables x 10000 rows..."
sysbench oltp_read_write $SB --mysql-port=3306 --mysql-user=root prepare >/dev/null
my -e "DROP DATABASE IF EXISTS ${DB}_next; CREATE DATABASE ${DB}_next"
copy_to_next $DB

TANDEM_LOG=warn "$OFF_BIN" serve --config "$WORK/off.yaml" > "$WORK/off.log" 2>&1 &
echo $! > "$WORK/off.pid"
TANDEM_LOG=warn "$ON_BIN" serve --config "$WORK/on.yaml" > "$WORK/on.log" 2>&1 &
echo $! > "$WORK/on.pid"
for port in $OFF_PORT $ON_PORT; do
  for _ in $(seq 1 50); do
    mariadb --protocol=TCP -h127.0.0.1 -P$port -ubench -pbench $DB -e 'SELECT 1' >/dev/null 2>&1 && break
    sleep 0.2
  done
done

# "idle_ticks all_ticks context_switches" of the whole machine.
host() { awk '/^cpu / { print $5 + $6, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 } /^ctxt/ { c = $2 } END { print c }' /proc/stat | paste -sd' '; }
# run LABEL PORT -> prints "LABEL tps idle% ctxsw/txn", appends it to results
run() {
  local label=$1 port=$2 a b out tps txns
  a=$(host)
  out=$(sysbench oltp_read_write $SB --mysql-port=$port --mysql-user=bench --mysql-password=bench \
        --threads=$THREADS --time=$TIME --report-interval=0 run)
  b=$(host)
  tps=$(echo "$out" | awk '/transactions:/ { gsub(/[()]/, "", $3); print $3; exit }')
  txns=$(echo "$out" | awk '/transactions:/ { print $2; exit }')
  echo "$label $tps $(echo "$a $b $txns" | awk '{ printf "%.1f %.1f", ($4 - $1) / ($5 - $2) * 100, ($6 - $3) / $7 }')" |
    tee -a "$WORK/results" | awk '{ printf "  %-4s %9s tps  idle %5s %%  context switches/txn %s\n", $1, $2, $3, $4 }'
}

echo "warming up the mirror (5 s)..."
sysbench oltp_read_write $SB --mysql-port=$ON_PORT --mysql-user=bench --mysql-password=bench \
  --threads=$THREADS --time=5 run >/dev/null
echo "oltp_read_write, ${TIME}s per run, $THREADS threads"
run off $OFF_PORT
for _ in $(seq 1 "$ROUNDS"); do
  run on $ON_PORT
  run off $OFF_PORT
done
# Wait until the secondary has everything, then say what the mirror did.
for _ in $(seq 1 500); do
  [ "$(curl -s "http://127.0.0.1:$ON_ADMIN/status" | jq '.mirror.lag_transactions')" = 0 ] && break
  sleep 0.02
done
curl -s "http://127.0.0.1:$ON_ADMIN/status" | jq -r '.mirror |
  "mirror: \(.applied) applied of \(.journaled) journaled, dropped \(.dropped), dead-lettered \(.dead_lettered); " +
  "\(if .journal_fsyncs > 0 then (.journaled / .journal_fsyncs * 100 | round / 100) else "-" end) transactions per journal fsync " +
  "(journal_commit_wait \(.journal_commit_wait_us) us), \(if .apply_groups > 0 then (.applied / .apply_groups * 10 | round / 10) else "-" end) per secondary commit"'
awk '{ tps[NR] = $2; label[NR] = $1; idle[label[NR]] += $3; n[label[NR]]++ }
  END {
    for (i = 2; i < NR; i += 2) { r = tps[i] / ((tps[i - 1] + tps[i + 1]) / 2); sum += r; k++; rs = rs sprintf(" %.3f", r) }
    printf "on/off (each mirrored run against the runs around it):%s; mean %.3f\n", rs, sum / k
    printf "machine idle: off %.1f %%, on %.1f %% (mean)\n", idle["off"] / n["off"], idle["on"] / n["on"]
  }' "$WORK/results"
