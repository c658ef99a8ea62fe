//! Applies journaled transactions to a MySQL/MariaDB secondary, in LSN
//! order, exactly once.
//!
//! Exactly once: every transaction is applied inside one secondary
//! transaction that also stores its LSN in `_tandem_position` (in the
//! secondary's database). After any crash the applier resumes after the
//! stored LSN, so nothing is lost or applied twice. DDL commits implicitly
//! and cannot share a transaction with the position update; a DDL that is
//! replayed right after a restart and fails with "already exists" / "does not
//! exist" is therefore taken as already applied.
//!
//! Failures: connection loss, deadlocks and lock-wait timeouts are retried
//! with backoff, in order. Any other error is permanent for that transaction:
//! it is written to the dead-letter file with its reason, its tables are
//! marked divergent, and the applier moves on (or halts, per policy).

use super::journal::{JournalError, Lsn, Reader};
use super::record::{JournalRecord, MirrorTxn};
use super::JournalHandle;
use crate::config::BackendConfig;
use mysql_async::prelude::*;
use mysql_async::Conn;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// What to do with a transaction that fails permanently on the secondary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnPermanentError {
    /// Dead-letter it, mark its tables divergent, continue.
    Continue,
    /// Dead-letter it and stop applying.
    Halt,
}

pub struct ApplierConfig {
    pub secondary: BackendConfig,
    pub journal_dir: PathBuf,
    pub dead_letter: PathBuf,
    pub on_permanent_error: OnPermanentError,
    /// One attempt at applying a transaction (or reading the position) may
    /// take this long; then the connection is dropped and it is retried.
    pub attempt_timeout: Duration,
}

/// Counters the applier keeps (exported by the admin milestone).
#[derive(Debug, Default)]
pub struct ApplierStats {
    pub applied: AtomicU64,
    pub retried: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub applied_lsn: AtomicU64,
    /// Primary commit time of the last applied transaction (µs).
    pub last_committed_at_us: AtomicI64,
    pub divergent_tables: Mutex<BTreeSet<String>>,
    /// Intents whose primary commit failed (nothing to apply).
    pub skipped: AtomicU64,
    /// Intents read but not yet applied (waiting for their outcome or turn).
    pub waiting: AtomicU64,
    /// Primary commit → secondary commit, per applied transaction.
    pub lag: LagHistogram,
    /// Why the applier stopped, if it stopped on its own.
    pub stopped: Mutex<Option<String>>,
}

/// Most transactions applied as one secondary transaction.
const MAX_GROUP: usize = 256;
/// Most statement bytes in one group.
const MAX_GROUP_BYTES: usize = 4 << 20;

