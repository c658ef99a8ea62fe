#!/usr/bin/env bash
# SQLAlchemy's own test suite through Tandem, mirroring and not mirroring,
# with the counts side by side (issue 26: the application cannot tell
# Tandem is there). Needs the shared MariaDB on 127.0.0.1:3306, python3
# with pip, and a built `target/release/tandem`.
#
#   scripts/sqlalchemy-suite.sh [pytest paths...]
#
# Default paths: test/dialect/mysql test/sql test/engine test/base test/orm.
# The secondary is a MariaDB server of the script's own (mariadb-install-db
# into a temporary directory, another port), so writes to the suite's other
# databases (test_schema, test_schema_2) are mirrored to a server where
# they are not the primary's own. Output: a summary line per run and the
# failing test ids of each; the mirroring Tandem's /status at the end
# (dead-lettered transactions must be 0).
#
# Knobs: SQLA_VERSION (2.0.36), SQLA_DIR (where the sdist is unpacked,
# /tmp/tandem-sqla), SQLA_OUT (results directory, bench/results/…).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VERSION=${SQLA_VERSION:-2.0.36}
WORK=${SQLA_DIR:-/tmp/tandem-sqla}
OUT=${SQLA_OUT:-$ROOT/bench/results/$(date +%F)-$(git rev-parse --short HEAD)-sqlalchemy}
PATHS=("$@")
[ ${#PATHS[@]} -gt 0 ] || PATHS=(test/dialect/mysql test/sql test/engine test/base test/orm)
TANDEM=$ROOT/target/release/tandem
[ -x "$TANDEM" ] || cargo build --release
mkdir -p "$WORK" "$OUT"

python3 -c 'import pymysql, pytest' 2>/dev/null || pip install -q pymysql pytest greenlet typing_extensions
SRC=$WORK/sqlalchemy-$VERSION
if [ ! -d "$SRC" ]; then
  (cd "$WORK" && pip download -q --no-deps --no-binary :all: "sqlalchemy==$VERSION" -d . && tar xzf "sqlalchemy-$VERSION.tar.gz")
fi

# The secondary's own server.
SEC=$(mktemp -d /tmp/tandem-sqla-sec.XXXX)
SEC_PORT=${SQLA_SECONDARY_PORT:-3399}
mariadb-install-db --no-defaults --datadir="$SEC/data" --user=root \
  --auth-root-authentication-method=normal --skip-test-db >/dev/null 2>&1
mkdir -p "$SEC/tmp"
mariadbd --no-defaults --datadir="$SEC/data" --port="$SEC_PORT" --socket="$SEC/sock" \
  --tmpdir="$SEC/tmp" --bind-address=127.0.0.1 --user=root --skip-log-bin \
  --innodb-buffer-pool-size=128M --log-error="$SEC/error.log" --pid-file="$SEC/pid" &
SEC_PID=$!
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  kill "$SEC_PID" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$SEC"
}
trap cleanup EXIT
for _ in $(seq 60); do
  mariadb -h127.0.0.1 -P"$SEC_PORT" -uroot -e 'SELECT 1' >/dev/null 2>&1 && break
  sleep 0.5
done

reset_dbs() {
  for p in 3306 "$SEC_PORT"; do
    mariadb -h127.0.0.1 -P"$p" -uroot -e "
      DROP DATABASE IF EXISTS sqla; CREATE DATABASE sqla;
      DROP DATABASE IF EXISTS test_schema; CREATE DATABASE test_schema;
      DROP DATABASE IF EXISTS test_schema_2; CREATE DATABASE test_schema_2;
      DROP DATABASE IF EXISTS tandem;"
  done
}

serve() { # mode port admin
  cat >"$OUT/$1.yaml" <<EOF
listen: 127.0.0.1:$2
admin: 127.0.0.1:$3
users:
  - name: sqla
    password: sqla
backends:
  old:
    kind: mysql
    url: mysql://root@127.0.0.1:3306/sqla
    pool: 64
  new:
    kind: mysql
    url: mysql://root@127.0.0.1:$SEC_PORT/sqla
migration:
  primary: old
$([ "$1" = mirror ] && echo "  secondary: new")
  journal: $SEC/journal-$1
  unsafe_writes: reject
EOF
  "$TANDEM" serve --config "$OUT/$1.yaml" >"$OUT/$1-tandem.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 40); do
    mariadb -h127.0.0.1 -P"$2" -usqla -psqla -e 'SELECT 1' >/dev/null 2>&1 && return
    sleep 0.25
  done
  echo "tandem ($1) did not come up" >&2
  exit 1
}

run() { # mode port
  (cd "$SRC" && python3 -m pytest "${PATHS[@]}" -p no:cacheprovider -q -rfE --maxfail=100000 \
      --dburi "mysql+pymysql://sqla:sqla@127.0.0.1:$2/sqla?charset=utf8mb4" \
      >"$OUT/$1.log" 2>&1) || true
  echo "$1: $(tail -n1 "$OUT/$1.log")"
  grep -E '^(FAILED|ERROR) ' "$OUT/$1.log" | sed 's/ - .*//' | sort >"$OUT/$1-failing.txt" || true
}

reset_dbs
serve plain 3391 9391
run plain 3391
reset_dbs
serve mirror 3392 9392
run mirror 3392
curl -s "http://127.0.0.1:9392/status" >"$OUT/mirror-status.json" || true
{
  echo "SQLAlchemy $VERSION, paths: ${PATHS[*]}, Tandem $(git rev-parse --short HEAD)"
  echo "plain:  $(tail -n1 "$OUT/plain.log")"
  echo "mirror: $(tail -n1 "$OUT/mirror.log")"
  echo "failing only when mirroring:"
  comm -13 "$OUT/plain-failing.txt" "$OUT/mirror-failing.txt" | sed 's/^/  /'
  echo "failing only when not mirroring:"
  comm -23 "$OUT/plain-failing.txt" "$OUT/mirror-failing.txt" | sed 's/^/  /'
  echo "mirror status: $(python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); m=s.get("mirror",{}); print({k: m.get(k) for k in ("applied","dead_lettered","in_doubt","divergent_tables","lag_transactions") if k in m})' "$OUT/mirror-status.json" 2>/dev/null || echo unreadable)"
} | tee "$OUT/summary.txt"
