//! Tandem's bookkeeping tables live in a database of Tandem's own on each
//! server (`migration.bookkeeping_database`, default `tandem`), never in
//! the application's schema: `SHOW TABLES`, ORM reflection, schema dumps
//! and a test suite's "drop every table" reset never see or drop them.
//!
//! Several roles share one server in the usual setup (`shop` and
//! `shop_next` side by side), so every row is keyed by the database it
//! tracks — the backend URL's database (column `db`): the primary's for
//! commit markers, the applying side's for the position, the applied LSNs
//! and backfill checkpoints. That database, not the backend's name in the
//! YAML, is what the rows describe, so renaming a backend keeps them; and
//! one mirror per database (`guard`) keeps them single-writer.
//!
//! Tables (all InnoDB, created if missing — at start, before a cutover, by
//! backfill — and re-created when found missing while running):
//! - `commit_marker (db, token)`: a mirrored transaction's marker row.
//! - `apply_position (db, id, lsn, …)`: one row per apply connection.
//! - `applied_lsn (db, lsn)`: intents applied above the stored position.
//! - `backfill_checkpoint (db, table_name, …)`: where backfill stands.
//! - `effect_pending (db, lsn)`: a write to a table without transactions
//!   the applier is about to run (see `mirror::effect`).
//!
//! Earlier builds kept `_tandem_commit`, `_tandem_position`,
//! `_tandem_applied` and `_tandem_backfill` in the URL's database: `ensure`
//! adopts their rows and drops them.

use crate::config::BackendConfig;
use crate::sql::{qualified, quote, sql_literal};
use mysql_async::prelude::*;
use mysql_async::Conn;

pub const MARKERS: &str = "commit_marker";
pub const POSITION: &str = "apply_position";
pub const APPLIED: &str = "applied_lsn";
pub const BACKFILL: &str = "backfill_checkpoint";

/// `tandem`.`name` on `b`'s server.
pub fn table(b: &BackendConfig, name: &str) -> String {
    qualified(Some(&b.bookkeeping), name)
}

/// The key of `b`'s rows (its URL's database) as an SQL literal.
pub fn owner(b: &BackendConfig) -> String {
    sql_literal(b.database.as_deref().unwrap_or("").as_bytes())
}

/// The statements that create the database and every table.
pub fn create_sql(b: &BackendConfig) -> Vec<String> {
    vec![
        format!("CREATE DATABASE IF NOT EXISTS {}", quote(&b.bookkeeping)),
        format!(
            "CREATE TABLE IF NOT EXISTS {} (
               db VARCHAR(64) NOT NULL,
               token BIGINT UNSIGNED NOT NULL,
               PRIMARY KEY (db, token)
             ) ENGINE=InnoDB",
            table(b, MARKERS)
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {} (
               db VARCHAR(64) NOT NULL,
               id TINYINT NOT NULL,
               lsn BIGINT UNSIGNED NOT NULL,
               committed_at_us BIGINT NOT NULL,
               applied_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
               PRIMARY KEY (db, id)
             ) ENGINE=InnoDB",
            table(b, POSITION)
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {} (
               db VARCHAR(64) NOT NULL,
               lsn BIGINT UNSIGNED NOT NULL,
               PRIMARY KEY (db, lsn)
             ) ENGINE=InnoDB",
            table(b, APPLIED)
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {} (
               db VARCHAR(64) NOT NULL,
               table_name VARCHAR(64) NOT NULL,
               last_key TEXT NULL,
               rows_copied BIGINT UNSIGNED NOT NULL DEFAULT 0,
               done BOOLEAN NOT NULL DEFAULT FALSE,
               updated_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
               PRIMARY KEY (db, table_name)
             ) ENGINE=InnoDB",
            table(b, BACKFILL)
        ),
        crate::mirror::effect::create_pending_sql(b),
    ]
}

/// Creates what is missing on `b`'s server and adopts an earlier build's
/// tables in `b`'s database. Safe to run again at any point (every step is
/// idempotent; a crash between adopting and dropping adopts again).
pub async fn ensure(conn: &mut Conn, b: &BackendConfig) -> Result<(), mysql_async::Error> {
    for sql in create_sql(b) {
        conn.query_drop(sql).await.map_err(|e| explain(b, e))?;
    }
    let Some(db) = b.database.as_deref() else {
        return Ok(());
    };
    let legacy: Vec<String> = conn
        .query(format!(
            "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = {} \
             AND TABLE_NAME IN ('_tandem_commit', '_tandem_position', '_tandem_applied', '_tandem_backfill')",
            sql_literal(db.as_bytes())
        ))
        .await?;
    let me = owner(b);
    for old in legacy {
        let from = qualified(Some(db), &old);
        let adopt = match old.as_str() {
            "_tandem_commit" => format!(
                "INSERT IGNORE INTO {} (db, token) SELECT {me}, token FROM {from}",
                table(b, MARKERS)
            ),
            "_tandem_position" => format!(
                "INSERT INTO {} (db, id, lsn, committed_at_us) SELECT {me}, id, lsn, committed_at_us FROM {from} \
                 ON DUPLICATE KEY UPDATE lsn = GREATEST({0}.lsn, VALUES(lsn))",
                table(b, POSITION)
            ),
            "_tandem_applied" => format!(
                "INSERT IGNORE INTO {} (db, lsn) SELECT {me}, lsn FROM {from}",
                table(b, APPLIED)
            ),
            _ => format!(
                "INSERT IGNORE INTO {} (db, table_name, last_key, rows_copied, done) \
                 SELECT {me}, table_name, last_key, rows_copied, done FROM {from}",
                table(b, BACKFILL)
            ),
        };
        conn.query_drop(adopt).await?;
        conn.query_drop(format!("DROP TABLE {from}")).await?;
        tracing::info!(
            backend = b.name,
            table = old,
            into = b.bookkeeping,
            "adopted an earlier build's bookkeeping table into Tandem's database"
        );
    }
    Ok(())
}

/// A missing privilege says what to grant.
fn explain(b: &BackendConfig, e: mysql_async::Error) -> mysql_async::Error {
    match &e {
        mysql_async::Error::Server(s) if matches!(s.code, 1044 | 1045 | 1142) => {
            mysql_async::Error::Other(
                format!(
                    "backend {}: Tandem keeps its bookkeeping in database `{}` on this server and cannot create it ({}); \
                     run: CREATE DATABASE IF NOT EXISTS `{}`; GRANT ALL ON `{}`.* TO '{}'@'%' (or set migration.bookkeeping_database)",
                    b.name, b.bookkeeping, s.message, b.bookkeeping, b.bookkeeping, b.user
                )
                .into(),
            )
        }
        _ => e,
    }
}

/// Whether an error says a bookkeeping table or its database is gone
/// (1146 no such table, 1049 unknown database).
pub fn is_missing(code: u16) -> bool {
    matches!(code, 1146 | 1049)
}
