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
use super::writeset::{self, Access, InFlight, Placement, TableInfo, WriteSet};
use super::JournalHandle;
use crate::config::{ApplyErrors, BackendConfig};
use mysql_async::prelude::*;
use mysql_async::Conn;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// `migration.apply_errors` as a running applier reads it at each
/// permanent error; shared, so a config reload changes it without a
/// restart. `Continue`: dead-letter the transaction, mark its tables
/// divergent, go on. `Halt`: stop applying before it (nothing skipped, the
/// position stays; a resumed applier tries it again).
#[derive(Debug, Clone)]
pub struct ErrorPolicy(Arc<std::sync::atomic::AtomicBool>);

impl ErrorPolicy {
    pub fn new(p: ApplyErrors) -> Self {
        ErrorPolicy(Arc::new(std::sync::atomic::AtomicBool::new(
            p == ApplyErrors::Halt,
        )))
    }

    pub fn set(&self, p: ApplyErrors) {
        self.0.store(p == ApplyErrors::Halt, Ordering::Relaxed);
    }

    pub fn get(&self) -> ApplyErrors {
        if self.0.load(Ordering::Relaxed) {
            ApplyErrors::Halt
        } else {
            ApplyErrors::Continue
        }
    }
}

pub struct ApplierConfig {
    pub secondary: BackendConfig,
    pub journal_dir: PathBuf,
    pub dead_letter: PathBuf,
    pub on_permanent_error: ErrorPolicy,
    /// One attempt at applying a transaction (or reading the position) may
    /// take this long; then the connection is dropped and it is retried.
    pub attempt_timeout: Duration,
    /// Connections applying in parallel (1: strictly one transaction after
    /// another, in journal order).
    pub workers: usize,
    /// How long a worker with fewer than `writeset::FILL` transactions in
    /// hand waits for more before applying them (`migration.apply_batch_wait`).
    pub batch_wait: Duration,
}

/// Counters the applier keeps (exported by the admin milestone).
#[derive(Debug, Default)]
pub struct ApplierStats {
    pub applied: AtomicU64,
    /// Secondary transactions that applied them (`applied / groups` is the
    /// mean group size).
    pub groups: AtomicU64,
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
    /// Serializes writes to the dead-letter file.
    pub dead_letter_lock: Mutex<()>,
    /// Most apply connections that were applying at the same moment.
    pub parallel_peak: AtomicU64,
    /// Transactions at or below this LSN are applied without waiting for
    /// fuller groups (someone waits for them: see `Mirror::hurry`).
    pub hurry_to: AtomicU64,
    /// Wakes the coordinator after `hurry_to` moved.
    pub hurry: tokio::sync::Notify,
    /// Outcomes (intent LSN, committed, primary answer time in µs) handed
    /// over in memory (`settle`), ahead of their journal records.
    settled: Mutex<Vec<(Lsn, bool, i64)>>,
    /// Wakes the coordinator after `settle`.
    settled_ready: tokio::sync::Notify,
    /// Groups applied as plain statements after the secondary refused
    /// their compound (`BEGIN NOT ATOMIC`) form.
    pub plain_fallbacks: AtomicU64,
}

impl ApplierStats {
    /// Tells the applier the primary's answer to an intent's COMMIT without
    /// waiting for its journal record (which the journal writes later).
    /// Safe because the intent itself is durable: a crash before the record
    /// is durable leaves the intent to be settled from its commit marker,
    /// and a position stored past it means it was applied.
    pub fn settle(&self, lsn: Lsn, committed: bool, at_us: i64) {
        self.settled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((lsn, committed, at_us));
        self.settled_ready.notify_one();
    }

    fn take_settled(&self) -> Vec<(Lsn, bool, i64)> {
        std::mem::take(&mut *self.settled.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// Most transactions applied as one secondary transaction.
const MAX_GROUP: usize = 256;
/// Most statement bytes in one group.
const MAX_GROUP_BYTES: usize = 4 << 20;

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
    #[error(
        "halted before LSN {lsn} (migration.apply_errors: halt), which the secondary refused: \
         {reason}; tables {tables:?}. Nothing was skipped: fix the secondary, then `tandem resume` \
         (POST /mirror/resume) applies from that transaction on"
    )]
    Halted {
        lsn: Lsn,
        reason: String,
        tables: Vec<String>,
    },
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
    cfg: Arc<ApplierConfig>,
    journal: JournalHandle,
    stats: Arc<ApplierStats>,
}

const POSITION_TABLE: &str = "_tandem_position";
const APPLIED_TABLE: &str = "_tandem_applied";

/// How often the journal is asked to delete applied segments.
const TRUNCATE_EVERY: Duration = Duration::from_millis(100);

/// Stored-position rows of `_tandem_applied` are deleted once the stored
/// position has moved this far past the last clean-up.
const CLEANUP_EVERY: Lsn = 4096;

/// What became of one journaled transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Applied, found already applied, or dead-lettered: its position is stored.
    Done,
    /// The applier was stopped before it could apply it.
    Stopped,
}

/// How a job records that it was applied, in its own secondary transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Position {
    /// Every intent before the job's transactions is applied: the stored
    /// position becomes the last applied LSN.
    Contiguous,
    /// Other workers still apply earlier intents: the job's LSNs go to
    /// `_tandem_applied`, and the stored position becomes `lwm` (below which
    /// everything is applied).
    Sparse { lwm: Lsn },
}

/// Work for one apply connection.
struct Job {
    txns: Vec<(Lsn, MirrorTxn)>,
    /// An undecodable record to dead-letter instead.
    dead: Option<(Lsn, String)>,
    position: Position,
    first_after_start: bool,
    /// Delete `_tandem_applied` rows at or below this (all below the stored
    /// position).
    cleanup: Option<Lsn>,
}

/// A worker's answer: the outcome and the position it stored.
type Finished = (usize, Result<(Outcome, Lsn), ApplierError>);

