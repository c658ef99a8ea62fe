#!/usr/bin/env bash
# MySQL -> PostgreSQL benchmark: `tandem backfill --create-tables` of a
# sysbench table (500k rows by default) from the local MariaDB into the local
# PostgreSQL, then `tandem verify` of the copy, against a reference in the
# same run: the rows piped as text from the mariadb client into psql's COPY
# (no types checked, no resumability). Reports rows/s and the ratio.
#
# Knobs: BENCH_PG_ROWS (default 500000), BENCH_ROUNDS (default 2),
# BENCH_PG_CHUNK (backfill/verify chunk size, default 5000).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench-configs.sh
keep_output pg

ROWS=${BENCH_PG_ROWS:-500000}
ROUNDS=${BENCH_ROUNDS:-2}
CHUNK=${BENCH_PG_CHUNK:-5000}
DB=tandem_pgbench
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
pg() { PGPASSWORD=tandem psql -h 127.0.0.1 -U tandem -v ON_ERROR_STOP=1 -qAt "$@"; }

my -e "DROP DATABASE IF EXISTS $DB; CREATE DATABASE $DB"
sysbench oltp_read_only --db-driver=mysql --mysql-host=127.0.0.1 --mysql-user=root \
  --mysql-db=$DB --tables=1 --table-size="$ROWS" prepare >/dev/null
cat > "$WORK/pg.yaml" <<CFG
backends:
  src: { kind: mysql, url: "mysql://root@127.0.0.1:3306/$DB" }
  pg: { kind: postgres, url: "postgres://tandem:tandem@127.0.0.1:5432/$DB" }
migration: { primary: src, secondary: pg, journal: $WORK/journal }
CFG

fresh_pg() {
  pg -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)"
  pg -d postgres -c "CREATE DATABASE $DB"
}
secs() { date +%s.%N; }
rate() { awk -v n="$ROWS" -v a="$1" -v b="$2" 'BEGIN { printf "%.0f", n / (b - a) }'; }

for round in $(seq 1 "$ROUNDS"); do
  echo "round $round/$ROUNDS ($ROWS rows, chunk $CHUNK)"
  # Reference: text through a pipe, the table created by Tandem's DDL.
  fresh_pg
  ./target/release/tandem schema --to postgres --config "$WORK/pg.yaml" | pg -d $DB >/dev/null
  t0=$(secs)
  my -N --batch -e "SELECT id, k, c, pad FROM $DB.sbtest1" \
    | pg -d $DB -c "COPY sbtest1 (id, k, c, pad) FROM STDIN"
  t1=$(secs)
  pipe=$(rate "$t0" "$t1")
  # Tandem: create, copy, then compare.
  fresh_pg
  t0=$(secs)
  TANDEM_LOG=warn ./target/release/tandem backfill --create-tables --chunk-size "$CHUNK" \
    --config "$WORK/pg.yaml" > "$WORK/backfill.out"
  t1=$(secs)
  TANDEM_LOG=warn ./target/release/tandem verify --chunk-size "$CHUNK" \
    --config "$WORK/pg.yaml" > "$WORK/verify.out"
  t2=$(secs)
  grep -q "result: identical" "$WORK/verify.out" || { cat "$WORK/verify.out"; exit 1; }
  copy=$(rate "$t0" "$t1")
  check=$(rate "$t1" "$t2")
  echo "$pipe $copy $check" >> "$WORK/results"
  printf '  text pipe %8s rows/s   tandem backfill %8s rows/s   tandem verify %8s rows/s per side\n' \
    "$pipe" "$copy" "$check"
done

echo
echo "summary (means over rounds):"
awk '{ p += $1; c += $2; v += $3; n++ }
  END {
    printf "  backfill MySQL -> PostgreSQL  %8.0f rows/s (%.2fx the text pipe, %8.0f rows/s; target >= 50000)\n", c/n, c/p, p/n
    printf "  verify across engines         %8.0f rows/s per side (target >= 150000)\n", v/n
  }' "$WORK/results"
my -e "DROP DATABASE IF EXISTS $DB"
pg -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)"
