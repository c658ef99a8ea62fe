#!/usr/bin/env bash
# Cross-shard commit benchmark: a transfer workload (BEGIN; debit; credit;
# COMMIT; scripts/xa-transfer.lua) behind a Tandem serving a 4-shard
# cluster (4 databases on the local MariaDB, accounts by id range) and
# behind a Tandem in front of one database holding all accounts, with 0,
# 10 and 50 % of the transfers crossing shards. Reports TPS, p99
# transaction latency, Tandem's CPU per transaction (from /proc), and the
# extra CPU of one cross-shard (two-phase) commit, estimated from the 0 %
# and 50 % runs.
#
# Knobs: BENCH_TIME (seconds per run, default 15), BENCH_ROUNDS (default
# 2), BENCH_THREADS (default 8).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench-configs.sh
keep_output xa

TIME=${BENCH_TIME:-15}
ROUNDS=${BENCH_ROUNDS:-2}
THREADS=${BENCH_THREADS:-8}
ONE_PORT=33184
SHARD_PORT=33185
DB=tandem_xbench
ACCOUNTS=100000
PER=$((ACCOUNTS / 4))
WORK=$(mktemp -d)
trap 'kill $(cat "$WORK"/*.pid 2>/dev/null) 2>/dev/null || true; rm -rf "$WORK"' EXIT

my -e "SET GLOBAL max_connections = GREATEST(@@global.max_connections, 1200)"
for d in $DB ${DB}_s0 ${DB}_s1 ${DB}_s2 ${DB}_s3; do
  my -e "DROP DATABASE IF EXISTS $d; CREATE DATABASE $d;
         CREATE TABLE $d.accounts (id INT PRIMARY KEY, balance BIGINT NOT NULL)"
done
my -e "DELETE FROM tandem.cluster_placement WHERE db = '${DB}_s0'" 2>/dev/null || true
# Every account on one database; each shard its id range.
my $DB -e "INSERT INTO accounts SELECT seq, 1000 FROM seq_1_to_$ACCOUNTS"
for i in 0 1 2 3; do
  my ${DB}_s$i -e "INSERT INTO accounts SELECT seq, 1000 FROM seq_$((i * PER + 1))_to_$(((i + 1) * PER))"
done

unmirrored_config "$WORK/one.yaml" $ONE_PORT $DB
mkdir -p "$WORK/rules"
cat > "$WORK/rules/x.yaml" <<RULES
tables:
  accounts:
    shard_key: id
    shard_by: range
    ranges:
      - { below: $((PER + 1)), shard: s0 }
      - { below: $((2 * PER + 1)), shard: s1 }
      - { below: $((3 * PER + 1)), shard: s2 }
      - { shard: s3 }
RULES
cluster_config "$WORK/shards.yaml" $SHARD_PORT $DB x4 "$WORK"
start_release "$WORK" one $ONE_PORT $DB
start_release "$WORK" shards $SHARD_PORT $DB
ONE_PID=$(cat "$WORK/one.pid")
SHARD_PID=$(cat "$WORK/shards.pid")

CLK=$(getconf CLK_TCK)
SB="--db-driver=mysql --mysql-host=127.0.0.1 --mysql-db=$DB --mysql-user=bench --mysql-password=bench"

# run SETUP CROSS -> "setup cross tps p99 cpu_us_per_txn errors" to results
run() {
  local setup=$1 cross=$2 port pid before after out tps txns p99 cpu errors
  case $setup in
    one) port=$ONE_PORT; pid=$ONE_PID;;
    shards) port=$SHARD_PORT; pid=$SHARD_PID;;
  esac
  before=$(cpu_ticks "$pid")
  out=$(sysbench scripts/xa-transfer.lua $SB --mysql-port=$port --cross="$cross" \
        --accounts=$ACCOUNTS --shards=4 --threads=$THREADS --time=$TIME \
        --report-interval=0 --percentile=99 run)
  after=$(cpu_ticks "$pid")
  tps=$(echo "$out" | awk '/transactions:/ {gsub(/[()]/,"",$3); print $3; exit}')
  txns=$(echo "$out" | awk '/transactions:/ {print $2; exit}')
  p99=$(echo "$out" | awk '/99th percentile:/ {print $3; exit}')
  errors=$(echo "$out" | awk '/ignored errors:/ {print $3; exit}')
  cpu=$(awk -v d=$((after - before)) -v clk="$CLK" -v q="$txns" 'BEGIN {printf "%.1f", d / clk * 1e6 / q}')
  echo "$setup $cross $tps $p99 $cpu $errors" >> "$WORK/results"
  printf '  %-7s cross %3s%%  %9s tps  p99 %7s ms  tandem cpu/txn %6s us  ignored errors %s\n' \
    "$setup" "$cross" "$tps" "$p99" "$cpu" "$errors"
}

for round in $(seq 1 "$ROUNDS"); do
  echo "round $round/$ROUNDS (${TIME}s per run, $THREADS threads, $ACCOUNTS accounts)"
  run one 0
  for cross in 0 10 50; do run shards $cross; done
done

total=$(for d in ${DB}_s0 ${DB}_s1 ${DB}_s2 ${DB}_s3; do my -N -e "SELECT SUM(balance) FROM $d.accounts"; done | awk '{s += $1} END {print s}')
prepared=$(my -N -e "XA RECOVER" | wc -l)
echo
echo "summary (means over rounds):"
awk '{ k = $1 " " $2; tps[k] += $3; p99[k] += $4; cpu[k] += $5; n[k]++ }
  END {
    o = "one 0"
    printf "  one database       tps %9.0f  p99 %7.2f ms  cpu/txn %6.1f us\n", tps[o]/n[o], p99[o]/n[o], cpu[o]/n[o]
    split("0 10 50", c, " ")
    for (i = 1; i <= 3; i++) {
      s = "shards " c[i]
      printf "  shards, %2s%% cross  tps %9.0f (%.2fx one)  p99 %7.2f ms  cpu/txn %6.1f us\n",
        c[i], tps[s]/n[s], (tps[s]/n[s])/(tps[o]/n[o]), p99[s]/n[s], cpu[s]/n[s]
    }
    z = "shards 0"; h = "shards 50"
    printf "  Tandem CPU per cross-shard commit, beyond a one-shard one: %.1f us ((cpu/txn at 50%% - at 0%%) / 0.5)\n",
      (cpu[h]/n[h] - cpu[z]/n[z]) / 0.5
  }' "$WORK/results"
echo "  sum of balances on the shards: $total (expected $((ACCOUNTS * 1000))); prepared XA branches left: $prepared"
for d in $DB ${DB}_s0 ${DB}_s1 ${DB}_s2 ${DB}_s3; do my -e "DROP DATABASE IF EXISTS $d"; done
