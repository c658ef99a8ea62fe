//! Shadow reads (`migration.reads: shadow`): a sampled share of reads also
//! runs on the secondary, in the background, and the two results are
//! compared — a continuous correctness signal before cutover. The client
//! only ever gets the primary's answer; a shadow read never delays it
//! (bounded concurrency: when all slots are busy, the sample is skipped).
//!
//! Comparing rows read at two instants is only meaningful when nothing
//! changed the tables in between. A shadow read is compared only when every
//! journaled write to its tables was already applied on the secondary when
//! the primary read started, and no new write to them was journaled until
//! the secondary read finished (a commit on the primary needs its intent
//! journaled first, so no commit on those tables can race the two reads).
//! Otherwise it is counted as skipped, never as a mismatch.

use crate::backend::{BackendError, Pool};
use crate::mirror::journal::Lsn;
use crate::mirror::runtime::{table_key, Mirror};
use crate::protocol::response::{Expect, Step, INSPECT_LIMIT};
use mysql_common::constants::CapabilityFlags;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Semaphore;
use tracing::{debug, warn};

/// Shadow reads running at once, at most.
const MAX_IN_FLIGHT: usize = 4;

/// Order-independent digest of a result's rows (the servers may return
/// unordered rows in different orders): count and wrapping sum of each
/// row packet's hash. Column definitions are left out (they name the
/// database, which differs between the sides).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RowDigest {
    pub rows: u64,
    pub sum: u64,
    /// False when a row was too big to hash whole (then nothing is compared).
    pub complete: bool,
}

impl RowDigest {
    pub fn new() -> Self {
        Self {
            complete: true,
            ..Self::default()
        }
    }

    pub fn add(&mut self, row: &[u8]) {
        self.rows += 1;
        self.sum = self.sum.wrapping_add(xxhash_rust::xxh3::xxh3_64(row));
    }
}

#[derive(Debug)]
pub struct ShadowStats {
    pub compared: AtomicU64,
    pub mismatched: AtomicU64,
    /// Sampled but not compared: tables written meanwhile, no free slot,
    /// a row too big to hash.
    pub skipped: AtomicU64,
    /// The secondary failed the read (connection, error answer).
    pub errors: AtomicU64,
    /// Mismatches per table.
    pub by_table: Mutex<BTreeMap<String, u64>>,
    slots: Arc<Semaphore>,
}

impl Default for ShadowStats {
    fn default() -> Self {
        Self {
            compared: AtomicU64::new(0),
            mismatched: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            by_table: Mutex::new(BTreeMap::new()),
            slots: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        }
    }
}

impl ShadowStats {
    pub fn status_json(&self) -> serde_json::Value {
        let get = |x: &AtomicU64| x.load(Ordering::Relaxed);
        serde_json::json!({
            "compared": get(&self.compared),
            "mismatched": get(&self.mismatched),
            "skipped": get(&self.skipped),
            "errors": get(&self.errors),
            "mismatches_by_table": *self.by_table.lock().unwrap_or_else(|p| p.into_inner()),
        })
    }
}

/// Functions whose value differs between two runs (or two servers): reads
/// using them are not shadowed.
const VOLATILE: &[&str] = &[
    "NOW",
    "SYSDATE",
    "CURDATE",
    "CURTIME",
    "CURRENT_TIMESTAMP",
    "CURRENT_DATE",
    "CURRENT_TIME",
    "LOCALTIME",
    "LOCALTIMESTAMP",
    "UTC_TIMESTAMP",
    "UTC_DATE",
    "UTC_TIME",
    "UNIX_TIMESTAMP",
    "RAND",
    "UUID",
    "UUID_SHORT",
    "CONNECTION_ID",
    "LAST_INSERT_ID",
    "FOUND_ROWS",
    "ROW_COUNT",
    "DATABASE",
    "SCHEMA",
    "USER",
    "CURRENT_USER",
    "SESSION_USER",
    "SYSTEM_USER",
    "VERSION",
    "SLEEP",
    "BENCHMARK",
    "GET_LOCK",
    "RELEASE_LOCK",
    "IS_FREE_LOCK",
    "IS_USED_LOCK",
    "NEXTVAL",
    "LASTVAL",
    // Locking reads would take locks on the secondary the applier needs.
    "FOR",
    "LOCK",
    "INTO",
];

/// Whether a read can be shadowed: no volatile function, no locking, only
/// tables that are mirrored and not system schemas.
pub fn eligible(
    sql: &[u8],
    tokens: &[crate::router::lexer::Token],
    tables: &[String],
    mirrored: impl Fn(&str) -> bool,
) -> bool {
    if tables.is_empty() {
        return false;
    }
    if tokens
        .iter()
        .any(|t| VOLATILE.iter().any(|w| t.is_word(sql, w)))
    {
        return false;
    }
    tables.iter().all(|t| {
        let lower = t.to_ascii_lowercase();
        let system = [
            "information_schema.",
            "performance_schema.",
            "mysql.",
            "sys.",
        ]
        .iter()
        .any(|p| lower.starts_with(p));
        !system && mirrored(t.rsplit('.').next().unwrap_or(t))
    })
}

