#!/usr/bin/env bash
# Shard routing benchmark: the same sysbench tables behind a Tandem serving
# a 4-shard cluster (4 databases on the local MariaDB) and behind a Tandem
# in front of one database holding all rows, alternating in one run:
# oltp_point_select (each select routed to one shard), oltp_read_write
# (its range queries scatter to every shard; --skip_trx, to compare
# statements with one database; scripts/xa-bench.sh measures cross-shard
# commits), and a scatter `ORDER BY id LIMIT 10` (p99). Also
# Tandem's CPU per query from /proc.
#
# Knobs: BENCH_TIME (seconds per run, default 20), BENCH_ROUNDS (default
# 2), BENCH_THREADS (default 8).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench-configs.sh
keep_output shards

TIME=${BENCH_TIME:-20}
ROUNDS=${BENCH_ROUNDS:-2}
THREADS=${BENCH_THREADS:-8}
ONE_PORT=33182
SHARD_PORT=33183
DB=tandem_sbench
WORK=$(mktemp -d)
trap 'kill $(cat "$WORK"/*.pid 2>/dev/null) 2>/dev/null || true; rm -rf "$WORK"' EXIT

my -e "SET GLOBAL max_connections = GREATEST(@@global.max_connections, 1200)"
for d in $DB ${DB}_s0 ${DB}_s1 ${DB}_s2 ${DB}_s3; do
  my -e "DROP DATABASE IF EXISTS $d; CREATE DATABASE $d"
done
my -e "DELETE FROM tandem.sequences WHERE db = '${DB}_s0'; DELETE FROM tandem.cluster_placement WHERE db = '${DB}_s0'" 2>/dev/null || true

unmirrored_config "$WORK/one.yaml" $ONE_PORT $DB
mkdir -p "$WORK/rules"
printf 'tables:\n' > "$WORK/rules/sb.yaml"
for i in 1 2 3 4; do printf '  sbtest%s: { shard_key: id }\n' $i >> "$WORK/rules/sb.yaml"; done
cluster_config "$WORK/shards.yaml" $SHARD_PORT $DB sb4 "$WORK"
start_release "$WORK" one $ONE_PORT $DB
start_release "$WORK" shards $SHARD_PORT $DB
ONE_PID=$(cat "$WORK/one.pid")
SHARD_PID=$(cat "$WORK/shards.pid")

SB="--db-driver=mysql --mysql-host=127.0.0.1 --mysql-db=$DB --mysql-user=bench --mysql-password=bench --tables=4 --table-size=10000"
echo "preparing 4 tables x 10000 rows on one database, and through the cluster onto 4 shards..."
sysbench oltp_read_write $SB --mysql-port=$ONE_PORT prepare >/dev/null
sysbench oltp_read_write $SB --mysql-port=$SHARD_PORT prepare >/dev/null
for i in 0 1 2 3; do
  printf '  shard s%s: %s rows of sbtest1\n' $i "$(my -N -e "SELECT COUNT(*) FROM ${DB}_s$i.sbtest1")"
done

CLK=$(getconf CLK_TCK)

# run SETUP WORKLOAD -> "setup workload qps p95 p99 cpu_us_per_query errors" to results
run() {
  local setup=$1 workload=$2 port pid before after out qps queries p p99 cpu errors
  case $setup in
    one) port=$ONE_PORT; pid=$ONE_PID;;
    shards) port=$SHARD_PORT; pid=$SHARD_PID;;
  esac
  local extra=""
  [ "$workload" = oltp_read_write ] && extra="--skip_trx=on --delete_inserts=0"
  local script=$workload
  [ "$workload" = scatter_limit ] && script=scripts/shard-scatter.lua
  before=$(cpu_ticks "$pid")
  out=$(sysbench "$script" $SB --mysql-port=$port $extra --threads=$THREADS --time=$TIME \
        --report-interval=0 --percentile=99 run)
  after=$(cpu_ticks "$pid")
  qps=$(echo "$out" | awk '/queries:/ {gsub(/[()]/,"",$3); print $3; exit}')
  queries=$(echo "$out" | awk '/queries:/ {print $2; exit}')
  [ "$workload" = scatter_limit ] && { qps=$(echo "$out" | awk '/transactions:/ {gsub(/[()]/,"",$3); print $3; exit}'); queries=$(echo "$out" | awk '/transactions:/ {print $2; exit}'); }
  p99=$(echo "$out" | awk '/99th percentile:/ {print $3; exit}')
  errors=$(echo "$out" | awk '/ignored errors:/ {print $3; exit}')
  cpu=$(awk -v d=$((after - before)) -v clk="$CLK" -v q="$queries" 'BEGIN {printf "%.1f", d / clk * 1e6 / q}')
  echo "$setup $workload $qps $p99 $cpu $errors" >> "$WORK/results"
  printf '  %-7s %-18s %10s qps  p99 %7s ms  tandem cpu/query %6s us  errors %s\n' "$setup" "$workload" "$qps" "$p99" "$cpu" "$errors"
}

for round in $(seq 1 "$ROUNDS"); do
  echo "round $round/$ROUNDS (${TIME}s per run, $THREADS threads)"
  for workload in oltp_point_select oltp_read_write scatter_limit; do
    run one $workload
    run shards $workload
  done
done

echo
echo "summary (means over rounds; shards / one database):"
awk '{ k = $1 " " $2; qps[k] += $3; p99[k] += $4; cpu[k] += $5; n[k]++ }
  END {
    split("oltp_point_select oltp_read_write scatter_limit", w, " ")
    for (i = 1; i <= 3; i++) {
      o = "one " w[i]; s = "shards " w[i]
      printf "  %-18s qps %9.0f vs %9.0f (%.2fx)  p99 %7.2f vs %7.2f ms (%.2fx)  cpu/query %6.1f vs %6.1f us (%+.1f us)\n",
        w[i], qps[s]/n[s], qps[o]/n[o], qps[s]/qps[o], p99[s]/n[s], p99[o]/n[o], (p99[s]/n[s])/(p99[o]/n[o]),
        cpu[s]/n[s], cpu[o]/n[o], cpu[s]/n[s] - cpu[o]/n[o]
    }
  }' "$WORK/results"
echo "  targets: point_select >= 0.9x; cpu per routed point select <= one database + 3 us; scatter ORDER BY LIMIT 10 p99 <= 2x"
for d in $DB ${DB}_s0 ${DB}_s1 ${DB}_s2 ${DB}_s3; do my -e "DROP DATABASE IF EXISTS $d"; done
