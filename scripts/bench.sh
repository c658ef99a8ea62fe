#!/usr/bin/env bash
# Benchmark: sysbench against MariaDB directly, through an L4 TCP relay
# (haproxy, mode tcp) and through Tandem, alternating in one run, with the
# ratios that matter. Also Tandem's own CPU time per query (from /proc) and
# its resident memory with 500 idle client connections.
#
# Mirroring: a second Tandem (same primary database) mirrors every write to
# a copy of it on the same MariaDB; oltp_read_write and oltp_write_only run
# through it and through the non-mirroring Tandem in the same rounds. Its
# apply lag (primary commit -> secondary commit, per transaction) comes from
# its /status, and after the load stops the time until its lag is 0.
#
# Knobs (environment): BENCH_TIME (seconds per run, default 20),
# BENCH_ROUNDS (default 2), BENCH_THREADS (default 8).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench-configs.sh
keep_output

TIME=${BENCH_TIME:-20}
ROUNDS=${BENCH_ROUNDS:-2}
THREADS=${BENCH_THREADS:-8}
DB=tandem_bench
DIRECT_PORT=3306
RELAY_PORT=33081
TANDEM_PORT=33082
MIRROR_PORT=33083
MIRROR_ADMIN=33093
WORK=$(mktemp -d)
trap 'kill $(cat "$WORK"/*.pid 2>/dev/null) 2>/dev/null || true; rm -rf "$WORK"' EXIT

my -e "CREATE DATABASE IF NOT EXISTS $DB; SET GLOBAL max_connections = GREATEST(@@global.max_connections, 1200)"

cat > "$WORK/haproxy.cfg" <<CFG
global
  maxconn 4000
defaults
  mode tcp
  timeout connect 5s
  timeout client 1h
  timeout server 1h
listen mariadb
  bind 127.0.0.1:$RELAY_PORT
  server db 127.0.0.1:$DIRECT_PORT
CFG
haproxy -f "$WORK/haproxy.cfg" -D -p "$WORK/haproxy.pid"

unmirrored_config "$WORK/tandem.yaml" $TANDEM_PORT $DB
TANDEM_LOG=warn ./target/release/tandem serve --config "$WORK/tandem.yaml" > "$WORK/tandem.log" 2>&1 &
echo $! > "$WORK/tandem.pid"
TPID=$(cat "$WORK/tandem.pid")
for _ in $(seq 1 50); do mariadb --protocol=TCP -h127.0.0.1 -P$TANDEM_PORT -ubench -pbench $DB -e 'SELECT 1' >/dev/null 2>&1 && break; sleep 0.2; done

mirrored_config "$WORK/mirror.yaml" $MIRROR_PORT $MIRROR_ADMIN $DB "$WORK/journal"

SB_COMMON="--db-driver=mysql --mysql-host=127.0.0.1 --mysql-db=$DB --tables=4 --table-size=10000"
echo "preparing 4 tables x 10000 rows..."
sysbench oltp_read_write $SB_COMMON --mysql-port=$DIRECT_PORT --mysql-user=root cleanup >/dev/null 2>&1 || true
sysbench oltp_read_write $SB_COMMON --mysql-port=$DIRECT_PORT --mysql-user=root prepare >/dev/null

# The secondary starts as a copy of the primary (as after a backfill).
my -e "DROP DATABASE IF EXISTS ${DB}_next; CREATE DATABASE ${DB}_next"
copy_to_next $DB
TANDEM_LOG=info ./target/release/tandem serve --config "$WORK/mirror.yaml" > "$WORK/mirror.log" 2>&1 &
echo $! > "$WORK/mirror.pid"
MPID=$(cat "$WORK/mirror.pid")
for _ in $(seq 1 50); do mariadb --protocol=TCP -h127.0.0.1 -P$MIRROR_PORT -ubench -pbench $DB -e 'SELECT 1' >/dev/null 2>&1 && break; sleep 0.2; done
mirror_status() { curl -s "http://127.0.0.1:$MIRROR_ADMIN/status"; }
# The mirror's cumulative apply-lag histogram: "le_seconds count" per bucket.
lag_buckets() {
  curl -s "http://127.0.0.1:$MIRROR_ADMIN/metrics" |
    awk '/^tandem_mirror_apply_lag_seconds_bucket/ { match($0, /le="[^"]*"/); le = substr($0, RSTART + 4, RLENGTH - 5)
      if (le == "+Inf") le = 1e18; print le, $NF }' | sort -g
}
# lag_quantiles BEFORE AFTER -> "p50_ms p99_ms" of the transactions applied in between
# (bucket upper bounds; "inf" past the last bound).
lag_quantiles() {
  paste -d' ' <(echo "$1") <(echo "$2") | awk '{ le[NR] = $1; d[NR] = $4 - $2 } END {
    total = d[NR]; if (total <= 0) { print "- -"; exit }
    split("0.5 0.99", q, " ")
    for (i = 1; i <= 2; i++) {
      want = total * q[i]; if (want > int(want)) want = int(want) + 1
      for (j = 1; j <= NR; j++) if (d[j] >= want) break
      out = out (le[j] >= 1e17 ? "inf" : sprintf("%g", le[j] * 1000)) (i == 1 ? " " : "")
    }
    print out }'
}

