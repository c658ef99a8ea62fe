# Sourced by bench.sh and mirror-ab.sh: the two Tandem configs they compare.
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
