//! Writes to tables without transactions (MyISAM, Aria, MEMORY, …): their
//! effect stands the moment they run, so they cannot wait for a COMMIT to
//! be journaled, nor carry a marker row that a crash would roll back.
//!
//! - Capture (`frontend::session::capture::effect`): under a per-table lock
//!   of Tandem's (which orders the writes to one table as the server's
//!   table lock does), the intent is journaled (fsync) *before* the
//!   statement runs, with the effect token; the primary's answer follows as
//!   an `Effect` record: the first generated id, or the error the statement
//!   ended in. MySQL's statement-based replication does the same for such
//!   tables: a statement that failed part-way is replicated with its error
//!   code, and the replica must fail the same way on the same rows.
//! - An intent whose answer is lost (the connection cut mid-statement,
//!   Tandem killed between the two records) cannot be settled: nothing on
//!   the primary says whether it ran. It is skipped and its tables are
//!   marked divergent: loud, never a silent difference.
//! - The applier applies it alone, outside a transaction, after a row in
//!   `effect_pending` (committed) says it is about to; then stores the
//!   position. Finding that row for an LSN the position has not reached
//!   (a crash in between) means the secondary may or may not hold the
//!   write: the same loud skip.

use crate::config::BackendConfig;
use crate::mirror::bookkeeping::{owner, table};

/// The token of an effect intent. Marker tokens never reach this bit; DDL
/// tokens have the bit above it.
pub const EFFECT_TOKEN: u64 = 1 << 62;

/// Whether `token` belongs to an effect intent.
pub fn is_effect_token(token: u64) -> bool {
    token == EFFECT_TOKEN
}

/// Bookkeeping table: the effect the applier is about to run, per database.
pub const PENDING: &str = "effect_pending";

pub fn create_pending_sql(b: &BackendConfig) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {} (
           db VARCHAR(64) NOT NULL,
           lsn BIGINT UNSIGNED NOT NULL,
           PRIMARY KEY (db)
         ) ENGINE=InnoDB",
        table(b, PENDING)
    )
}

/// Records (autocommit) that the effect at `lsn` is about to run on `b`.
pub fn pending_sql(b: &BackendConfig, lsn: u64) -> String {
    format!(
        "REPLACE INTO {} (db, lsn) VALUES ({}, {lsn})",
        table(b, PENDING),
        owner(b)
    )
}

/// The LSN of the effect last about to run on `b`, if any.
pub fn pending_query(b: &BackendConfig) -> String {
    format!(
        "SELECT lsn FROM {} WHERE db = {}",
        table(b, PENDING),
        owner(b)
    )
}

/// Why an effect is skipped and its tables marked, when its outcome on the
/// primary is unknown.
pub const UNKNOWN_ON_PRIMARY: &str = "a write to a table without transactions was journaled, but its answer from the primary was lost (connection cut or Tandem stopped): whether it ran there is unknown";

/// The same on the secondary.
pub const UNKNOWN_ON_SECONDARY: &str = "a write to a table without transactions was being applied when the apply connection or Tandem stopped: whether it ran on the secondary is unknown";