CLK=$(getconf CLK_TCK)

# run TARGET WORKLOAD [LABEL] -> appends "label workload qps p95 cpu_us_per_query"
# to results (LABEL defaults to TARGET)
run() {
  local target=$1 workload=$2 label=${3:-$1} port user pass pid=""
  case $target in
    direct) port=$DIRECT_PORT; user=root; pass="";;
    l4relay) port=$RELAY_PORT; user=root; pass="";;
    tandem) port=$TANDEM_PORT; user=bench; pass=bench; pid=$TPID;;
    mirror) port=$MIRROR_PORT; user=bench; pass=bench; pid=$MPID;;
  esac
  local before=0 after=0 out qps p95 queries writes cpu="-" cpu_w="" catchup="-" lag0="" lag="- -"
  [ -n "$pid" ] && before=$(cpu_ticks "$pid")
  [ "$target" = mirror ] && lag0=$(lag_buckets)
  out=$(sysbench "$workload" $SB_COMMON --mysql-port=$port --mysql-user=$user --mysql-password="$pass" \
        --threads=$THREADS --time=$TIME --report-interval=0 --percentile=95 run)
  [ -n "$pid" ] && after=$(cpu_ticks "$pid")
  if [ "$target" = mirror ]; then
    # Time from the end of the load until the secondary has everything.
    local t0 t1
    t0=$(date +%s.%N)
    for _ in $(seq 1 600); do
      [ "$(mirror_status | jq '.mirror.lag_transactions')" = 0 ] && break
      sleep 0.01
    done
    t1=$(date +%s.%N)
    catchup=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.0f", (b - a) * 1000}')
    lag=$(lag_quantiles "$lag0" "$(lag_buckets)")
  fi
  qps=$(echo "$out" | awk '/queries:/ {gsub(/[()]/,"",$3); print $3; exit}')
  queries=$(echo "$out" | awk '/queries:/ {print $2; exit}')
  writes=$(echo "$out" | awk '/ write:/ {print $2; exit}')
  p95=$(echo "$out" | awk '/95th percentile:/ {print $3; exit}')
  if [ -n "$pid" ]; then
    cpu=$(awk -v d=$((after - before)) -v clk="$CLK" -v q="$queries" 'BEGIN {printf "%.1f", d / clk * 1e6 / q}')
    # oltp_write_only: all CPU charged to its writes (BEGIN/COMMIT included).
    [ "$workload" = oltp_write_only ] && [ "${writes:-0}" -gt 0 ] && \
      cpu_w=$(awk -v d=$((after - before)) -v clk="$CLK" -v w="$writes" 'BEGIN {printf "%.1f", d / clk * 1e6 / w}')
  fi
  echo "$label $workload $qps $p95 $cpu $catchup ${cpu_w:--} $lag" >> "$WORK/results"
  printf '  %-8s %-18s %10s qps  p95 %7s ms  tandem cpu/query %s us  catch-up %s ms' "$target" "$workload" "$qps" "$p95" "$cpu" "$catchup"
  [ "$target" = mirror ] && printf '  apply lag p50 < %s ms, p99 < %s ms' $lag
  printf '\n'
}

