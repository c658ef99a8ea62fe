# Sourced by bench.sh, mirror-ab.sh and build-ab.sh: the two Tandem
# configs they compare, and where each run's output is kept.

# my ARGS…: the mariadb client, as root, on the local server.
my() { mariadb --protocol=TCP -h127.0.0.1 -P3306 -uroot "$@"; }

# copy_to_next DB: DB_next gets a copy of sysbench's four tables in DB (the
# mirror's secondary starts equal to its primary).
copy_to_next() {
  local i
  for i in 1 2 3 4; do
    my -e "CREATE TABLE ${1}_next.sbtest$i LIKE $1.sbtest$i; INSERT INTO ${1}_next.sbtest$i SELECT * FROM $1.sbtest$i"
  done
}

# keep_output KIND: from here on, everything the script prints also goes to
# bench/results/<UTC date>-<commit>[-KIND].txt (one file per run; a dirty
# work tree is marked in the name), which starts with what ran.
keep_output() {
  local commit suffix file
  commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
  git diff --quiet HEAD 2>/dev/null || commit="$commit-dirty"
  suffix=${1:+-$1}
  mkdir -p bench/results
  file="bench/results/$(date -u +%Y-%m-%d)-$commit$suffix.txt"
  exec > >(tee "$file") 2>&1
  echo "# $0 at $(date -u '+%Y-%m-%d %H:%M UTC') on commit $commit; $(nproc) cores; $(mariadb --version | head -1)"
  echo "# environment: $(env | grep -E '^(BENCH|AB)_' | sort | tr '\n' ' ')"
}
#
# unmirrored_config FILE PORT DB: a Tandem on 127.0.0.1:PORT in front of
# database DB on the local MariaDB (user bench/bench).
unmirrored_config() {
  cat > "$1" <<CFG
listen: 127.0.0.1:$2
users: [{ name: bench, password: bench }]
backends:
  legacy: { kind: mysql, url: "mysql://root@127.0.0.1:3306/$3", pool: 600 }
migration: { primary: legacy }
rules: ./rules
CFG
}

# cluster_config FILE PORT DB NAME WORK: a Tandem on 127.0.0.1:PORT serving
# cluster NAME (database DB) over the four shards DB_s0..DB_s3 on the local
# MariaDB, its rules in WORK/rules, its journal in WORK/journal.
cluster_config() {
  cat > "$1" <<CFG
listen: 127.0.0.1:$2
users: [{ name: bench, password: bench }]
backends:
$(for i in 0 1 2 3; do echo "  s$i: { kind: mysql, url: \"mysql://root@127.0.0.1:3306/${3}_s$i\", pool: 600 }"; done)
clusters:
  $4: { database: $3, shards: [s0, s1, s2, s3] }
migration: { primary: $4, journal: "$5/journal" }
rules: $5/rules
CFG
}

# cpu_ticks PID: user + system clock ticks the process has used
# (getconf CLK_TCK per second).
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# mirrored_config FILE PORT ADMIN_PORT DB JOURNAL_DIR [MIGRATION_KEYS]: the
# same, mirroring every write to database DB_next, with its admin API on
# ADMIN_PORT and MIGRATION_KEYS (YAML, one key per line) added to its
# `migration:` section.
mirrored_config() {
  cat > "$1" <<CFG
listen: 127.0.0.1:$2
admin: 127.0.0.1:$3
users: [{ name: bench, password: bench }]
backends:
  legacy: { kind: mysql, url: "mysql://root@127.0.0.1:3306/$4", pool: 600 }
  next: { kind: mysql, url: "mysql://root@127.0.0.1:3306/${4}_next" }
migration:
  primary: legacy
  secondary: next
  journal: "$5"
$(printf '%s\n' "${6:-}" | sed 's/^/  /')
rules: ./rules
CFG
}

# start_release WORK NAME PORT DB: the release build serving WORK/NAME.yaml
# (log WORK/NAME.log, pid WORK/NAME.pid), once it answers on PORT.
start_release() {
  TANDEM_LOG=warn ./target/release/tandem serve --config "$1/$2.yaml" > "$1/$2.log" 2>&1 &
  echo $! > "$1/$2.pid"
  for _ in $(seq 1 50); do
    mariadb --protocol=TCP -h127.0.0.1 -P"$3" -ubench -pbench "$4" -e 'SELECT 1' >/dev/null 2>&1 && break
    sleep 0.2
  done
}