impl Applier {
    pub fn new(cfg: ApplierConfig, journal: JournalHandle) -> Self {
        Self {
            cfg: Arc::new(cfg),
            journal,
            stats: Arc::new(ApplierStats::default()),
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

    /// Applies until `stop` is cancelled; then returns after the
    /// transactions in progress.
    ///
    /// The journal holds intents and outcomes (see `record::JournalRecord`).
    /// Intents are taken in LSN order; the one at the head waits until its
    /// outcome is written, then is skipped (aborted) or handed to a worker
    /// connection: the one holding a transaction it conflicts with (see
    /// `writeset`), else the busiest one with room; when it conflicts with
    /// two workers' transactions (or its worker holds `writeset::CAP`) it
    /// waits, and so does every later one that overlaps it, while
    /// independent ones go on. So transactions that touch the same rows
    /// are applied in journal order on one connection, and only independent
    /// ones overlap. DDL and anything not understood run alone.
    pub async fn run(self, stop: CancellationToken) -> Result<(), ApplierError> {
        // Read up to what is written, not only what is durable: outcome
        // records get no fsync of their own, but every intent that is
        // written is durable (see `JournalHandle::written`), so every
        // position stored below is one a restart finds in the journal.
        let visible = self.journal.written();
        let mut first = Worker::new(0, self.cfg.clone(), self.stats.clone());
        let (stored, applied) = first.load_position_retrying(&stop).await?;
        let journal_end = *visible.borrow();
        if stored > journal_end {
            return Err(ApplierError::Mismatch {
                stored,
                journal_end,
            });
        }
        self.stats.applied_lsn.store(stored, Ordering::Relaxed);
        info!(
            lsn = stored,
            above = applied.len(),
            workers = self.cfg.workers,
            "applier resuming after the secondary's stored position"
        );
        let n = self.cfg.workers.clamp(1, crate::config::MAX_APPLY_WORKERS);
        let (done_tx, done_rx) = mpsc::unbounded_channel::<Finished>();
        let mut jobs = Vec::with_capacity(n);
        let mut handles = Vec::with_capacity(n);
        let mut first = Some(first);
        // Cancelled when the coordinator returns, for any reason: a worker
        // waiting to retry gives up then (an attempt in flight finishes).
        let workers_stop = stop.child_token();
        for index in 0..n {
            let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
            let mut worker = match first.take() {
                Some(w) => w,
                None => Worker::new(index, self.cfg.clone(), self.stats.clone()),
            };
            let done = done_tx.clone();
            let stop = workers_stop.clone();
            handles.push(tokio::spawn(async move {
                while let Some(job) = rx.recv().await {
                    let r = worker.run_job(&stop, job).await;
                    if done.send((index, r)).is_err() {
                        break;
                    }
                }
            }));
            jobs.push(tx);
        }
        drop(done_tx);
        let mut c = Coordinator {
            cfg: self.cfg.clone(),
            journal: self.journal.clone(),
            stats: self.stats.clone(),
            visible,
            jobs,
            done: done_rx,
            pending: BTreeMap::new(),
            outcomes: HashMap::new(),
            early: HashMap::new(),
            applied,
            inflight: InFlight::new(n),
            queued: (0..n).map(|_| VecDeque::new()).collect(),
            since: vec![None; n],
            running: (0..n).map(|_| None).collect(),
            exclusive: false,
            blocked: VecDeque::new(),
            waiting: InFlight::new(1),
            read_to: stored,
            stored,
            truncated: stored,
            truncated_at: Instant::now(),
            cleaned: stored,
            first_after_start: true,
            schema: Schema::default(),
            schema_retry: false,
            toks: Vec::new(),
        };
        let result = c.run(&stop).await;
        // Workers finish the job in hand (or give it up if waiting to
        // retry), then see their queue closed.
        workers_stop.cancel();
        c.jobs.clear();
        while let Some((w, r)) = c.done.recv().await {
            if let Ok((Outcome::Done, pos)) = r {
                c.stored = c.stored.max(pos);
            }
            c.running[w] = None;
        }
        for h in handles {
            let _ = h.await;
        }
        // Not applied: the position and the journal stay where they are for
        // the next start.
        self.journal.truncate_before(c.stored + 1).await;
        result
    }
}

/// Schema facts of the secondary's tables, read on a connection of its own
/// and kept until DDL is applied.
#[derive(Default)]
struct Schema {
    conn: Option<Conn>,
    tables: HashMap<(String, String), TableInfo>,
}

impl Schema {
    /// None when the secondary could not be asked (asked again later:
    /// nothing can be applied meanwhile anyway).
    async fn info(
        &mut self,
        b: &BackendConfig,
        db: &str,
        table: &str,
        timeout: Duration,
    ) -> Option<TableInfo> {
        let key = (db.to_string(), table.to_string());
        if let Some(i) = self.tables.get(&key) {
            return Some(i.clone());
        }
        let r = match tokio::time::timeout(timeout, self.lookup(b, db, table)).await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err("timed out".to_string()),
        };
        match r {
            Ok(info) => {
                self.tables.insert(key, info.clone());
                Some(info)
            }
            Err(e) => {
                warn!(error = %e, db, table, "secondary schema lookup failed; retrying");
                self.conn = None;
                None
            }
        }
    }

    async fn lookup(
        &mut self,
        b: &BackendConfig,
        db: &str,
        table: &str,
    ) -> Result<TableInfo, mysql_async::Error> {
        if self.conn.is_none() {
            self.conn = Some(Conn::new(crate::backend::client_opts(b)).await?);
        }
        let conn = self.conn.as_mut().expect("connected above");
        let lit = |s: &str| crate::sql::sql_literal(s.as_bytes());
        let (d, t) = (lit(db), lit(table));
        let sql = format!(
            "SELECT \
               (SELECT TABLE_TYPE FROM information_schema.TABLES WHERE TABLE_SCHEMA = {d} AND TABLE_NAME = {t}), \
               (SELECT COUNT(*) FROM information_schema.TRIGGERS WHERE EVENT_OBJECT_SCHEMA = {d} AND EVENT_OBJECT_TABLE = {t}), \
               (SELECT COUNT(*) FROM information_schema.KEY_COLUMN_USAGE WHERE REFERENCED_TABLE_NAME IS NOT NULL \
                  AND ((TABLE_SCHEMA = {d} AND TABLE_NAME = {t}) OR (REFERENCED_TABLE_SCHEMA = {d} AND REFERENCED_TABLE_NAME = {t}))), \
               (SELECT GROUP_CONCAT(CONCAT(INDEX_NAME, '/', COLUMN_NAME) SEPARATOR '\\n') FROM information_schema.STATISTICS \
                  WHERE TABLE_SCHEMA = {d} AND TABLE_NAME = {t} AND NON_UNIQUE = 0), \
               (SELECT GROUP_CONCAT(DATA_TYPE) FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = {d} AND TABLE_NAME = {t} AND COLUMN_KEY = 'PRI')"
        );
        type Row = (Option<String>, u64, u64, Option<String>, Option<String>);
        let row: Option<Row> = conn.query_first(sql).await?;
        let Some((kind, triggers, fks, unique, pk_type)) = row else {
            return Ok(TableInfo::Barrier);
        };
        if kind.as_deref() != Some("BASE TABLE") || triggers > 0 || fks > 0 {
            return Ok(TableInfo::Barrier);
        }
        let unique: Vec<(&str, &str)> = unique
            .as_deref()
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once('/'))
            .collect();
        let integer = matches!(
            pk_type.as_deref().map(str::to_ascii_lowercase).as_deref(),
            Some("tinyint" | "smallint" | "mediumint" | "int" | "bigint")
        );
        Ok(match unique.as_slice() {
            [("PRIMARY", col)] if integer => TableInfo::Rows {
                pk: col.to_ascii_lowercase(),
            },
            _ => TableInfo::Whole,
        })
    }
}