/// One sampled read, handed over after the primary answered.
pub struct Job {
    /// The COM_QUERY packet as sent to the primary.
    pub packet: Vec<u8>,
    /// Database to select on the secondary (already mapped).
    pub db: Option<String>,
    /// The session's SETs, replayed first.
    pub sets: Vec<Vec<u8>>,
    pub caps: CapabilityFlags,
    pub ext_caps: u32,
    pub collation: u8,
    /// Table keys the read touches and their last-write LSN when the
    /// primary read started.
    pub tables: TableMarks,
    pub primary: RowDigest,
}

/// Table keys a read touches with their last-write LSN when it started.
pub type TableMarks = Vec<(String, Option<Lsn>)>;

/// The tables' last-write LSNs, if every one is already applied (else the
/// read is not comparable and None).
pub fn quiet_tables(m: &Mirror, tables: &[String]) -> Option<TableMarks> {
    let pos = m.position();
    let mut out = Vec::with_capacity(tables.len());
    for t in tables {
        let key = table_key(t);
        let w = pos.table_writes.get(&key).copied();
        if w.is_some_and(|w| w > pos.applied_lsn) {
            return None;
        }
        out.push((key, w));
    }
    Some(out)
}

/// Runs `job` on the secondary in the background.
pub fn spawn(job: Job, pool: Arc<Pool>, mirror: Arc<Mirror>, stats: Arc<ShadowStats>) {
    let Ok(permit) = stats.slots.clone().try_acquire_owned() else {
        stats.skipped.fetch_add(1, Ordering::Relaxed);
        return;
    };
    tokio::spawn(async move {
        let result = run(&job, &pool).await;
        drop(permit);
        let changed = {
            let pos = mirror.position();
            job.tables
                .iter()
                .any(|(k, w)| pos.table_writes.get(k).copied() != *w)
        };
        match result {
            _ if changed => {
                stats.skipped.fetch_add(1, Ordering::Relaxed);
            }
            Ok(d) if !d.complete || !job.primary.complete => {
                stats.skipped.fetch_add(1, Ordering::Relaxed);
            }
            Ok(d) if d == job.primary => {
                stats.compared.fetch_add(1, Ordering::Relaxed);
            }
            Ok(d) => {
                stats.compared.fetch_add(1, Ordering::Relaxed);
                stats.mismatched.fetch_add(1, Ordering::Relaxed);
                let mut by = stats.by_table.lock().unwrap_or_else(|p| p.into_inner());
                for (t, _) in &job.tables {
                    *by.entry(t.clone()).or_default() += 1;
                }
                warn!(
                    sql = %String::from_utf8_lossy(&job.packet[1..]),
                    primary_rows = job.primary.rows,
                    secondary_rows = d.rows,
                    "shadow read: the secondary answered differently"
                );
            }
            Err(e) => {
                stats.errors.fetch_add(1, Ordering::Relaxed);
                debug!(error = %e, "shadow read failed on the secondary");
            }
        }
    });
}

async fn run(job: &Job, pool: &Arc<Pool>) -> Result<RowDigest, BackendError> {
    // Shadow reads compare answers: the secondary URL's account reads.
    let mut lease = pool
        .acquire(job.caps, job.ext_caps, job.collation, None)
        .await?;
    lease.reusable = false;
    let conn = lease.conn();
    if let Some(db) = &job.db {
        if conn.current_db.as_deref() != Some(db.as_str()) {
            conn.init_db(db).await?;
        }
    }
    for set in &job.sets {
        conn.run(set, Expect::ResultSet).await?;
    }
    let mut collector = Collector::default();
    conn.run_into(&job.packet, Expect::ResultSet, &mut collector)
        .await?;
    let digest = collector.digest;
    lease.reusable = true;
    Ok(digest)
}

/// Feeds the relay's packets of one response into a digest (the primary's
/// side, computed while the answer streams to the client).
#[derive(Debug)]
pub struct Collector {
    pub digest: RowDigest,
    /// A result set of rows was seen (OK-only answers are not compared).
    pub saw_rows: bool,
    result_sets: u32,
}

impl Default for Collector {
    fn default() -> Self {
        Self {
            digest: RowDigest::new(),
            saw_rows: false,
            result_sets: 0,
        }
    }
}

/// The secondary's side of a shadow read: rows are digested and dropped.
impl crate::protocol::drive::Consumer for Collector {
    fn head(&mut self, head: &mut [u8], len: usize, seen: crate::protocol::drive::Seen) {
        let whole = (len <= INSPECT_LIMIT).then_some(&*head);
        self.packet(seen.was_rows, seen.in_rows, seen.step, whole);
    }
}

impl Collector {
    /// One logical packet: `was_rows` is whether the tracker was in a row
    /// section before it, `step` its verdict. `whole` is the packet when it
    /// was small enough to be seen whole.
    pub fn packet(&mut self, was_rows: bool, still_rows: bool, step: Step, whole: Option<&[u8]>) {
        if was_rows && still_rows && step == Step::More {
            match whole {
                Some(row) => self.digest.add(row),
                None => self.digest.complete = false,
            }
            self.saw_rows = true;
        } else if was_rows && !still_rows {
            self.result_sets += 1;
            self.saw_rows = true;
        }
        if self.result_sets > 1 {
            self.digest.complete = false;
        }
    }
}
