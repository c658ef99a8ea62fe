//! Where the applier stands on the secondary: `apply_position` (one row
//! per worker, up to a low-water mark) and `applied_lsn` (LSNs above it),
//! in Tandem's bookkeeping database, keyed by the secondary's database.

use super::*;
use crate::mirror::bookkeeping::{self, owner, table, APPLIED, POSITION};

/// The position rows of `b` (its URL's database).
pub(super) fn position_table(b: &BackendConfig) -> String {
    table(b, POSITION)
}

/// `WHERE`-condition of `b`'s rows.
pub(super) fn mine(b: &BackendConfig) -> String {
    format!("db = {}", owner(b))
}

/// The applied-LSN rows of `b`: intents applied above the stored position
/// (parallel apply commits out of journal order).
pub(super) fn applied_table(b: &BackendConfig) -> String {
    table(b, APPLIED)
}

/// Creates the bookkeeping database and tables on `b` if missing.
pub(super) async fn ensure_tables(
    conn: &mut Conn,
    b: &BackendConfig,
) -> Result<(), mysql_async::Error> {
    bookkeeping::ensure(conn, b).await
}

/// Moves row `id` (one per apply connection) of the position table up to
/// `lsn` (never down).
pub(super) fn advance_position_sql(
    b: &BackendConfig,
    id: usize,
    lsn: Lsn,
    committed_at_us: i64,
) -> String {
    format!(
        "INSERT INTO {} (db, id, lsn, committed_at_us) VALUES ({}, {id}, {lsn}, {committed_at_us}) \
         ON DUPLICATE KEY UPDATE lsn = GREATEST(lsn, VALUES(lsn)), committed_at_us = VALUES(committed_at_us)",
        position_table(b),
        owner(b)
    )
}

pub(super) fn upsert_position_sql(b: &BackendConfig, lsn: Lsn, committed_at_us: i64) -> String {
    format!(
        "INSERT INTO {} (db, id, lsn, committed_at_us) VALUES ({}, 1, {lsn}, {committed_at_us}) \
         ON DUPLICATE KEY UPDATE lsn = VALUES(lsn), committed_at_us = VALUES(committed_at_us)",
        position_table(b),
        owner(b)
    )
}

/// Makes `b` (about to become the secondary) start applying after `lsn`:
/// it already holds every write up to there (cutover: it was the primary).
pub async fn seed_position(
    conn: &mut Conn,
    b: &BackendConfig,
    lsn: Lsn,
) -> Result<(), mysql_async::Error> {
    ensure_tables(conn, b).await?;
    conn.query_drop(format!(
        "DELETE FROM {} WHERE {} AND id <> 1",
        position_table(b),
        mine(b)
    ))
    .await?;
    conn.query_drop(format!(
        "DELETE FROM {} WHERE {}",
        applied_table(b),
        mine(b)
    ))
    .await?;
    conn.query_drop(upsert_position_sql(b, lsn, super::super::now_us()))
        .await
}

/// Preflight of a cutover's reverse path: `b` can hold the mirror position
/// (the table exists or can be created, and the server is writable).
pub async fn check_position_writable(
    conn: &mut Conn,
    b: &BackendConfig,
) -> Result<(), mysql_async::Error> {
    ensure_tables(conn, b).await?;
    let ro: Option<u8> = conn.query_first("SELECT @@global.read_only").await?;
    if ro == Some(1) {
        return Err(mysql_async::Error::Other(
            format!("backend {} is read-only (@@read_only = 1)", b.name).into(),
        ));
    }
    Ok(())
}