/// Reads the journal, resolves outcomes and hands transactions to workers.
struct Coordinator {
    cfg: Arc<ApplierConfig>,
    journal: JournalHandle,
    stats: Arc<ApplierStats>,
    visible: tokio::sync::watch::Receiver<Lsn>,
    jobs: Vec<mpsc::UnboundedSender<Job>>,
    done: mpsc::UnboundedReceiver<Finished>,
    /// Intents read, not yet handed out, by LSN (Err: undecodable).
    pending: BTreeMap<Lsn, Result<MirrorTxn, String>>,
    outcomes: HashMap<Lsn, bool>,
    /// Outcomes settled in memory for intents not read yet.
    early: HashMap<Lsn, (bool, i64)>,
    /// Intents above the stored position that are already applied.
    applied: HashSet<Lsn>,
    inflight: InFlight,
    /// Per worker: handed out, waiting for the worker to be free.
    queued: Vec<VecDeque<(Lsn, MirrorTxn, WriteSet)>>,
    /// Per worker: when its oldest queued transaction was handed to it.
    since: Vec<Option<Instant>>,
    /// Per worker: the job it is applying.
    running: Vec<Option<Vec<(Lsn, WriteSet)>>>,
    /// A job that must run alone (DDL, dead letter) is running.
    exclusive: bool,
    /// Resolved intents that wait for a worker, in LSN order, and their
    /// write-sets (later intents that overlap them wait too).
    blocked: VecDeque<(Lsn, MirrorTxn, WriteSet)>,
    waiting: InFlight,
    read_to: Lsn,
    /// Highest position stored on the secondary.
    stored: Lsn,
    truncated: Lsn,
    truncated_at: Instant,
    cleaned: Lsn,
    first_after_start: bool,
    schema: Schema,
    /// The head waits for a schema lookup to be retried.
    schema_retry: bool,
    toks: Vec<crate::router::lexer::Token>,
}

impl Coordinator {
    async fn run(&mut self, stop: &CancellationToken) -> Result<(), ApplierError> {
        // One tailing reader for the whole run (reopening would rescan the
        // segment from its start every time).
        let mut reader: Option<Reader> = None;
        loop {
            if stop.is_cancelled() {
                return Ok(());
            }
            let target = *self.visible.borrow_and_update();
            let mut stalled = false;
            if target > self.read_to {
                let before = self.read_to;
                let r = match reader.as_mut() {
                    Some(r) => r,
                    None => reader.insert(Reader::open(&self.cfg.journal_dir, self.read_to + 1)?),
                };
                self.read(r, target)?;
                stalled = self.read_to == before;
            }
            for (lsn, committed, at_us) in self.stats.take_settled() {
                self.resolve(lsn, committed, at_us);
            }
            while let Ok((w, r)) = self.done.try_recv() {
                self.finished(w, r)?;
            }
            self.schema_retry = false;
            self.dispatch().await?;
            self.publish().await;
            if self.read_to < *self.visible.borrow() && !stalled {
                continue;
            }
            let start_at = self.next_start();
            let stats = self.stats.clone();
            tokio::select! {
                r = self.visible.changed() => if r.is_err() { return Ok(()) },
                _ = stats.settled_ready.notified() => {}
                d = self.done.recv() => match d {
                    Some((w, r)) => self.finished(w, r)?,
                    None => return Ok(()),
                },
                _ = tokio::time::sleep_until(start_at.unwrap_or_else(Instant::now).into()), if start_at.is_some() => {}
                _ = stats.hurry.notified(), if start_at.is_some() => {}
                // Written but not readable yet (should not happen): do not spin.
                _ = tokio::time::sleep(Duration::from_millis(5)), if stalled => {}
                _ = tokio::time::sleep(Duration::from_millis(200)), if self.schema_retry => {}
                _ = stop.cancelled() => return Ok(()),
            }
        }
    }

