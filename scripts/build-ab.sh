#!/usr/bin/env bash
# One build against another, alternating: sysbench oltp_point_select and
# oltp_read_write through Tandem unmirrored and mirroring, each run of
# build A next to the same run of build B (the order swaps every round, so
# drift of the host's speed within a round falls on both). Prints each
# run's QPS and Tandem's CPU time per query (utime + stime of the process,
# applier included when mirroring, from /proc/PID/stat), then per workload
# and mode the means, B's QPS over A's and B's CPU per query minus A's.
# For a refactor, the gate is the CPU per query: the QPS of two builds on a
# shared 2-core host moves with the host.
#
# Knobs (environment): AB_A_BIN (the baseline, e.g. the parent commit's
# build) and AB_B_BIN (default ./target/release/tandem), AB_TIME (seconds
# per run, default 10), AB_ROUNDS (default 3), AB_THREADS (default 8).
# Build a parent with: git worktree add /tmp/parent HEAD~1 &&
#   (cd /tmp/parent && CARGO_TARGET_DIR=/tmp/parent-target cargo build --release)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench-configs.sh
keep_output build-ab

A_BIN=${AB_A_BIN:?set AB_A_BIN to the baseline build}
B_BIN=${AB_B_BIN:-./target/release/tandem}
TIME=${AB_TIME:-10}
ROUNDS=${AB_ROUNDS:-3}
THREADS=${AB_THREADS:-8}
WORK=$(mktemp -d)
cleanup() {
  kill $(cat "$WORK"/*.pid 2>/dev/null) 2>/dev/null || true
  for b in a b; do
    my -e "DROP DATABASE IF EXISTS tandem_bab_$b; DROP DATABASE IF EXISTS tandem_bab_${b}_next" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
for bin in "$A_BIN" "$B_BIN"; do
  [ -x "$bin" ] || { echo "build-ab: $bin is not an executable" >&2; exit 2; }
done

SB="--db-driver=mysql --mysql-host=127.0.0.1 --tables=4 --table-size=10000"
my -e "SET GLOBAL max_connections = GREATEST(@@global.max_connections, 1200)"
echo "preparing 4 tables x 10000 rows for each build..."
# Each build mirrors its own database (one mirroring Tandem per database).
for b in a b; do
  db=tandem_bab_$b
  my -e "DROP DATABASE IF EXISTS $db; CREATE DATABASE $db; DROP DATABASE IF EXISTS ${db}_next; CREATE DATABASE ${db}_next"
  sysbench oltp_read_write $SB --mysql-db=$db --mysql-port=3306 --mysql-user=root prepare >/dev/null
  copy_to_next $db
done

# start NAME BIN CONFIG PORT
start() {
  TANDEM_LOG=warn "$2" serve --config "$3" > "$WORK/$1.log" 2>&1 &
  echo $! > "$WORK/$1.pid"
  for _ in $(seq 1 50); do
    mariadb --protocol=TCP -h127.0.0.1 -P"$4" -ubench -pbench -e 'SELECT 1' >/dev/null 2>&1 && return
    sleep 0.2
  done
  echo "build-ab: $1 did not start; its log:" >&2
  cat "$WORK/$1.log" >&2
  exit 1
}
unmirrored_config "$WORK/a-plain.yaml" 33201 tandem_bab_a
unmirrored_config "$WORK/b-plain.yaml" 33202 tandem_bab_b
mirrored_config "$WORK/a-mirror.yaml" 33203 33213 tandem_bab_a "$WORK/journal-a"
mirrored_config "$WORK/b-mirror.yaml" 33204 33214 tandem_bab_b "$WORK/journal-b"
start a-plain "$A_BIN" "$WORK/a-plain.yaml" 33201
start b-plain "$B_BIN" "$WORK/b-plain.yaml" 33202
start a-mirror "$A_BIN" "$WORK/a-mirror.yaml" 33203
start b-mirror "$B_BIN" "$WORK/b-mirror.yaml" 33204
port_of() { case $1 in a-plain) echo 33201;; b-plain) echo 33202;; a-mirror) echo 33203;; b-mirror) echo 33204;; esac; }

HZ=$(getconf CLK_TCK)
# run WORKLOAD NAME -> appends "WORKLOAD MODE BUILD qps us_per_query"
run() {
  local wl=$1 name=$2 pid port before after out qps queries
  pid=$(cat "$WORK/$name.pid")
  port=$(port_of "$name")
  before=$(cpu_ticks "$pid")
  out=$(sysbench "$wl" $SB --mysql-db="tandem_bab_${name%%-*}" --mysql-port="$port" --mysql-user=bench \
        --mysql-password=bench --threads="$THREADS" --time="$TIME" --report-interval=0 run)
  after=$(cpu_ticks "$pid")
  qps=$(echo "$out" | awk '/queries:/ { gsub(/[()]/, "", $3); print $3; exit }')
  queries=$(echo "$out" | awk '/queries:/ { print $2; exit }')
  echo "$wl ${name#*-} ${name%%-*} $qps $(echo "$before $after $queries $HZ" | awk '{ printf "%.2f", ($2 - $1) / $4 * 1e6 / $3 }')" |
    tee -a "$WORK/results" | awk '{ printf "  %-18s %-6s %s %10s qps %8s us/query\n", $1, $2, $3, $4, $5 }'
}

echo "warming up (3 s each)..."
for name in a-plain b-plain a-mirror b-mirror; do
  sysbench oltp_read_write $SB --mysql-db="tandem_bab_${name%%-*}" --mysql-port="$(port_of $name)" \
    --mysql-user=bench --mysql-password=bench --threads="$THREADS" --time=3 run >/dev/null
done
echo "A: $A_BIN"
echo "B: $B_BIN"
echo "${TIME}s per run, $THREADS threads, $ROUNDS rounds"
for r in $(seq 1 "$ROUNDS"); do
  echo "round $r"
  for wl in oltp_point_select oltp_read_write; do
    for mode in plain mirror; do
      if [ $((r % 2)) = 1 ]; then order="a b"; else order="b a"; fi
      for b in $order; do run "$wl" "$b-$mode"; done
    done
  done
done
echo "== build A/B (mean over $ROUNDS rounds) =="
printf "%-18s %-6s %10s %10s %8s %10s %10s %10s\n" workload mode "A qps" "B qps" "B/A" "A us/q" "B us/q" "B-A us/q"
awk '{ k = $1 " " $2; q[k, $3] += $4; c[k, $3] += $5; n[k, $3]++; keys[k] = 1 }
  END {
    for (k in keys) {
      split(k, p, " ")
      qa = q[k, "a"] / n[k, "a"]; qb = q[k, "b"] / n[k, "b"]
      ca = c[k, "a"] / n[k, "a"]; cb = c[k, "b"] / n[k, "b"]
      printf "%-18s %-6s %10.0f %10.0f %8.3f %10.2f %10.2f %+10.2f\n", p[1], p[2], qa, qb, qb / qa, ca, cb, cb - ca
    }
  }' "$WORK/results" | sort
