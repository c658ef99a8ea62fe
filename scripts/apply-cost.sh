#!/usr/bin/env bash
# What the secondary spends to apply mirrored transactions, by group size:
# sends scripts shaped like the applier's (START TRANSACTION; per
# transaction sysbench oltp's four writes and a SET INSERT_ID; the position
# upsert; COMMIT — one multi-statement query per group) to the local
# MariaDB, one connection, and reports MariaDB's CPU (from /proc) and the
# wall time per transaction. Nothing else should run meanwhile.
#
# Knobs (environment): APPLY_TXNS (transactions per size, default 4096),
# APPLY_GROUPS (group sizes, default "1 2 4 8 16 64").
set -euo pipefail

N=${APPLY_TXNS:-4096}
GROUPS_=${APPLY_GROUPS:-1 2 4 8 16 64}
DB=tandem_apply_cost
PID=$(pidof mariadbd || pidof mysqld)
CLK=$(getconf CLK_TCK)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
my() { mariadb --protocol=TCP -h127.0.0.1 -P3306 -uroot "$@"; }

my -e "DROP DATABASE IF EXISTS $DB; CREATE DATABASE $DB"
my -D $DB -e "
  CREATE TABLE sbtest1 (id INT NOT NULL AUTO_INCREMENT PRIMARY KEY, k INT NOT NULL DEFAULT 0,
    c CHAR(120) NOT NULL DEFAULT '', pad CHAR(60) NOT NULL DEFAULT '', KEY k_1 (k));
  INSERT INTO sbtest1 SELECT seq, seq, REPEAT('1', 119), REPEAT('p', 59) FROM seq_1_to_10000;
  CREATE TABLE position (id TINYINT PRIMARY KEY, lsn BIGINT UNSIGNED NOT NULL, committed_at_us BIGINT NOT NULL);
  INSERT INTO position VALUES (1, 0, 0)"

# script G -> N/G lines, each one multi-statement group (the mariadb client
# sends everything up to the delimiter as one query).
script() {
  awk -v g="$1" -v n="$N" 'BEGIN {
    srand(42); print "DELIMITER //"; c = sprintf("%0119d", 1); pad = "pppppppppppppppppppppppppppppppppppppppppppppppppppppppppp"
    for (i = 0; i < n / g; i++) {
      s = "START TRANSACTION"
      for (j = 0; j < g; j++) {
        lsn++; a = int(rand() * 10000) + 1; b = int(rand() * 10000) + 1; d = int(rand() * 10000) + 1
        s = s ";\nUPDATE sbtest1 SET k = k + 1 WHERE id = " a
        s = s ";\nUPDATE sbtest1 SET c = '\''" c "'\'' WHERE id = " b
        s = s ";\nDELETE FROM sbtest1 WHERE id = " d
        s = s ";\nSET INSERT_ID = " d
        s = s ";\nINSERT INTO sbtest1 (id, k, c, pad) VALUES (" d ", " a ", '\''" c "'\'', '\''" pad "'\'')"
      }
      s = s ";\nINSERT INTO position (id, lsn, committed_at_us) VALUES (1, " lsn ", 0) ON DUPLICATE KEY UPDATE lsn = GREATEST(lsn, VALUES(lsn)), committed_at_us = VALUES(committed_at_us)"
      print s ";\nCOMMIT//"
    }
  }'
}

ticks() { awk '{print $14 + $15}' "/proc/$PID/stat"; }
printf '%-12s %22s %18s\n' "group size" "MariaDB CPU us/txn" "wall us/txn"
for g in $GROUPS_; do
  script "$g" > "$WORK/apply.sql"
  a=$(ticks); t0=$(date +%s.%N)
  my -D $DB < "$WORK/apply.sql"
  b=$(ticks); t1=$(date +%s.%N)
  awk -v g="$g" -v d=$((b - a)) -v clk="$CLK" -v n="$N" -v t0="$t0" -v t1="$t1" \
    'BEGIN { printf "%-12s %22.0f %18.0f\n", g, d / clk * 1e6 / n, (t1 - t0) * 1e6 / n }'
done
my -e "DROP DATABASE $DB"
