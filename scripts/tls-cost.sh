#!/usr/bin/env bash
# What TLS to clients costs through Tandem: oltp_point_select with sysbench
# over TLS and in plain text against the same Tandem (alternating, rounds),
# and logins per second with the mariadb CLI (one process per login, so
# process start-up is in both figures), plain vs TLS with the certificate
# verified. The certificate is a throwaway self-signed one made here.
#
# Knobs (environment): BENCH_BIN (default ./target/release/tandem, built by
# `make release`), BENCH_TIME (seconds per sysbench run, default 10),
# BENCH_ROUNDS (default 2), BENCH_LOGINS (default 300).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench-configs.sh
keep_output tls-cost
BIN=${BENCH_BIN:-./target/release/tandem}
TIME=${BENCH_TIME:-10}
ROUNDS=${BENCH_ROUNDS:-2}
LOGINS=${BENCH_LOGINS:-300}
PORT=3327
DB=sbtest_tls
work=$(mktemp -d)
trap 'kill "${pid:-}" 2>/dev/null || true; rm -rf "$work"' EXIT
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "/CN=127.0.0.1" \
  -addext "subjectAltName=IP:127.0.0.1" -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
# sysbench's --mysql-ssl reads these names from its working directory.
cp "$work/cert.pem" "$work/cacert.pem"
cp "$work/cert.pem" "$work/client-cert.pem"
cp "$work/key.pem" "$work/client-key.pem"
unmirrored_config "$work/tandem.yaml" "$PORT" "$DB"
printf 'tls:\n  cert: %s\n  key: %s\n' "$work/cert.pem" "$work/key.pem" >> "$work/tandem.yaml"
mariadb -uroot -h127.0.0.1 -e "DROP DATABASE IF EXISTS $DB; CREATE DATABASE $DB"
sysbench oltp_point_select --db-driver=mysql --mysql-host=127.0.0.1 --mysql-user=root \
  --mysql-db=$DB --tables=4 --table-size=10000 prepare >/dev/null
"$BIN" serve --config "$work/tandem.yaml" > "$work/tandem.log" 2>&1 &
pid=$!
for _ in $(seq 1 50); do mariadb --skip-ssl -h127.0.0.1 -P$PORT -ubench -pbench -e 'SELECT 1' >/dev/null 2>&1 && break; sleep 0.1; done
echo "oltp_point_select through Tandem, 8 threads, ${TIME} s per run (queries/s):"
for round in $(seq 1 "$ROUNDS"); do
  for ssl in off on; do
    qps=$(cd "$work" && sysbench oltp_point_select --db-driver=mysql --mysql-host=127.0.0.1 \
      --mysql-port=$PORT --mysql-user=bench --mysql-password=bench --mysql-db=$DB --tables=4 \
      --table-size=10000 --threads=8 --time="$TIME" --mysql-ssl=$ssl run \
      | awk '/queries:/ {gsub(/[()]/, "", $3); print $3}')
    echo "  round $round, TLS $ssl: $qps"
  done
done
for mode in plain tls; do
  opt=--skip-ssl
  [ $mode = tls ] && opt="--ssl --ssl-ca=$work/cert.pem --ssl-verify-server-cert"
  start=$(date +%s.%N)
  for _ in $(seq 1 "$LOGINS"); do
    # shellcheck disable=SC2086
    mariadb $opt -h127.0.0.1 -P$PORT -ubench -pbench $DB -e 'SELECT 1' >/dev/null
  done
  end=$(date +%s.%N)
  echo "$LOGINS logins with the mariadb CLI ($mode, one process each): $(echo "$LOGINS / ($end - $start)" | bc -l | cut -c1-6) logins/s"
done
mariadb -uroot -h127.0.0.1 -e "DROP DATABASE IF EXISTS $DB"
