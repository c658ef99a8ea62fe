#!/usr/bin/env bash
# What the secondary spends to apply mirrored transactions, by group size
# and form: sends scripts shaped like the applier's (START TRANSACTION; per
# transaction sysbench oltp's four writes, each after its SET TIMESTAMP, the
# INSERT's with INSERT_ID; the position upsert; COMMIT) to the local
# MariaDB, one connection, one query per group, and reports MariaDB's CPU
# (from /proc) and the wall time per transaction. Two forms: "plain" (a
# multi-statement query, which MariaDB answers with one packet per
# statement) and "compound" (the same statements in one BEGIN NOT ATOMIC …
# END block, one answer; what the applier sends to MariaDB). Nothing else
# should run meanwhile.
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

# script G COMPOUND -> N/G lines, each one group (the mariadb client sends
# everything up to the delimiter as one query).
script() {
  awk -v g="$1" -v n="$N" -v compound="$2" 'BEGIN {
    srand(42); print "DELIMITER //"; c = sprintf("%0119d", 1); pad = "pppppppppppppppppppppppppppppppppppppppppppppppppppppppppp"
    for (i = 0; i < n / g; i++) {
      s = compound ? "BEGIN NOT ATOMIC\nSTART TRANSACTION" : "START TRANSACTION"
      for (j = 0; j < g; j++) {
        lsn++; a = int(rand() * 10000) + 1; b = int(rand() * 10000) + 1; d = int(rand() * 10000) + 1
        ts = "SET TIMESTAMP = 1700000000." sprintf("%06d", lsn % 1000000)
        s = s ";\n" ts ";\nUPDATE sbtest1 SET k = k + 1 WHERE id = " a
        s = s ";\n" ts ";\nUPDATE sbtest1 SET c = '\''" c "'\'' WHERE id = " b
        s = s ";\n" ts ";\nDELETE FROM sbtest1 WHERE id = " d
        s = s ";\n" ts ", INSERT_ID = " d
        s = s ";\nINSERT INTO sbtest1 (id, k, c, pad) VALUES (" d ", " a ", '\''" c "'\'', '\''" pad "'\'')"
      }
      s = s ";\nINSERT INTO position (id, lsn, committed_at_us) VALUES (1, " lsn ", 0) ON DUPLICATE KEY UPDATE lsn = GREATEST(lsn, VALUES(lsn)), committed_at_us = VALUES(committed_at_us)"
      print s ";\nCOMMIT" (compound ? ";\nEND//" : "//")
    }
  }'
}

ticks() { awk '{print $14 + $15}' "/proc/$PID/stat"; }
printf '%-12s %-10s %22s %18s\n' "group size" "form" "MariaDB CPU us/txn" "wall us/txn"
for g in $GROUPS_; do
  for form in plain compound; do
    script "$g" "$([ $form = compound ] && echo 1 || echo 0)" > "$WORK/apply.sql"
    a=$(ticks); t0=$(date +%s.%N)
    my -D $DB < "$WORK/apply.sql"
    b=$(ticks); t1=$(date +%s.%N)
    awk -v g="$g" -v f="$form" -v d=$((b - a)) -v clk="$CLK" -v n="$N" -v t0="$t0" -v t1="$t1" \
      'BEGIN { printf "%-12s %-10s %22.0f %18.0f\n", g, f, d / clk * 1e6 / n, (t1 - t0) * 1e6 / n }'
  done
done
my -e "DROP DATABASE $DB"