/// Takes the longest run of committed, non-DDL transactions from the head
/// of `pending` (aborted ones inside the run are skipped); a DDL
/// transaction is a group of its own.
fn take_group(
    pending: &mut BTreeMap<Lsn, Result<MirrorTxn, String>>,
    outcomes: &mut HashMap<Lsn, bool>,
    stats: &ApplierStats,
) -> Vec<(Lsn, MirrorTxn)> {
    let mut group = Vec::new();
    let mut bytes = 0usize;
    while let Some((&lsn, entry)) = pending.first_key_value() {
        let committed = match outcomes.get(&lsn) {
            Some(c) => *c,
            None => break,
        };
        if !committed {
            pending.pop_first();
            outcomes.remove(&lsn);
            stats.skipped.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let Ok(txn) = entry else { break };
        let ddl = txn.statements.iter().any(|s| s.ddl);
        if !group.is_empty() && (ddl || group.len() >= MAX_GROUP || bytes >= MAX_GROUP_BYTES) {
            break;
        }
        bytes += txn.statements.iter().map(|s| s.sql.len()).sum::<usize>();
        if let Some((lsn, Ok(txn))) = pending.pop_first() {
            outcomes.remove(&lsn);
            group.push((lsn, txn));
        }
        if ddl {
            break;
        }
    }
    group
}

/// Upper bounds (ms) of the lag histogram's buckets; the last is open.
pub const LAG_BUCKETS_MS: [u64; 20] = [
    1,
    2,
    5,
    10,
    15,
    20,
    30,
    50,
    75,
    100,
    150,
    200,
    300,
    500,
    1000,
    2000,
    5000,
    10000,
    60000,
    u64::MAX,
];

/// A fixed-bucket histogram of apply lag (lock-free).
#[derive(Debug, Default)]
pub struct LagHistogram {
    pub counts: [AtomicU64; 20],
    pub sum_us: AtomicU64,
}

impl LagHistogram {
    pub fn record(&self, lag_us: u64) {
        let ms = lag_us / 1000;
        let i = LAG_BUCKETS_MS
            .iter()
            .position(|b| ms < *b)
            .unwrap_or(LAG_BUCKETS_MS.len() - 1);
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(lag_us, Ordering::Relaxed);
    }

    /// Cumulative counts per bucket bound (Prometheus style).
    pub fn cumulative(&self) -> Vec<(u64, u64)> {
        let mut total = 0;
        LAG_BUCKETS_MS
            .iter()
            .zip(&self.counts)
            .map(|(b, c)| {
                total += c.load(Ordering::Relaxed);
                (*b, total)
            })
            .collect()
    }

    /// Upper bound (ms) of the bucket holding quantile `q`; None when empty.
    pub fn quantile_ms(&self, q: f64) -> Option<u64> {
        let cum = self.cumulative();
        let total = cum.last().map_or(0, |c| c.1);
        if total == 0 {
            return None;
        }
        let want = ((total as f64) * q).ceil() as u64;
        cum.iter().find(|(_, c)| *c >= want).map(|(b, _)| *b)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApplierError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("secondary: {0}")]
    Secondary(String),
    #[error("halted on a permanent error at LSN {lsn}: {reason}")]
    Halted { lsn: Lsn, reason: String },
    #[error(
        "the secondary's _tandem_position says LSN {stored} was applied, but the journal ends at \
         {journal_end}: this journal is not the one that secondary was fed from (replaced or \
         deleted). Nothing is applied. If the secondary was re-copied from the primary, clear \
         its _tandem_position table and restart"
    )]
    Mismatch { stored: Lsn, journal_end: Lsn },
    #[error("dead-letter file: {0}")]
    DeadLetter(std::io::Error),
}

pub struct Applier {
    cfg: ApplierConfig,
    journal: JournalHandle,
    stats: Arc<ApplierStats>,
    conn: Option<Conn>,
    /// Session state last set on `conn` (avoids re-sending unchanged SETs).
    current_db: Option<String>,
    session: Vec<(String, String)>,
    /// The connection's TIMESTAMP may be pinned (reset before an unpinned
    /// statement).
    ts_pinned: bool,
}

const POSITION_TABLE: &str = "_tandem_position";

/// What became of one journaled transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Applied, found already applied, or dead-lettered: its position is stored.
    Done,
    /// The applier was stopped before it could apply it.
    Stopped,
}

impl Applier {
    pub fn new(cfg: ApplierConfig, journal: JournalHandle) -> Self {
        Self {
            cfg,
            journal,
            stats: Arc::new(ApplierStats::default()),
            conn: None,
            current_db: None,
            session: Vec::new(),
            ts_pinned: true,
        }
    }

    /// An applier that keeps its counters in `stats` (shared across the
    /// appliers a cutover starts and stops).
    pub fn with_stats(
        cfg: ApplierConfig,
        journal: JournalHandle,
        stats: Arc<ApplierStats>,
    ) -> Self {
        Self {
            stats,
            ..Self::new(cfg, journal)
        }
    }

    pub fn stats(&self) -> Arc<ApplierStats> {
        self.stats.clone()
    }