for round in $(seq 1 "$ROUNDS"); do
  echo "round $round/$ROUNDS (${TIME}s per run, $THREADS threads)"
  for workload in oltp_point_select oltp_read_write; do
    for target in direct l4relay tandem; do
      run $target $workload
    done
  done
  # Each mirrored run between two unmirrored ones ("off"), so that the
  # host's drift during the round cancels out of on/off.
  for workload in oltp_read_write oltp_write_only; do
    run tandem $workload off
    run mirror $workload
    run tandem $workload off
  done
done

MSTATUS=$(mirror_status)
MIRROR_P50=$(echo "$MSTATUS" | jq -r '.mirror.apply_lag_p50_ms')
MIRROR_P99=$(echo "$MSTATUS" | jq -r '.mirror.apply_lag_p99_ms')
MIRROR_APPLIED=$(echo "$MSTATUS" | jq -r '.mirror.applied')
MIRROR_DROPPED=$(echo "$MSTATUS" | jq -r '.mirror.dropped')
MIRROR_DEAD=$(echo "$MSTATUS" | jq -r '.mirror.dead_lettered')
MIRROR_RETRIED=$(echo "$MSTATUS" | jq -r '.mirror.retried')
MIRROR_PEAK=$(echo "$MSTATUS" | jq -r '"\(.mirror.apply_parallel_peak) of \(.mirror.apply_workers)"')
MIRROR_GROUP=$(echo "$MSTATUS" | jq -r 'if .mirror.apply_groups > 0 then "\(.mirror.applied / .mirror.apply_groups * 10 | round / 10) (apply_batch_wait \(.mirror.apply_batch_wait_ms) ms)" else "-" end')
MIRROR_FSYNC=$(echo "$MSTATUS" | jq -r 'if (.mirror.journal_fsyncs // 0) > 0 then "\(.mirror.journaled / .mirror.journal_fsyncs * 100 | round / 100) (journal_commit_wait \(.mirror.journal_commit_wait_us) us)" else "-" end')

# Cutover and rollback under oltp_read_write through the mirroring Tandem:
# flip to next after a third of the run, back to legacy after two thirds.
echo "cutover and rollback under oltp_read_write ($THREADS threads)..."
CT=$(( TIME < 9 ? 9 : TIME ))
sysbench oltp_read_write $SB_COMMON --mysql-port=$MIRROR_PORT --mysql-user=bench --mysql-password=bench \
  --threads=$THREADS --time=$CT --report-interval=0 run > "$WORK/cutover-sysbench.out" 2>&1 &
SBPID=$!
sleep $(( CT / 3 ))
curl -s -XPOST -d '{"to":"next"}' "http://127.0.0.1:$MIRROR_ADMIN/cutover" > "$WORK/cutover1.json"
sleep $(( CT / 3 ))
curl -s -XPOST -d '{"to":"legacy"}' "http://127.0.0.1:$MIRROR_ADMIN/cutover" > "$WORK/cutover2.json"
SB_OK=ok; wait $SBPID || SB_OK="FAILED (see $WORK/cutover-sysbench.out)"
SB_ERRORS=$(awk '/ignored errors:/ {print $3; exit}' "$WORK/cutover-sysbench.out")
cutover_line() {
  jq -r --arg name "$1" 'if .ok then "\($name): cutover \(.report.total_ms) ms (fenced \(.report.fenced_ms) ms; phases \([.report.phases[] | "\(.[0]) \(.[1])"] | join(", "))); \(.report.fenced_statements) statements waited at the fence: p50 \(.report.fence_wait_p50_ms) ms, p99 \(.report.fence_wait_p99_ms) ms, max \(.report.fence_wait_max_ms) ms" else "\($name): FAILED: \(.error)" end' "$2"
}
CUTOVER1=$(cutover_line "legacy -> next" "$WORK/cutover1.json")
CUTOVER2=$(cutover_line "next -> legacy (rollback)" "$WORK/cutover2.json")
if ! jq -e '.ok' "$WORK/cutover1.json" "$WORK/cutover2.json" >/dev/null; then
  # The work directory goes away at exit; keep what explains the failure.
  cp "$WORK/mirror.log" target/bench-mirror.log
  curl -s "http://127.0.0.1:$MIRROR_ADMIN/status" > target/bench-mirror-status.json || true
  echo "a cutover failed: the mirror's log is in target/bench-mirror.log, its /status in target/bench-mirror-status.json"