    /// Reads records up to `target` (never past it: beyond, the writer may
    /// be mid-write into zero-filled space).
    fn read(&mut self, r: &mut Reader, target: Lsn) -> Result<(), ApplierError> {
        r.drop_buffer()?;
        while self.read_to < target {
            let Some((lsn, bytes)) = r.next_record()? else {
                break;
            };
            self.read_to = lsn;
            match JournalRecord::decode(&bytes) {
                Ok(JournalRecord::Intent { token, txn }) => {
                    let early = self.early.remove(&lsn);
                    if self.applied.remove(&lsn) {
                        // Applied before the restart (parallel apply).
                        continue;
                    }
                    self.pending.insert(lsn, Ok(txn));
                    if token == 0 {
                        self.outcomes.insert(lsn, true);
                    }
                    if let Some((committed, at_us)) = early {
                        self.resolve(lsn, committed, at_us);
                    }
                }
                Ok(JournalRecord::Outcome {
                    intent,
                    committed,
                    at_us,
                }) => self.resolve(intent, committed, at_us),
                Err(e) => {
                    // Dead-lettered in its place in the order.
                    self.early.remove(&lsn);
                    self.pending.insert(lsn, Err(e.to_string()));
                    self.outcomes.insert(lsn, true);
                }
            }
        }
        Ok(())
    }

    /// An intent's outcome, from its journal record or settled in memory
    /// (which comes first varies). One for an intent not read yet waits in
    /// `early`; one for an intent already handed out or skipped (the other
    /// copy of the same outcome) is ignored.
    fn resolve(&mut self, lsn: Lsn, committed: bool, at_us: i64) {
        if let Some(entry) = self.pending.get_mut(&lsn) {
            self.outcomes.insert(lsn, committed);
            if let (true, Ok(txn)) = (at_us > 0, entry) {
                // Lag counts from the primary's answer.
                txn.committed_at_us = at_us;
            }
        } else if lsn > self.read_to {
            self.early.insert(lsn, (committed, at_us));
        }
    }

