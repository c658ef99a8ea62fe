#!/usr/bin/env bash
# Makes this machine ready to run and test Tandem: installs MariaDB,
# PostgreSQL and the test/bench tools from Debian packages when missing,
# starts the databases when stopped, lets root log in to MariaDB over TCP
# without a password (the local test setup), and creates the demo databases.
# Safe to run repeatedly; does nothing that is already done.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

need=()
command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] || need+=(mariadb-server)
command -v mariadb >/dev/null 2>&1 || need+=(mariadb-client)
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need+=(postgresql)
command -v sysbench >/dev/null 2>&1 || need+=(sysbench)
command -v haproxy >/dev/null 2>&1 || need+=(haproxy)
command -v jq >/dev/null 2>&1 || need+=(jq)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v python3 >/dev/null 2>&1 || need+=(python3 python3-pymysql)
if [ "${#need[@]}" -gt 0 ]; then
  echo "setup: installing ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

mariadb_up() { mariadb --protocol=TCP -h127.0.0.1 -P3306 -uroot -e 'SELECT 1' >/dev/null 2>&1; }
mariadb_socket_up() { $SUDO mariadb -uroot -e 'SELECT 1' >/dev/null 2>&1; }

if ! mariadb_up && ! mariadb_socket_up; then
  echo "setup: starting MariaDB"
  $SUDO mkdir -p /run/mysqld && $SUDO chown mysql:mysql /run/mysqld 2>/dev/null || true
  $SUDO service mariadb start >/dev/null 2>&1 \
    || $SUDO start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
  for _ in $(seq 1 60); do mariadb_up || mariadb_socket_up && break; sleep 0.5; done
fi
if ! mariadb_up; then
  # A fresh Debian install authenticates root through the unix socket only.
  echo "setup: allowing root@localhost over TCP with an empty password (local test database)"
  $SUDO mariadb -uroot -e "ALTER USER 'root'@'localhost' IDENTIFIED VIA mysql_native_password USING PASSWORD('') OR unix_socket; \
    CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY ''; GRANT ALL ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION; FLUSH PRIVILEGES;"
fi
mariadb_up || { echo "setup: MariaDB is not reachable on 127.0.0.1:3306" >&2; exit 1; }

pg_up() { pg_isready -h 127.0.0.1 -p 5432 >/dev/null 2>&1; }
if ! pg_up; then
  echo "setup: starting PostgreSQL"
  $SUDO pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start >/dev/null 2>&1 \
    || $SUDO service postgresql start >/dev/null 2>&1 || true
  for _ in $(seq 1 40); do pg_up && break; sleep 0.5; done
fi
pg_up || { echo "setup: PostgreSQL is not answering on 127.0.0.1:5432" >&2; exit 1; }
# The role the tests and the demo use over TCP (Debian's default pg_hba asks
# TCP clients for a password): tandem / tandem, allowed to create databases.
if ! PGPASSWORD=tandem psql -h 127.0.0.1 -U tandem -d postgres -tAc 'SELECT 1' >/dev/null 2>&1; then
  echo "setup: creating PostgreSQL role tandem (password tandem)"
  role_sql="DO \$\$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'tandem') THEN CREATE ROLE tandem LOGIN CREATEDB PASSWORD 'tandem'; ELSE ALTER ROLE tandem LOGIN CREATEDB PASSWORD 'tandem'; END IF; END \$\$"
  psql -h 127.0.0.1 -U postgres -d postgres -v ON_ERROR_STOP=1 -qc "$role_sql" >/dev/null 2>&1 \
    || { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- psql -v ON_ERROR_STOP=1 -qc "$role_sql"; \
         else sudo -u postgres psql -v ON_ERROR_STOP=1 -qc "$role_sql"; fi; } >/dev/null
fi
PGPASSWORD=tandem psql -h 127.0.0.1 -U tandem -d postgres -tAc 'SELECT 1' >/dev/null \
  || { echo "setup: cannot log in to PostgreSQL as tandem over 127.0.0.1:5432" >&2; exit 1; }

# PyMySQL, a second real client library the tests drive (TLS logins;
# with cryptography, caching_sha2_password's RSA exchange).
if ! python3 -c 'import pymysql, cryptography' >/dev/null 2>&1; then
  echo "setup: installing PyMySQL and cryptography"
  python3 -m pip install --quiet PyMySQL cryptography 2>/dev/null \
    || $SUDO apt-get install -y -qq python3-pymysql python3-cryptography >/dev/null \
    || { echo "setup: cannot install PyMySQL (pip or the python3-pymysql package)" >&2; exit 1; }
fi

# Demo databases for `make run`, and shop_pg for config/postgres.yaml.
mariadb --protocol=TCP -h127.0.0.1 -P3306 -uroot < "$(dirname "$0")/demo-schema.sql"
PGPASSWORD=tandem psql -h 127.0.0.1 -U tandem -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'shop_pg'" | grep -q 1 \
  || PGPASSWORD=tandem psql -h 127.0.0.1 -U tandem -d postgres -qc "CREATE DATABASE shop_pg"
echo "setup: MariaDB and PostgreSQL ready (PostgreSQL role tandem); demo databases shop, shop_next (MariaDB) and shop_pg (PostgreSQL) exist"