fi

echo "measuring RSS with 500 idle connections..."
cargo build --release --example idle_connections -q
./target/release/examples/idle_connections 127.0.0.1 $TANDEM_PORT bench bench $DB 500 8 > "$WORK/idle.out" &
IDLE=$!
for _ in $(seq 1 100); do grep -q open "$WORK/idle.out" 2>/dev/null && break; sleep 0.2; done
sleep 1
RSS_KB=$(awk '/VmRSS/ {print $2}' "/proc/$TPID/status")
wait $IDLE || true

echo "measuring verify throughput (500000 sysbench-shaped rows per side)..."
VROWS=${BENCH_VERIFY_ROWS:-500000}
for vdb in tandem_bench_vp tandem_bench_vs; do
  my -e "DROP DATABASE IF EXISTS $vdb; CREATE DATABASE $vdb"
  my -D $vdb -e "CREATE TABLE sbtest1 (id INT PRIMARY KEY, k INT NOT NULL, c CHAR(120) NOT NULL, pad CHAR(60) NOT NULL, KEY k_1 (k));
    INSERT INTO sbtest1 SELECT seq, seq % 1000, REPEAT(CHAR(48 + seq % 10), 120), REPEAT('p', 60) FROM seq_1_to_$VROWS"
done
cat > "$WORK/verify.yaml" <<CFG
backends:
  legacy: { kind: mysql, url: "mysql://root@127.0.0.1:$DIRECT_PORT/tandem_bench_vp" }
  next: { kind: mysql, url: "mysql://root@127.0.0.1:$DIRECT_PORT/tandem_bench_vs" }
migration: { primary: legacy, secondary: next }
rules: $WORK/no-rules
CFG
VSTART=$(date +%s.%N)
./target/release/tandem verify --config "$WORK/verify.yaml" > "$WORK/verify.out"
VEND=$(date +%s.%N)
VERIFY_RPS=$(awk -v a="$VSTART" -v b="$VEND" -v n="$VROWS" 'BEGIN {printf "%.0f", n / (b - a)}')
echo "measuring backfill throughput (the same rows into an empty secondary)..."
my -e "DROP DATABASE tandem_bench_vs; CREATE DATABASE tandem_bench_vs"
BSTART=$(date +%s.%N)
./target/release/tandem backfill --config "$WORK/verify.yaml" --create-tables > "$WORK/backfill.out"
BEND=$(date +%s.%N)
BACKFILL_RPS=$(awk -v a="$BSTART" -v b="$BEND" -v n="$VROWS" 'BEGIN {printf "%.0f", n / (b - a)}')
my -e "DROP DATABASE tandem_bench_vp; DROP DATABASE tandem_bench_vs"