    /// Hands out resolved intents in LSN order. One that cannot be placed
    /// yet (it conflicts with two workers, or its worker already holds
    /// `writeset::CAP`) waits in `blocked`, and so does every later one that
    /// conflicts with a waiting one; the others go on to the workers.
    async fn dispatch(&mut self) -> Result<(), ApplierError> {
        if self.exclusive {
            return Ok(());
        }
        self.place_blocked();
        while !self.exclusive {
            let Some((&lsn, entry)) = self.pending.first_key_value() else {
                break;
            };
            let Some(&committed) = self.outcomes.get(&lsn) else {
                break;
            };
            if !committed {
                self.outcomes.remove(&lsn);
                self.pending.pop_first();
                self.stats.skipped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let alone = match entry {
                Err(_) => true,
                Ok(txn) => txn.statements.iter().any(|s| s.ddl),
            };
            if alone {
                if !self.inflight.is_idle() || !self.blocked.is_empty() {
                    break;
                }
                let Some((_, entry)) = self.pending.pop_first() else {
                    break;
                };
                self.outcomes.remove(&lsn);
                let (txns, dead) = match entry {
                    Ok(txn) => (vec![(lsn, txn)], None),
                    Err(reason) => {
                        if lsn > self.journal.durable_lsn() {
                            // Only a durable LSN may become the position.
                            self.journal.sync().await?;
                        }
                        (Vec::new(), Some((lsn, reason)))
                    }
                };
                self.exclusive = true;
                self.inflight.add(0, &WriteSet::Barrier);
                self.running[0] = Some(vec![(lsn, WriteSet::Barrier)]);
                self.send(
                    0,
                    Job {
                        txns,
                        dead,
                        position: Position::Contiguous,
                        first_after_start: self.first_after_start,
                        cleanup: None,
                    },
                );
                return Ok(());
            }
            let Some((_, Ok(txn))) = self.pending.pop_first() else {
                break;
            };
            let Some(ws) = self.write_set(&txn).await else {
                // Asked again shortly; the intent keeps its place.
                self.pending.insert(lsn, Ok(txn));
                self.schema_retry = true;
                break;
            };
            self.outcomes.remove(&lsn);
            self.place(lsn, txn, ws);
        }
        for w in 0..self.jobs.len() {
            if self.ready(w) {
                self.start(w);
            }
        }
        Ok(())
    }

    /// Queues a transaction on its worker, or makes it wait behind the
    /// waiting ones it conflicts with.
    fn place(&mut self, lsn: Lsn, txn: MirrorTxn, ws: WriteSet) {
        let w = if self.waiting.overlaps(&ws) {
            None
        } else {
            match self.inflight.place(&ws) {
                Placement::Worker(w) => Some(w),
                Placement::Wait => None,
            }
        };
        match w {
            Some(w) => {
                self.inflight.add(w, &ws);
                // In LSN order: a waiting intent placed now may be older
                // than what the worker already holds (it overlaps none of
                // those, or they would have waited behind it). Positions
                // and the low-water mark read each queue's front as its
                // lowest LSN.
                let q = &mut self.queued[w];
                let at = q.partition_point(|(l, _, _)| *l < lsn);
                q.insert(at, (lsn, txn, ws));
                self.since[w].get_or_insert_with(Instant::now);
            }
            None => {
                self.waiting.add(0, &ws);
                self.blocked.push_back((lsn, txn, ws));
            }
        }
    }

    /// Places waiting transactions that can go now (in LSN order).
    fn place_blocked(&mut self) {
        if self.blocked.is_empty() {
            return;
        }
        let blocked = std::mem::take(&mut self.blocked);
        self.waiting = InFlight::new(1);
        for (lsn, txn, ws) in blocked {
            self.place(lsn, txn, ws);
        }
    }

    /// Whether worker `w` should start on what it holds now: it is idle
    /// and holds `FILL` transactions, or the oldest has waited
    /// `batch_wait`, or something waits for them (blocked transactions, or
    /// a caller of `Mirror::hurry`).
    fn ready(&self, w: usize) -> bool {
        if self.running[w].is_some() || self.queued[w].is_empty() {
            return false;
        }
        let hurry = self.stats.hurry_to.load(Ordering::Relaxed);
        self.queued[w].len() >= writeset::FILL
            || !self.blocked.is_empty()
            || self.queued[w].front().is_some_and(|(l, _, _)| *l <= hurry)
            || self.since[w].is_none_or(|t| t.elapsed() >= self.cfg.batch_wait)
    }

    /// When the next idle worker's wait for a fuller group ends.
    fn next_start(&self) -> Option<Instant> {
        (0..self.jobs.len())
            .filter(|w| self.running[*w].is_none() && !self.queued[*w].is_empty())
            .filter_map(|w| self.since[w])
            .min()
            .map(|t| t + self.cfg.batch_wait)
    }

    /// Starts worker `w` on what is queued for it (one group).
    fn start(&mut self, w: usize) {
        let mut txns = Vec::new();
        let mut keys = Vec::new();
        let mut bytes = 0usize;
        while let Some((_, txn, _)) = self.queued[w].front() {
            if !txns.is_empty() && (txns.len() >= MAX_GROUP || bytes >= MAX_GROUP_BYTES) {
                break;
            }
            bytes += txn.statements.iter().map(|s| s.sql.len()).sum::<usize>();
            let Some((lsn, txn, ws)) = self.queued[w].pop_front() else {
                break;
            };
            txns.push((lsn, txn));
            keys.push((lsn, ws));
        }
        if self.queued[w].is_empty() {
            self.since[w] = None;
        }
        let Some(&(last, _)) = txns.last() else {
            return;
        };
        debug_assert!(txns.windows(2).all(|p| p[0].0 < p[1].0));
        // Counted as outstanding from here on (the low-water mark below
        // must stay under this job's LSNs).
        self.running[w] = Some(keys);
        let busy = self.running.iter().filter(|r| r.is_some()).count() as u64;
        self.stats.parallel_peak.fetch_max(busy, Ordering::Relaxed);
        // Contiguous when nothing below `last` is outstanding elsewhere.
        let others = self.outstanding_min(Some(w));
        let position = match others {
            Some(m) if m < last => Position::Sparse { lwm: self.lwm() },
            _ => Position::Contiguous,
        };
        let cleanup = (self.stored >= self.cleaned + CLEANUP_EVERY).then(|| {
            self.cleaned = self.stored;
            self.stored
        });
        self.send(
            w,
            Job {
                txns,
                dead: None,
                position,
                first_after_start: self.first_after_start,
                cleanup,
            },
        );
    }

    fn send(&mut self, w: usize, job: Job) {
        // A worker only goes away with the applier.
        let _ = self.jobs[w].send(job);
    }

    /// Lowest LSN not yet applied among intents read (pending, queued,
    /// running), leaving out worker `except`'s queue and job.
    fn outstanding_min(&self, except: Option<usize>) -> Option<Lsn> {
        let workers = (0..self.queued.len())
            .filter(|w| Some(*w) != except)
            .flat_map(|w| {
                let queued = self.queued[w].front().map(|(l, _, _)| *l);
                let running = self.running[w].as_ref().and_then(|j| j.first());
                [queued, running.map(|(l, _)| *l)]
            })
            .flatten();
        self.pending
            .first_key_value()
            .map(|(l, _)| *l)
            .into_iter()
            .chain(self.blocked.front().map(|(l, _, _)| *l))
            .chain(workers)
            .min()
    }

    /// Every intent at or below this is applied (or skipped).
    fn lwm(&self) -> Lsn {
        match self.outstanding_min(None) {
            Some(m) => m - 1,
            None => self.read_to,
        }
    }

    fn finished(
        &mut self,
        w: usize,
        r: Result<(Outcome, Lsn), ApplierError>,
    ) -> Result<(), ApplierError> {
        let (outcome, pos) = r?;
        if outcome == Outcome::Stopped {
            return Ok(());
        }
        if let Some(keys) = self.running[w].take() {
            for (_, ws) in &keys {
                self.inflight.remove(w, ws);
            }
        }
        if self.exclusive {
            // DDL changes what tables look like.
            self.schema.tables.clear();
            self.exclusive = false;
        }
        self.first_after_start = false;
        self.stored = self.stored.max(pos);
        if self.ready(w) {
            self.start(w);
        }
        Ok(())
    }

    /// Counters, and the journal truncated below the stored position.
    async fn publish(&mut self) {
        let waiting = self.pending.len()
            + self.blocked.len()
            + self.queued.iter().map(VecDeque::len).sum::<usize>();
        self.stats.waiting.store(waiting as u64, Ordering::Relaxed);
        self.stats.applied_lsn.store(self.lwm(), Ordering::Relaxed);
        // Segments are deleted whole: asking after every group would only
        // cost the writer thread a wake-up each time.
        if self.stored > self.truncated && self.truncated_at.elapsed() >= TRUNCATE_EVERY {
            self.truncated = self.stored;
            self.truncated_at = Instant::now();
            self.journal.truncate_before(self.stored + 1).await;
        }
    }

    /// What `txn` writes (see `writeset`); None when the secondary's schema
    /// could not be read.
    async fn write_set(&mut self, txn: &MirrorTxn) -> Option<WriteSet> {
        let mut acc = Vec::new();
        for st in &txn.statements {
            let shape = writeset::shape_of(&st.sql, &mut self.toks);
            let Some((db, table)) = writeset::shape_table(&shape) else {
                return Some(WriteSet::Barrier);
            };
            let Some(db) = db
                .clone()
                .or_else(|| st.db.clone())
                .or_else(|| self.cfg.secondary.database.clone())
            else {
                return Some(WriteSet::Barrier);
            };
            let info = self
                .schema
                .info(
                    &self.cfg.secondary,
                    &db,
                    table,
                    self.cfg.attempt_timeout.min(Duration::from_secs(5)),
                )
                .await?;
            let id = writeset::table_id(&db, table);
            if writeset::accesses(&shape, &info, id, &mut acc).is_none() {
                return Some(WriteSet::Barrier);
            }
        }
        acc.sort_unstable_by_key(|a| match a {
            Access::Row(t, k) => (*t, 1, *k),
            Access::Table(t) => (*t, 0, 0),
        });
        acc.dedup();
        Some(WriteSet::Accesses(acc))
    }
}

/// What goes before a mirrored statement on the apply connection.
struct Prelude {
    /// `USE` and session `SET`s: the state the statement is parsed under.
    session: Vec<u8>,
    /// `SET` of the values the primary generated (TIMESTAMP, INSERT_ID, …).
    pins: Vec<u8>,
}

/// One apply connection and its session state.
struct Worker {
    index: usize,
    cfg: Arc<ApplierConfig>,
    stats: Arc<ApplierStats>,
    conn: Option<Conn>,
    /// Session state last set on `conn` (avoids re-sending unchanged SETs).
    current_db: Option<String>,
    session: Vec<(String, String)>,
    /// The settings of the last statement prepared for `conn` (all of them
    /// are in `session`).
    last_session: Option<super::record::SessionVars>,
    /// The connection's TIMESTAMP may be pinned (reset before an unpinned
    /// statement).
    ts_pinned: bool,
    /// The secondary runs compound statements (MariaDB): groups are sent
    /// as `BEGIN NOT ATOMIC … END` blocks.
    compound: bool,
    /// A compound block failed where the plain statements applied: plain
    /// statements from then on.
    compound_refused: bool,
}

impl Worker {
    fn new(index: usize, cfg: Arc<ApplierConfig>, stats: Arc<ApplierStats>) -> Self {
        Self {
            index,
            cfg,
            stats,
            conn: None,
            current_db: None,
            session: Vec::new(),
            last_session: None,
            ts_pinned: true,
            compound: false,
            compound_refused: false,
        }
    }