    /// Applies until `stop` is cancelled; then returns after the transaction
    /// in progress.
    ///
    /// The journal holds intents and outcomes (see `record::JournalRecord`).
    /// Intents are taken in LSN order; the one at the head waits until its
    /// outcome is written, then is applied (committed) or skipped (aborted).
    /// Only applied transactions move the stored position, so the journal is
    /// truncated below it and a restart re-reads (and re-skips) the rest.
    pub async fn run(mut self, stop: CancellationToken) -> Result<(), ApplierError> {
        // Read up to what is written, not only what is durable: outcome
        // records get no fsync of their own, but every intent that is
        // written is durable (see `JournalHandle::written`), so every
        // position stored below is one a restart finds in the journal.
        let mut visible = self.journal.written();
        let stored = self.load_position_retrying(&stop).await?;
        let journal_end = *visible.borrow();
        if stored > journal_end {
            return Err(ApplierError::Mismatch {
                stored,
                journal_end,
            });
        }
        let mut stored_pos = stored;
        let mut done = stored;
        let mut read_to = stored;
        self.stats.applied_lsn.store(done, Ordering::Relaxed);
        info!(
            lsn = stored,
            "applier resuming after the secondary's stored position"
        );
        let mut pending: BTreeMap<Lsn, Result<MirrorTxn, String>> = BTreeMap::new();
        let mut outcomes: HashMap<Lsn, bool> = HashMap::new();
        let mut first_after_start = true;
        // One tailing reader for the whole run (reopening would rescan the
        // segment from its start every time).
        let mut reader: Option<Reader> = None;
        loop {
            if stop.is_cancelled() {
                return Ok(());
            }
            let target = *visible.borrow_and_update();
            if target > read_to {
                let before = read_to;
                let r = match reader.as_mut() {
                    Some(r) => r,
                    None => reader.insert(Reader::open(&self.cfg.journal_dir, read_to + 1)?),
                };
                // Only records up to `target` are whole: past it the writer
                // may be mid-write (into zero-filled space), so nothing past
                // it is read, and what an earlier read buffered is dropped.
                r.drop_buffer()?;
                while read_to < target {
                    let Some((lsn, bytes)) = r.next_record()? else {
                        break;
                    };
                    read_to = lsn;
                    match JournalRecord::decode(&bytes) {
                        Ok(JournalRecord::Intent { token, txn }) => {
                            pending.insert(lsn, Ok(txn));
                            if token == 0 {
                                outcomes.insert(lsn, true);
                            }
                        }
                        Ok(JournalRecord::Outcome {
                            intent,
                            committed,
                            at_us,
                        }) => {
                            if intent > done {
                                outcomes.insert(intent, committed);
                                if at_us > 0 {
                                    if let Some(Ok(txn)) = pending.get_mut(&intent) {
                                        // Lag counts from the primary's answer.
                                        txn.committed_at_us = at_us;
                                    }
                                }
                            }
                        }
                        Err(e) => {
                            // Dead-lettered below, in its place in the order.
                            pending.insert(lsn, Err(e.to_string()));
                            outcomes.insert(lsn, true);
                        }
                    }
                }
                self.stats
                    .waiting
                    .store(pending.len() as u64, Ordering::Relaxed);
                while let Some((&lsn, _)) = pending.first_key_value() {
                    let Some(&committed) = outcomes.get(&lsn) else {
                        break;
                    };
                    if !committed {
                        outcomes.remove(&lsn);
                        pending.pop_first();
                        self.stats.skipped.fetch_add(1, Ordering::Relaxed);
                        done = lsn;
                        self.stats.applied_lsn.store(lsn, Ordering::Relaxed);
                        continue;
                    }
                    if matches!(pending.get(&lsn), Some(Err(_))) {
                        let reason = match pending.pop_first() {
                            Some((_, Err(r))) => r,
                            _ => "undecodable journal record".to_string(),
                        };
                        outcomes.remove(&lsn);
                        if lsn > self.journal.durable_lsn() {
                            // Only a durable LSN may become the position.
                            self.journal.sync().await?;
                        }
                        self.permanent(lsn, None, &reason).await?;
                        stored_pos = lsn;
                        done = lsn;
                        self.stats.applied_lsn.store(lsn, Ordering::Relaxed);
                        continue;
                    }
                    let group = take_group(&mut pending, &mut outcomes, &self.stats);
                    let Some(&(last, _)) = group.last() else {
                        break;
                    };
                    let outcome = self.apply_group(&stop, &group, first_after_start).await?;
                    if outcome == Outcome::Stopped {
                        // Not applied: the position and the journal stay
                        // where they are for the next start.
                        self.journal.truncate_before(stored_pos + 1).await;
                        return Ok(());
                    }
                    first_after_start = false;
                    stored_pos = last;
                    done = last;
                    self.stats.applied_lsn.store(last, Ordering::Relaxed);
                }
                self.stats
                    .waiting
                    .store(pending.len() as u64, Ordering::Relaxed);
                if pending.is_empty() {
                    // Outcome records past the last intent are done too.
                    done = done.max(read_to);
                    self.stats.applied_lsn.store(done, Ordering::Relaxed);
                }
                self.journal.truncate_before(stored_pos + 1).await;
                if read_to == before {
                    // Durable but not visible yet (should not happen): do
                    // not spin.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                continue;
            }
            tokio::select! {
                r = visible.changed() => if r.is_err() { return Ok(()) },
                _ = stop.cancelled() => return Ok(()),
            }
        }
    }

    /// Applies a group of consecutive committed transactions (ending at
    /// `lsn`) as one, retrying transient failures in order. A permanent
    /// failure of a group of several is narrowed down by applying its
    /// transactions one by one.
    async fn apply_group(
        &mut self,
        stop: &CancellationToken,
        group: &[(Lsn, MirrorTxn)],
        first_after_start: bool,
    ) -> Result<Outcome, ApplierError> {
        let Some(&(lsn, _)) = group.last() else {
            return Ok(Outcome::Done);
        };
        let txns: Vec<&MirrorTxn> = group.iter().map(|(_, t)| t).collect();
        let mut attempt = 0u32;
        loop {
            let timeout = self.cfg.attempt_timeout;
            let tried = match tokio::time::timeout(timeout, async {
                // After a failure the COMMIT may have succeeded with its
                // answer lost: the stored position says whether it did.
                if attempt > 0 && self.load_position().await? >= lsn {
                    return Ok(true);
                }
                self.try_apply(lsn, &txns, first_after_start)
                    .await
                    .map(|_| false)
            })
            .await
            {
                Ok(r) => r,
                Err(_) => Err(mysql_async::Error::Io(mysql_async::IoError::Io(
                    std::io::Error::new(std::io::ErrorKind::TimedOut, "apply attempt timed out"),
                ))),
            };
            match tried {
                Ok(already_committed) => {
                    if already_committed {
                        info!(
                            lsn,
                            "transaction had committed before the connection was lost"
                        );
                    }
                    let now = super::now_us();
                    for t in &txns {
                        self.stats
                            .lag
                            .record((now - t.committed_at_us).max(0) as u64);
                    }
                    self.stats
                        .applied
                        .fetch_add(txns.len() as u64, Ordering::Relaxed);
                    if let Some(t) = txns.last() {
                        self.stats
                            .last_committed_at_us
                            .store(t.committed_at_us, Ordering::Relaxed);
                    }
                    return Ok(Outcome::Done);
                }
                Err(e) if is_transient(&e) => {
                    attempt += 1;
                    tokio::select! {
                        _ = self.wait_after(attempt, &e) => {}
                        _ = stop.cancelled() => return Ok(Outcome::Stopped),
                    }
                }
                Err(e) if group.len() > 1 => {
                    let _ = self.rollback().await;
                    warn!(error = %e, size = group.len(), "group failed; applying it one transaction at a time");
                    for one in group {
                        let r = Box::pin(self.apply_group(
                            stop,
                            std::slice::from_ref(one),
                            first_after_start,
                        ))
                        .await?;
                        if r == Outcome::Stopped {
                            return Ok(Outcome::Stopped);
                        }
                    }
                    return Ok(Outcome::Done);
                }
                Err(e) => {
                    let _ = self.rollback().await;
                    self.permanent(lsn, txns.first().copied(), &e.to_string())
                        .await?;
                    return Ok(Outcome::Done);
                }
            }
        }
    }

    /// Applies `txns` (consecutive committed transactions ending at `lsn`)
    /// as one secondary transaction with the position update, sent as one
    /// multi-statement script: one round trip however many statements.
    async fn try_apply(
        &mut self,
        lsn: Lsn,
        txns: &[&MirrorTxn],
        first_after_start: bool,
    ) -> Result<(), mysql_async::Error> {
        let last_commit = txns.last().map_or(0, |t| t.committed_at_us);
        let ddl_only = txns.len() == 1
            && !txns[0].statements.is_empty()
            && txns[0].statements.iter().all(|s| s.ddl);
        if ddl_only {
            for st in &txns[0].statements {
                let prelude = self.prelude(st);
                if !prelude.is_empty() {
                    self.conn().await?.query_drop(prelude).await?;
                }
                let r = self.conn().await?.query_drop(st.sql.as_slice()).await;
                match r {
                    Err(mysql_async::Error::Server(e))
                        if first_after_start && is_replayed_ddl(e.code) =>
                    {
                        info!(lsn, code = e.code, "DDL already applied before the restart");
                    }
                    other => other?,
                }
            }
            return self.store_position(lsn, last_commit).await;
        }
        // Statements are separated by "\n;\n" so a trailing `--` comment
        // cannot swallow the separator.
        let mut script = b"START TRANSACTION;\n".to_vec();
        for txn in txns {
            for st in &txn.statements {
                let prelude = self.prelude(st);
                script.extend_from_slice(&prelude);
                script.extend_from_slice(&st.sql);
                script.extend_from_slice(b"\n;\n");
            }
        }
        script.extend_from_slice(self.position_sql(lsn, last_commit).as_bytes());
        script.extend_from_slice(b";\nCOMMIT");
        let r = self.conn().await?.query_drop(script).await;
        if r.is_err() {
            // Which SETs ran is unknown: start the next attempt clean.
            self.current_db = None;
            self.session.clear();
            self.ts_pinned = true;
        }
        r
    }

    /// `USE` and `SET` statements (each ending in `;\n`) that put the
    /// connection in the statement's session state; updates the cached state.
    fn prelude(&mut self, st: &super::record::MirrorStatement) -> Vec<u8> {
        let mut out = Vec::new();
        // No database: the secondary URL's own (the primary URL's maps to it).
        let target = st
            .db
            .clone()
            .or_else(|| self.cfg.secondary.database.clone());
        if target.is_some() && target != self.current_db {
            let db = target.unwrap_or_default();
            out.extend_from_slice(format!("USE `{}`;\n", db.replace('`', "``")).as_bytes());
            self.current_db = Some(db);
        }
        let mut sets = Vec::new();
        for (k, v) in &st.session {
            if !self.session.iter().any(|(k2, v2)| k2 == k && v2 == v) {
                sets.push(format!("SESSION {k} = {v}"));
            }
        }
        let p = &st.pins;
        match p.timestamp_us {
            Some(t) => {
                sets.push(format!(
                    "TIMESTAMP = {}.{:06}",
                    t.div_euclid(1_000_000),
                    t.rem_euclid(1_000_000)
                ));
                self.ts_pinned = true;
            }
            None if self.ts_pinned => {
                sets.push("TIMESTAMP = DEFAULT".into());
                self.ts_pinned = false;
            }
            None => {}
        }
        if let Some(id) = p.insert_id {
            sets.push(format!("INSERT_ID = {id}"));
        }
        if let Some(id) = p.last_insert_id {
            sets.push(format!("LAST_INSERT_ID = {id}"));
        }
        if let Some((a, b)) = p.rand_seeds {
            sets.push(format!("@@rand_seed1 = {a}, @@rand_seed2 = {b}"));
        }
        if !sets.is_empty() {
            out.extend_from_slice(format!("SET {};\n", sets.join(", ")).as_bytes());
        }
        for (k, v) in &st.session {
            self.session.retain(|(k2, _)| k2 != k);
            self.session.push((k.clone(), v.clone()));
        }
        out
    }

    async fn load_position(&mut self) -> Result<Lsn, mysql_async::Error> {
        let create = create_position_sql(&self.cfg.secondary);
        let select = format!(
            "SELECT lsn FROM {} WHERE id = 1",
            position_table(&self.cfg.secondary)
        );
        let conn = self.conn().await?;
        conn.query_drop(create).await?;
        let lsn: Option<u64> = conn.query_first(select).await?;
        Ok(lsn.unwrap_or(0))
    }

    /// The upsert of the applied position (qualified with the secondary
    /// URL's database, whatever the mirrored statements selected).
    fn position_sql(&self, lsn: Lsn, committed_at_us: i64) -> String {
        upsert_position_sql(&self.cfg.secondary, lsn, committed_at_us)
    }

    async fn store_position(
        &mut self,
        lsn: Lsn,
        committed_at_us: i64,
    ) -> Result<(), mysql_async::Error> {
        let sql = self.position_sql(lsn, committed_at_us);
        self.conn().await?.query_drop(sql).await
    }

    /// Records a transaction that cannot be applied, and advances past it.
    async fn permanent(
        &mut self,
        lsn: Lsn,
        txn: Option<&MirrorTxn>,
        reason: &str,
    ) -> Result<(), ApplierError> {
        self.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
        let tables: Vec<String> = txn
            .map(|t| super::record::tables_of(&t.statements))
            .unwrap_or_default();
        {
            let mut d = self
                .stats
                .divergent_tables
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            d.extend(tables.iter().cloned());
        }
        let entry = serde_json::json!({
            "lsn": lsn,
            "conn_id": txn.map(|t| t.conn_id),
            "committed_at_us": txn.map(|t| t.committed_at_us),
            "reason": reason,
            "tables": tables,
            "statements": txn.map(|t| t.statements.iter()
                .map(|s| String::from_utf8_lossy(&s.sql).into_owned())
                .collect::<Vec<_>>()),
        });
        if let Some(dir) = self.cfg.dead_letter.parent() {
            std::fs::create_dir_all(dir).map_err(ApplierError::DeadLetter)?;
        }
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.cfg.dead_letter)
            .map_err(ApplierError::DeadLetter)?;
        writeln!(f, "{entry}").map_err(ApplierError::DeadLetter)?;
        f.sync_data().map_err(ApplierError::DeadLetter)?;
        warn!(
            lsn,
            reason,
            ?tables,
            "mirrored transaction dead-lettered; tables marked divergent"
        );
        if self.cfg.on_permanent_error == OnPermanentError::Halt {
            return Err(ApplierError::Halted {
                lsn,
                reason: reason.to_string(),
            });
        }
        let committed = txn.map_or(0, |t| t.committed_at_us);
        self.store_position_retrying(lsn, committed).await
    }

