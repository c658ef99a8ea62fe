#!/usr/bin/env bash
# What the writes issue 26 made mirrorable cost: the same SQL file run by
# one `mariadb` client straight against MariaDB and through a mirroring
# Tandem (release build), then the secondary checked against the primary.
#
#   carry   ETL rounds: a temporary table of ROWS rows filled, an UPDATE
#           joining it and an INSERT … SELECT from it (each carries a copy
#           of the temporary table to the secondary)
#   staged  INSERT … SELECT … GROUP BY of ROWS rows into an AUTO_INCREMENT
#           table (run staged: its rows read back and inserted as VALUES)
#   call    CALLs of a transfer procedure (replayed with a guard)
#   plain   as many single-row UPDATEs under autocommit (the cost of any
#           mirrored write, for comparison)
#
# Knobs: BENCH_ROUNDS (ETL rounds and GROUP BY runs, default 50),
# BENCH_ROWS (default 1000), BENCH_CALLS (default 2000).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench-configs.sh
keep_output carry

ROUNDS=${BENCH_ROUNDS:-50}
ROWS=${BENCH_ROWS:-1000}
CALLS=${BENCH_CALLS:-2000}
PORT=33191
ADMIN=33192
DB=tandem_cbench
WORK=$(mktemp -d)
trap 'kill $(cat "$WORK"/*.pid 2>/dev/null) 2>/dev/null || true; rm -rf "$WORK"' EXIT

schema() {
  my "$1" -e "
    CREATE TABLE t (id INT PRIMARY KEY, v INT NOT NULL, note VARCHAR(20));
    INSERT INTO t SELECT seq, 0, NULL FROM seq_1_to_$ROWS;
    CREATE TABLE copied (id INT PRIMARY KEY, v INT NOT NULL);
    CREATE TABLE grouped (n INT AUTO_INCREMENT PRIMARY KEY, v INT, c INT);
    CREATE TABLE acct (id INT PRIMARY KEY, balance BIGINT NOT NULL);
    INSERT INTO acct SELECT seq, 1000000 FROM seq_1_to_100;
    CREATE TABLE ledger (id INT PRIMARY KEY, acct INT, amount BIGINT)"
}
for d in $DB ${DB}_next ${DB}_ref ${DB}_ref_next; do
  my -e "DROP DATABASE IF EXISTS $d; CREATE DATABASE $d"
done
for d in $DB ${DB}_next ${DB}_ref; do schema $d; done
PROC="CREATE PROCEDURE transfer(a INT, b INT, amt BIGINT, ref INT)
BEGIN
  DECLARE bal BIGINT;
  SELECT balance INTO bal FROM acct WHERE id = a FOR UPDATE;
  UPDATE acct SET balance = balance - amt WHERE id = a;
  UPDATE acct SET balance = balance + amt WHERE id = b;
  INSERT INTO ledger VALUES (ref, a, -amt);
END"
for d in $DB ${DB}_next ${DB}_ref; do printf 'DELIMITER //\n%s//\n' "$PROC" | my $d; done

mirrored_config "$WORK/m.yaml" $PORT $ADMIN $DB "$WORK/journal"
start_release "$WORK" m $PORT $DB

# The workloads as SQL files.
{
  for r in $(seq 1 "$ROUNDS"); do
    echo "CREATE TEMPORARY TABLE tmp (id INT PRIMARY KEY, v INT);"
    echo "INSERT INTO tmp SELECT seq, seq * $r FROM seq_1_to_$ROWS;"
    echo "UPDATE t JOIN tmp USING (id) SET t.v = tmp.v, t.note = 'round $r';"
    echo "DELETE FROM copied WHERE id <= $ROWS;"
    echo "INSERT INTO copied SELECT id, v FROM tmp;"
    echo "DROP TEMPORARY TABLE tmp;"
  done
} > "$WORK/carry.sql"
{
  for r in $(seq 1 "$ROUNDS"); do
    echo "INSERT INTO grouped (v, c) SELECT id % $ROWS, COUNT(*) FROM t GROUP BY id % $ROWS;"
  done
} > "$WORK/staged.sql"
{
  for i in $(seq 1 "$CALLS"); do
    echo "CALL transfer($((i % 100 + 1)), $(((i + 37) % 100 + 1)), 1, $i);"
  done
} > "$WORK/call.sql"
{
  for i in $(seq 1 "$CALLS"); do
    echo "UPDATE acct SET balance = balance + 1 WHERE id = $((i % 100 + 1));"
  done
} > "$WORK/plain.sql"

# run FILE PORT USER PASS DB -> seconds
run() {
  local start end
  start=$(date +%s.%N)
  mariadb --protocol=TCP -h127.0.0.1 -P"$2" -u"$3" ${4:+-p$4} "$5" < "$1"
  end=$(date +%s.%N)
  awk -v a="$start" -v b="$end" 'BEGIN {printf "%.2f", b - a}'
}

lag_zero() {
  for _ in $(seq 1 600); do
    curl -fsS "http://127.0.0.1:$ADMIN/status" | grep -q '"lag_transactions": *0' && return 0
    sleep 0.1
  done
  return 1
}

echo "one client, $ROUNDS rounds of $ROWS rows; $CALLS CALLs"
printf '%-8s %10s %10s %8s\n' workload direct_s tandem_s ratio
for w in carry staged call plain; do
  d=$(run "$WORK/$w.sql" 3306 root "" ${DB}_ref)
  t=$(run "$WORK/$w.sql" $PORT bench bench $DB)
  printf '%-8s %10s %10s %8s\n' $w "$d" "$t" "$(awk -v a="$d" -v b="$t" 'BEGIN {printf "%.2f", b / a}')"
done
lag_zero || echo "mirror lag did not reach 0 within 60 s"
sleep 1
for table in t copied grouped acct ledger; do
  p=$(my $DB -N -e "CHECKSUM TABLE $table" | awk '{print $2}')
  s=$(my ${DB}_next -N -e "CHECKSUM TABLE $table" | awk '{print $2}')
  r=$(my ${DB}_ref -N -e "CHECKSUM TABLE $table" | awk '{print $2}')
  echo "$table: primary $p, secondary $s, direct reference $r $([ "$p" = "$s" ] && echo same || echo DIFFERENT)"
done
curl -fsS "http://127.0.0.1:$ADMIN/status" | tr ',' '\n' | grep -E '"(dead_lettered|divergent_tables|unsafe_rejected)"' || true