echo
echo "== summary (mean over $ROUNDS rounds) =="
awk -v cut1="$CUTOVER1" -v cut2="$CUTOVER2" -v sbok="$SB_OK" -v sberr="${SB_ERRORS:-?}" -v rss="$RSS_KB" -v vrps="$VERIFY_RPS" -v brps="$BACKFILL_RPS" \
    -v p50="$MIRROR_P50" -v p99="$MIRROR_P99" -v applied="$MIRROR_APPLIED" -v dropped="$MIRROR_DROPPED" -v dead="$MIRROR_DEAD" -v retried="$MIRROR_RETRIED" -v peak="$MIRROR_PEAK" -v group="$MIRROR_GROUP" -v fsync="$MIRROR_FSYNC" '
  { qps[$1" "$2] += $3; p95[$1" "$2] += $4; n[$1" "$2]++
    if ($5 != "-") { c[$1" "$2] += $5; cc[$1" "$2]++ }
    if ($1 == "tandem" && $5 != "-" && $2 != "oltp_write_only") { cpu[$2] += $5; cn[$2]++ }
    if ($6 != "-") { if ($6 > catchup) catchup = $6 }
    if ($7 != "" && $7 != "-") { cw[$1" "$2] += $7; cwn[$1" "$2]++ }
    if ($1 == "mirror" && $9 != "" && $9 != "-") {
      v = ($9 == "inf") ? 1e18 : $9 + 0
      if (!($2 in lagw) || v > lagv[$2]) { lagv[$2] = v; lagw[$2] = "p50 < " $8 " ms, p99 < " $9 " ms" } } }
  END {
    split("oltp_point_select oltp_read_write", w, " ")
    printf "%-18s %12s %12s %12s %14s %14s %14s %16s\n", "workload", "direct qps", "l4 qps", "tandem qps", "tandem/l4", "tandem/direct", "l4/direct", "tandem us/query"
    for (i = 1; i <= 2; i++) {
      d = qps["direct " w[i]] / n["direct " w[i]]; l = qps["l4relay " w[i]] / n["l4relay " w[i]]; t = qps["tandem " w[i]] / n["tandem " w[i]]
      printf "%-18s %12.0f %12.0f %12.0f %14.3f %14.3f %14.3f %16.1f\n", w[i], d, l, t, t / l, t / d, l / d, cpu[w[i]] / cn[w[i]]
    }
    printf "%-18s %12s %12s %12s\n", "p95 latency (ms)", "direct", "l4", "tandem"
    for (i = 1; i <= 2; i++)
      printf "%-18s %12.2f %12.2f %12.2f\n", w[i], p95["direct " w[i]] / n["direct " w[i]], p95["l4relay " w[i]] / n["l4relay " w[i]], p95["tandem " w[i]] / n["tandem " w[i]]
    printf "mirroring (same primary, writes mirrored to a copy on the same 2-core host):\n"
    printf "%-18s %12s %12s %10s %16s %16s\n", "workload", "off qps", "on qps", "on/off", "off us/query", "on us/query"
    split("oltp_read_write oltp_write_only", mw, " ")
    for (i = 1; i <= 2; i++) {
      off = qps["off " mw[i]] / n["off " mw[i]]; on = qps["mirror " mw[i]] / n["mirror " mw[i]]
      printf "%-18s %12.0f %12.0f %10.3f %16.1f %16.1f\n", mw[i], off, on, on / off, c["off " mw[i]] / cc["off " mw[i]], c["mirror " mw[i]] / cc["mirror " mw[i]]
    }
    printf "(off: the unmirrored runs just before and after each mirrored one)\n"
    all = (qps["off oltp_read_write"] + qps["tandem oltp_read_write"]) / (n["off oltp_read_write"] + n["tandem oltp_read_write"])
    printf "oltp_read_write on/off against every unmirrored oltp_read_write run of this bench: %.3f\n", qps["mirror oltp_read_write"] / n["mirror oltp_read_write"] / all
    if (cwn["off oltp_write_only"] && cwn["mirror oltp_write_only"])
      printf "tandem CPU per write (oltp_write_only, BEGIN/COMMIT included): unmirrored %.1f us, mirrored %.1f us (applier included)\n", cw["off oltp_write_only"] / cwn["off oltp_write_only"], cw["mirror oltp_write_only"] / cwn["mirror oltp_write_only"]
    printf "mirror apply lag under load: p50 < %s ms, p99 < %s ms (%s transactions applied; dropped %s, dead-lettered %s, retried %s)\n", p50, p99, applied, dropped, dead, retried
    for (i = 1; i <= 2; i++) if (mw[i] in lagw) printf "  during %s alone (round with the highest p99): %s\n", mw[i], lagw[mw[i]]
    printf "apply connections busy at once, at most: %s\n", peak
    printf "transactions per secondary commit: %s\n", group
    printf "transactions per journal fsync: %s\n", fsync
    printf "mirror lag back to 0 after the load stopped: within %s ms (worst run)\n", catchup
    printf "targets: mirroring on/off >= 0.85 on oltp_read_write; lag p99 < 100 ms; back to 0 within 1000 ms; dropped 0\n"
    printf "%s\n%s\n", cut1, cut2
    printf "sysbench through both flips: %s, ignored errors %s\n", sbok, sberr
    printf "targets: cutover < 1000 ms; fence wait p99 < 100 ms; no client errors\n"
    printf "tandem RSS with 500 idle client connections: %.1f MiB\n", rss / 1024
    printf "verify throughput: %s rows/s per side (target >= 150000)\n", vrps
    printf "backfill throughput: %s rows/s (target >= 50000)\n", brps
    printf "targets: tandem/l4 >= 0.9 on both workloads; tandem cpu <= 30 us per point select; RSS < 64 MiB\n"
  }' "$WORK/results"
