//! Where the applier stands on the secondary: `_tandem_position` (one row
//! per worker, up to a low-water mark) and `_tandem_applied` (LSNs above it).

use super::*;

/// `db`.`_tandem_position` on `b` (its URL's database).
pub(super) fn position_table(b: &BackendConfig) -> String {
    crate::sql::qualified(b.database.as_deref(), POSITION_TABLE)
}

pub(super) fn create_position_sql(b: &BackendConfig) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {} (
           id TINYINT PRIMARY KEY,
           lsn BIGINT UNSIGNED NOT NULL,
           committed_at_us BIGINT NOT NULL,
           applied_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6)
         ) ENGINE=InnoDB",
        position_table(b)
    )
}

/// `db`.`_tandem_applied` on `b`: intents applied above the stored
/// position (parallel apply commits out of journal order).
pub(super) fn applied_table(b: &BackendConfig) -> String {
    crate::sql::qualified(b.database.as_deref(), APPLIED_TABLE)
}

pub(super) fn create_applied_sql(b: &BackendConfig) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {} (lsn BIGINT UNSIGNED PRIMARY KEY) ENGINE=InnoDB",
        applied_table(b)
    )
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
        "INSERT INTO {} (id, lsn, committed_at_us) VALUES ({id}, {lsn}, {committed_at_us}) \
         ON DUPLICATE KEY UPDATE lsn = GREATEST(lsn, VALUES(lsn)), committed_at_us = VALUES(committed_at_us)",
        position_table(b)
    )
}

pub(super) fn upsert_position_sql(b: &BackendConfig, lsn: Lsn, committed_at_us: i64) -> String {
    format!(
        "INSERT INTO {} (id, lsn, committed_at_us) VALUES (1, {lsn}, {committed_at_us}) \
         ON DUPLICATE KEY UPDATE lsn = VALUES(lsn), committed_at_us = VALUES(committed_at_us)",
        position_table(b)
    )
}

/// Makes `b` (about to become the secondary) start applying after `lsn`:
/// it already holds every write up to there (cutover: it was the primary).
pub async fn seed_position(
    conn: &mut Conn,
    b: &BackendConfig,
    lsn: Lsn,
) -> Result<(), mysql_async::Error> {
    conn.query_drop(create_position_sql(b)).await?;
    conn.query_drop(create_applied_sql(b)).await?;
    conn.query_drop(format!("DELETE FROM {} WHERE id <> 1", position_table(b)))
        .await?;
    conn.query_drop(format!("DELETE FROM {}", applied_table(b)))
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
    conn.query_drop(create_position_sql(b)).await?;
    let ro: Option<u8> = conn.query_first("SELECT @@global.read_only").await?;
    if ro == Some(1) {
        return Err(mysql_async::Error::Other(
            format!("backend {} is read-only (@@read_only = 1)", b.name).into(),
        ));
    }
    Ok(())
}