    async fn load_position_retrying(
        &mut self,
        stop: &CancellationToken,
    ) -> Result<Lsn, ApplierError> {
        let mut attempt = 0;
        loop {
            match self.load_position().await {
                Ok(v) => return Ok(v),
                Err(e) if is_transient(&e) && !stop.is_cancelled() => {
                    attempt += 1;
                    self.wait_after(attempt, &e).await;
                }
                Err(e) => return Err(ApplierError::Secondary(e.to_string())),
            }
        }
    }

    async fn store_position_retrying(
        &mut self,
        lsn: Lsn,
        committed: i64,
    ) -> Result<(), ApplierError> {
        let mut attempt = 0;
        loop {
            match self.store_position(lsn, committed).await {
                Ok(()) => return Ok(()),
                Err(e) if is_transient(&e) => {
                    attempt += 1;
                    self.wait_after(attempt, &e).await;
                }
                Err(e) => return Err(ApplierError::Secondary(e.to_string())),
            }
        }
    }

    async fn wait_after(&mut self, attempt: u32, e: &mysql_async::Error) {
        self.stats.retried.fetch_add(1, Ordering::Relaxed);
        self.drop_conn();
        let wait = backoff(attempt);
        warn!(attempt, error = %e, ?wait, "secondary unavailable; retrying in order");
        tokio::time::sleep(wait).await;
    }

