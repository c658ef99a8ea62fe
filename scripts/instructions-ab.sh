#!/usr/bin/env bash
# Instructions Tandem executes per query, for two builds, counted by
# valgrind's callgrind: unlike CPU time, the count is the same run after
# run whatever else the host is doing, so a difference of a few hundred
# instructions per query shows. Each build serves sysbench (one thread)
# twice, AB_SHORT and AB_LONG events; per query = (long - short) / (AB_LONG
# - AB_SHORT), so start-up and shutdown cancel out.
#
# Knobs (environment): AB_A_BIN (baseline), AB_B_BIN (default
# ./target/release/tandem), AB_WORKLOAD (default oltp_point_select),
# AB_SHORT (default 2000), AB_LONG (default 12000), AB_MIRROR=1 to mirror
# every write to a copy (then the applier's instructions count too).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench-configs.sh
keep_output instructions-ab

A_BIN=${AB_A_BIN:?set AB_A_BIN to the baseline build}
B_BIN=${AB_B_BIN:-./target/release/tandem}
WORKLOAD=${AB_WORKLOAD:-oltp_point_select}
SHORT=${AB_SHORT:-2000}
LONG=${AB_LONG:-12000}
DB=tandem_iab
PORT=33221
ADMIN=33231
WORK=$(mktemp -d)
command -v valgrind >/dev/null || { echo "instructions-ab: valgrind is not installed (apt-get install valgrind)" >&2; exit 2; }
cleanup() {
  kill $(cat "$WORK"/*.pid 2>/dev/null) 2>/dev/null || true
  my -e "DROP DATABASE IF EXISTS $DB; DROP DATABASE IF EXISTS ${DB}_next" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
SB="--db-driver=mysql --mysql-host=127.0.0.1 --mysql-db=$DB --tables=4 --table-size=10000"
my -e "DROP DATABASE IF EXISTS $DB; CREATE DATABASE $DB; DROP DATABASE IF EXISTS ${DB}_next; CREATE DATABASE ${DB}_next"
sysbench oltp_read_write $SB --mysql-port=3306 --mysql-user=root prepare >/dev/null
copy_to_next $DB
if [ "${AB_MIRROR:-0}" = 1 ]; then
  mirrored_config "$WORK/tandem.yaml" $PORT $ADMIN $DB "$WORK/journal"
else
  unmirrored_config "$WORK/tandem.yaml" $PORT $DB
fi

# count BIN EVENTS -> total instructions of one Tandem serving EVENTS queries
count() {
  local out="$WORK/cg.$RANDOM"
  rm -rf "$WORK/journal"
  TANDEM_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$out" "$1" serve --config "$WORK/tandem.yaml" \
    > "$WORK/tandem.log" 2>&1 &
  local pid=$!
  echo $pid > "$WORK/tandem.pid"
  for _ in $(seq 1 300); do
    mariadb --protocol=TCP -h127.0.0.1 -P$PORT -ubench -pbench $DB -e 'SELECT 1' >/dev/null 2>&1 && break
    sleep 0.2
  done
  sysbench "$WORKLOAD" $SB --mysql-port=$PORT --mysql-user=bench --mysql-password=bench \
    --threads=1 --events="$2" --time=0 --report-interval=0 run >/dev/null
  kill -INT $pid
  wait $pid || true
  awk '/^totals:/ { print $2 }' "$out"
}

echo "$WORKLOAD, one thread, $SHORT and $LONG events, mirror=${AB_MIRROR:-0}"
for label in A B; do
  bin=$A_BIN
  [ $label = B ] && bin=$B_BIN
  short=$(count "$bin" "$SHORT")
  long=$(count "$bin" "$LONG")
  per=$(( (long - short) / (LONG - SHORT) ))
  echo "$label $bin: $short / $long instructions; per event $per"
  echo "$label $per" >> "$WORK/per"
done
awk '{ v[$1] = $2 } END { printf "instructions per event: A %d, B %d, B-A %+d (%+.1f %%)\n", v["A"], v["B"], v["B"] - v["A"], (v["B"] - v["A"]) / v["A"] * 100 }' "$WORK/per"