    /// Applies a job; returns the position it stored.
    async fn run_job(
        &mut self,
        stop: &CancellationToken,
        job: Job,
    ) -> Result<(Outcome, Lsn), ApplierError> {
        if let Some((lsn, reason)) = job.dead {
            self.permanent(lsn, None, &reason, job.position).await?;
            return Ok((Outcome::Done, lsn));
        }
        let Some(&(last, _)) = job.txns.last() else {
            return Ok((Outcome::Done, 0));
        };
        let outcome = self
            .apply_group(
                stop,
                &job.txns,
                job.position,
                job.first_after_start,
                job.cleanup,
            )
            .await?;
        let stored = match job.position {
            Position::Contiguous => last,
            Position::Sparse { lwm } => lwm,
        };
        Ok((outcome, stored))
    }

    /// Applies a group of committed transactions (ending at `lsn`) as one,
    /// retrying transient failures in order. A permanent failure of a group
    /// of several is narrowed down by applying its transactions one by one.
    async fn apply_group(
        &mut self,
        stop: &CancellationToken,
        group: &[(Lsn, MirrorTxn)],
        position: Position,
        first_after_start: bool,
        cleanup: Option<Lsn>,
    ) -> Result<Outcome, ApplierError> {
        let Some(&(lsn, _)) = group.last() else {
            return Ok(Outcome::Done);
        };
        let txns: Vec<&MirrorTxn> = group.iter().map(|(_, t)| t).collect();
        let lsns: Vec<Lsn> = group.iter().map(|(l, _)| *l).collect();
        let mut attempt = 0u32;
        loop {
            let timeout = self.cfg.attempt_timeout;
            let tried = match tokio::time::timeout(timeout, async {
                // After a failure the COMMIT may have succeeded with its
                // answer lost: the stored position says whether it did.
                if attempt > 0 && self.is_applied(lsn).await? {
                    return Ok(true);
                }
                self.try_apply(&lsns, &txns, position, first_after_start, cleanup)
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
                    self.stats.groups.fetch_add(1, Ordering::Relaxed);
                    if let Some(t) = txns.last() {
                        self.stats
                            .last_committed_at_us
                            .fetch_max(t.committed_at_us, Ordering::Relaxed);
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
                            position,
                            first_after_start,
                            None,
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
                    self.permanent(lsn, txns.first().copied(), &e.to_string(), position)
                        .await?;
                    return Ok(Outcome::Done);
                }
            }
        }
    }

    /// Applies `txns` (committed transactions at `lsns`) as one secondary
    /// transaction with the position update, sent as one query (see
    /// `script`): one round trip however many statements.
    async fn try_apply(
        &mut self,
        lsns: &[Lsn],
        txns: &[&MirrorTxn],
        position: Position,
        first_after_start: bool,
        cleanup: Option<Lsn>,
    ) -> Result<(), mysql_async::Error> {
        // Connect first: connecting resets the cached session state the
        // scripts below are built against.
        self.conn().await?;
        let last_commit = txns.last().map_or(0, |t| t.committed_at_us);
        let ddl_only = txns.len() == 1
            && !txns[0].statements.is_empty()
            && txns[0].statements.iter().all(|s| s.ddl);
        if ddl_only {
            for st in &txns[0].statements {
                let prelude = self.prelude(st);
                let sql = [prelude.session, prelude.pins].concat();
                if !sql.is_empty() {
                    self.conn().await?.query_drop(sql).await?;
                }
                let r = self.conn().await?.query_drop(st.sql.as_slice()).await;
                match r {
                    Err(mysql_async::Error::Server(e))
                        if first_after_start && is_replayed_ddl(e.code) =>
                    {
                        info!(
                            lsn = lsns.last().copied().unwrap_or_default(),
                            code = e.code,
                            "DDL already applied before the restart"
                        );
                    }
                    other => other?,
                }
            }
            return self.store_position(lsns, last_commit, position).await;
        }
        let compound = self.compound && !self.compound_refused;
        if compound {
            let script = self.script(true, lsns, txns, position, cleanup);
            match self.send_script(script).await {
                Ok(()) => return Ok(()),
                Err(e) if is_transient(&e) => return Err(e),
                Err(e) => {
                    // The same group as plain statements: a server that
                    // refuses the compound form for these statements still
                    // applies them, and a real failure fails again there.
                    self.rollback().await?;
                    let plain = self.script(false, lsns, txns, position, cleanup);
                    self.send_script(plain).await?;
                    self.stats.plain_fallbacks.fetch_add(1, Ordering::Relaxed);
                    warn!(error = %e, "secondary refused a compound apply statement that applies as plain statements; this connection sends plain statements from now on");
                    self.compound_refused = true;
                    return Ok(());
                }
            }
        }
        let script = self.script(false, lsns, txns, position, cleanup);
        self.send_script(script).await
    }

    /// Sends one apply script; after a failure, which SETs ran is unknown,
    /// so the next attempt starts clean.
    async fn send_script(&mut self, script: Vec<u8>) -> Result<(), mysql_async::Error> {
        let r = self.conn().await?.query_drop(script).await;
        if r.is_err() {
            self.current_db = None;
            self.session.clear();
            self.last_session = None;
            self.ts_pinned = true;
        }
        r
    }

    /// The group as one query: `START TRANSACTION`, each statement after
    /// its `USE`/`SET` prelude, the position, `COMMIT`.
    ///
    /// Plain, it is a multi-statement script, which the server answers with
    /// a packet per statement. `compound` wraps the statements in MariaDB
    /// `BEGIN NOT ATOMIC … END` blocks, answered with one packet per block,
    /// which cuts MariaDB's CPU per applied transaction by a quarter (groups
    /// of 1) to two thirds (groups of 16) (`scripts/apply-cost.sh`; about
    /// 50 µs per sysbench transaction under load). `USE` and session `SET`s stay outside the
    /// blocks, so that every block is parsed under the session state its
    /// statements were written for (a block is parsed whole before it runs,
    /// and a stored program restores `sql_mode` when it ends); the pinned
    /// values (TIMESTAMP, INSERT_ID, LAST_INSERT_ID, RAND seeds) are set
    /// inside, before each statement, as in the plain form.
    fn script(
        &mut self,
        compound: bool,
        lsns: &[Lsn],
        txns: &[&MirrorTxn],
        position: Position,
        cleanup: Option<Lsn>,
    ) -> Vec<u8> {
        const OPEN: &[u8] = b"BEGIN NOT ATOMIC\n";
        const START: &[u8] = b"START TRANSACTION;\n";
        let text: usize = txns
            .iter()
            .flat_map(|t| &t.statements)
            .map(|st| st.sql.len() + 64)
            .sum();
        let mut script = Vec::with_capacity(text + 256);
        let mut open = false;
        let mut started = false;
        for txn in txns {
            for st in &txn.statements {
                let prelude = self.prelude(st);
                if !prelude.session.is_empty() {
                    if open {
                        script.extend_from_slice(b"END;\n");
                        open = false;
                    }
                    script.extend_from_slice(&prelude.session);
                }
                if compound && !open {
                    script.extend_from_slice(OPEN);
                    open = true;
                }
                if !started {
                    script.extend_from_slice(START);
                    started = true;
                }
                script.extend_from_slice(&prelude.pins);
                script.extend_from_slice(&st.sql);
                // Not just ";": a trailing `--` comment must not swallow it.
                script.extend_from_slice(b"\n;\n");
            }
        }
        if compound && !open {
            script.extend_from_slice(OPEN);
        }
        if !started {
            script.extend_from_slice(START);
        }
        if let Some(below) = cleanup {
            script.extend_from_slice(
                format!(
                    "DELETE FROM {} WHERE lsn <= {below};\n",
                    applied_table(&self.cfg.secondary)
                )
                .as_bytes(),
            );
        }
        let last_commit = txns.last().map_or(0, |t| t.committed_at_us);
        script.extend_from_slice(self.position_sql(lsns, last_commit, position).as_bytes());
        script.extend_from_slice(if compound {
            b";\nCOMMIT;\nEND"
        } else {
            b";\nCOMMIT"
        });
        script
    }

    /// The statements (each ending in `;\n`) that put the connection in
    /// `st`'s session state and pin its generated values; updates the
    /// cached state.
    fn prelude(&mut self, st: &super::record::MirrorStatement) -> Prelude {
        let mut session = Vec::new();
        // No database: the secondary URL's own (the primary URL's maps to it).
        let target = st.db.as_ref().or(self.cfg.secondary.database.as_ref());
        if let Some(db) = target.filter(|db| self.current_db.as_ref() != Some(*db)) {
            session.extend_from_slice(format!("USE {};\n", crate::sql::quote(db)).as_bytes());
            self.current_db = Some(db.clone());
        }
        // Statements of one session share their settings (one `Arc`), and
        // they rarely change: compared as a whole first.
        let same = self
            .last_session
            .as_ref()
            .is_some_and(|l| Arc::ptr_eq(l, &st.session) || **l == *st.session);
        if !same {
            let changed: Vec<String> = st
                .session
                .iter()
                .filter(|(k, v)| !self.session.iter().any(|(k2, v2)| k2 == k && v2 == v))
                .map(|(k, v)| format!("SESSION {k} = {v}"))
                .collect();
            if !changed.is_empty() {
                session.extend_from_slice(format!("SET {};\n", changed.join(", ")).as_bytes());
            }
            for (k, v) in st.session.iter() {
                self.session.retain(|(k2, _)| k2 != k);
                self.session.push((k.clone(), v.clone()));
            }
            self.last_session = Some(st.session.clone());
        }
        let mut sets = Vec::new();
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
        let pins = if sets.is_empty() {
            Vec::new()
        } else {
            format!("SET {};\n", sets.join(", ")).into_bytes()
        };
        Prelude { session, pins }
    }

    /// The stored position (highest over the workers' rows) and the
    /// intents above it that are applied already.
    async fn load_position(&mut self) -> Result<(Lsn, HashSet<Lsn>), mysql_async::Error> {
        let b = self.cfg.secondary.clone();
        let conn = self.conn().await?;
        conn.query_drop(create_position_sql(&b)).await?;
        conn.query_drop(create_applied_sql(&b)).await?;
        let lsn: Option<Option<u64>> = conn
            .query_first(format!("SELECT MAX(lsn) FROM {}", position_table(&b)))
            .await?;
        let lsn = lsn.flatten().unwrap_or(0);
        let above: Vec<u64> = conn
            .query(format!(
                "SELECT lsn FROM {} WHERE lsn > {lsn}",
                applied_table(&b)
            ))
            .await?;
        Ok((lsn, above.into_iter().collect()))
    }

    /// Whether the transaction at `lsn` is applied on the secondary.
    async fn is_applied(&mut self, lsn: Lsn) -> Result<bool, mysql_async::Error> {
        let (stored, above) = self.load_position().await?;
        Ok(stored >= lsn || above.contains(&lsn))
    }

    /// The statements recording that `lsns` are applied (this worker's row
    /// of the position table; under `Sparse` also the LSNs themselves),
    /// separated by `;\n`.
    fn position_sql(&self, lsns: &[Lsn], committed_at_us: i64, position: Position) -> String {
        let b = &self.cfg.secondary;
        let id = self.index + 1;
        match position {
            Position::Contiguous => {
                let lsn = lsns.last().copied().unwrap_or_default();
                advance_position_sql(b, id, lsn, committed_at_us)
            }
            Position::Sparse { lwm } => {
                let values: Vec<String> = lsns.iter().map(|l| format!("({l})")).collect();
                format!(
                    "INSERT INTO {} (lsn) VALUES {};\n{}",
                    applied_table(b),
                    values.join(", "),
                    advance_position_sql(b, id, lwm, committed_at_us)
                )
            }
        }
    }

    async fn store_position(
        &mut self,
        lsns: &[Lsn],
        committed_at_us: i64,
        position: Position,
    ) -> Result<(), mysql_async::Error> {
        let sql = format!(
            "START TRANSACTION;\n{};\nCOMMIT",
            self.position_sql(lsns, committed_at_us, position)
        );
        self.conn().await?.query_drop(sql).await
    }

    /// A transaction the secondary refuses: recorded in the dead-letter
    /// file (statements, reason, `action`); under `continue` skipped with
    /// its tables marked divergent, under `halt` the applier stops before
    /// it (nothing skipped, the position stays).
    async fn permanent(
        &mut self,
        lsn: Lsn,
        txn: Option<&MirrorTxn>,
        reason: &str,
        position: Position,
    ) -> Result<(), ApplierError> {
        let tables: Vec<String> = txn
            .map(|t| super::record::tables_of(&t.statements))
            .unwrap_or_default();
        let statements = txn.map(|t| {
            t.statements
                .iter()
                .map(|s| String::from_utf8_lossy(&s.sql).into_owned())
                .collect::<Vec<_>>()
        });
        let halt = self.cfg.on_permanent_error.get() == ApplyErrors::Halt;
        let entry = serde_json::json!({
            "lsn": lsn,
            // skipped: not applied, never will be; halted: the applier
            // stopped before it and applies it once resumed.
            "action": if halt { "halted" } else { "skipped" },
            "conn_id": txn.map(|t| t.conn_id),
            "committed_at_us": txn.map(|t| t.committed_at_us),
            "reason": reason,
            "tables": tables,
            "statements": statements,
        });
        {
            // Workers share the file: one line at a time.
            let _guard = self
                .stats
                .dead_letter_lock
                .lock()
                .unwrap_or_else(|p| p.into_inner());
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
        }
        if halt {
            warn!(
                lsn,
                reason,
                ?tables,
                "mirrored transaction refused by the secondary; applier halted before it (apply_errors: halt)"
            );
            return Err(ApplierError::Halted {
                lsn,
                reason: reason.to_string(),
                tables,
            });
        }
        self.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
        self.stats
            .divergent_tables
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(tables.iter().cloned());
        warn!(
            lsn,
            reason,
            ?tables,
            "mirrored transaction dead-lettered; tables marked divergent"
        );
        let committed = txn.map_or(0, |t| t.committed_at_us);
        let mut attempt = 0;
        loop {
            match self.store_position(&[lsn], committed, position).await {
                Ok(()) => return Ok(()),
                Err(e) if is_transient(&e) => {
                    attempt += 1;
                    self.wait_after(attempt, &e).await;
                }
                Err(e) => return Err(ApplierError::Secondary(e.to_string())),
            }
        }
    }

    async fn load_position_retrying(
        &mut self,
        stop: &CancellationToken,
    ) -> Result<(Lsn, HashSet<Lsn>), ApplierError> {
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

    async fn wait_after(&mut self, attempt: u32, e: &mysql_async::Error) {
        self.stats.retried.fetch_add(1, Ordering::Relaxed);
        self.drop_conn();
        let wait = backoff(attempt);
        warn!(attempt, error = %e, ?wait, worker = self.index, "secondary unavailable; retrying in order");
        tokio::time::sleep(wait).await;
    }

    async fn conn(&mut self) -> Result<&mut Conn, mysql_async::Error> {
        if self.conn.is_none() {
            let b = &self.cfg.secondary;
            let mut conn = Conn::new(crate::backend::client_opts(b)).await?;
            let version: Option<String> = conn.query_first("SELECT VERSION()").await?;
            self.compound = version.is_some_and(|v| v.contains("MariaDB"));
            self.conn = Some(conn);
            self.current_db = b.database.clone();
            self.session.clear();
            self.last_session = None;
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
    crate::sql::qualified(b.database.as_deref(), POSITION_TABLE)
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

/// `db`.`_tandem_applied` on `b`: intents applied above the stored
/// position (parallel apply commits out of journal order).
fn applied_table(b: &BackendConfig) -> String {
    crate::sql::qualified(b.database.as_deref(), APPLIED_TABLE)
}

fn create_applied_sql(b: &BackendConfig) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {} (lsn BIGINT UNSIGNED PRIMARY KEY) ENGINE=InnoDB",
        applied_table(b)
    )
}

/// Moves row `id` (one per apply connection) of the position table up to
/// `lsn` (never down).
fn advance_position_sql(b: &BackendConfig, id: usize, lsn: Lsn, committed_at_us: i64) -> String {
    format!(
        "INSERT INTO {} (id, lsn, committed_at_us) VALUES ({id}, {lsn}, {committed_at_us}) \
         ON DUPLICATE KEY UPDATE lsn = GREATEST(lsn, VALUES(lsn)), committed_at_us = VALUES(committed_at_us)",
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
    conn.query_drop(create_applied_sql(b)).await?;
    conn.query_drop(format!("DELETE FROM {} WHERE id <> 1", position_table(b)))
        .await?;
    conn.query_drop(format!("DELETE FROM {}", applied_table(b)))
        .await?;
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