    async fn conn(&mut self) -> Result<&mut Conn, mysql_async::Error> {
        if self.conn.is_none() {
            let b = &self.cfg.secondary;
            let conn = Conn::new(crate::backend::client_opts(b)).await?;
            self.conn = Some(conn);
            self.current_db = b.database.clone();
            self.session.clear();
            self.ts_pinned = false;
        }
        Ok(self.conn.as_mut().expect("connected above"))
    }

    async fn rollback(&mut self) -> Result<(), mysql_async::Error> {
        if let Some(c) = self.conn.as_mut() {
            c.query_drop("ROLLBACK").await?;
        }
        Ok(())
    }

    fn drop_conn(&mut self) {
        self.conn = None;
    }
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis((50u64 << attempt.min(7)).min(5_000))
}

/// Errors after which the same transaction can simply be tried again.
fn is_transient(e: &mysql_async::Error) -> bool {
    match e {
        mysql_async::Error::Server(s) => matches!(
            s.code,
            1205 // lock wait timeout
                | 1213 // deadlock
                | 1040 // too many connections
                | 1053 // server shutdown in progress
                | 1927 // connection killed
                | 2006 | 2013
        ),
        mysql_async::Error::Io(_) | mysql_async::Error::Driver(_) => true,
        _ => false,
    }
}

/// Errors a replayed DDL gives when it already ran.
fn is_replayed_ddl(code: u16) -> bool {
    matches!(
        code,
        1050 // table exists
            | 1051 // unknown table (DROP)
            | 1060 // duplicate column
            | 1061 // duplicate key name
            | 1091 // can't drop field or key
            | 1007 // database exists
            | 1008 // database does not exist
            | 1304 // procedure/function exists
            | 1305 // procedure/function does not exist
            | 1359 // trigger exists
            | 1360 // trigger does not exist
    )
}

/// `db`.`_tandem_position` on `b` (its URL's database).
fn position_table(b: &BackendConfig) -> String {
    match &b.database {
        Some(db) => format!("`{}`.`{POSITION_TABLE}`", db.replace('`', "``")),
        None => format!("`{POSITION_TABLE}`"),
    }
}

fn create_position_sql(b: &BackendConfig) -> String {
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

fn upsert_position_sql(b: &BackendConfig, lsn: Lsn, committed_at_us: i64) -> String {
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
    conn.query_drop(upsert_position_sql(b, lsn, super::now_us()))
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
