//! Applies journaled transactions to a MySQL/MariaDB secondary, in LSN
//! order, exactly once.
//!
//! Exactly once: every transaction is applied inside one secondary
//! transaction that also stores its LSN in `apply_position` (in Tandem's
//! bookkeeping database on the secondary, keyed by the secondary's
//! database; see `bookkeeping`). After any crash the applier resumes after the
//! stored LSN, so nothing is lost or applied twice. DDL commits implicitly
//! and cannot share a transaction with the position update; a DDL that is
//! replayed right after a restart and fails with "already exists" / "does not
//! exist" is therefore taken as already applied.
//!
//! Failures: connection loss, deadlocks and lock-wait timeouts are retried
//! with backoff, in order. Any other error is permanent for that transaction:
//! it is written to the dead-letter file with its reason, its tables are
//! marked divergent, and the applier moves on (or halts, per policy).

mod coordinator;
mod effects;
mod errors;
mod position;
mod predecessors;
mod worker;
use coordinator::*;
use errors::*;
use position::*;
pub use position::{check_position_writable, seed_position};
use worker::*;

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
use tracing::{error, info, warn};

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
    /// Counts divergent marks (capture's and the applier's): a verify
    /// clears only the marks made before its pass began.
    pub mark_seq: AtomicU64,
    /// Per table marked: the `mark_seq` of its latest mark.
    pub marked_at: Mutex<std::collections::HashMap<String, u64>>,
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
    /// Per table (`table_key`): the LSN of the last transaction handed to
    /// a worker whose effect on the table may depend on rows other than
    /// the ones it writes (see `writeset::spans`). Backfill compares a
    /// table again after its copy when such a write was applied meanwhile.
    pub spanning_writes: Mutex<std::collections::HashMap<String, u64>>,
    /// `spanning_writes` covers every transaction above this LSN (the
    /// position the applier started from).
    pub spanning_since: AtomicU64,
}

impl ApplierStats {
    /// Notes a new divergent mark of `tables` (a later mark of a table
    /// already marked counts too: it happened after a pass that began
    /// before it).
    pub fn note_marked<'t>(&self, tables: impl IntoIterator<Item = &'t String>) {
        let seq = self.mark_seq.fetch_add(1, Ordering::Relaxed) + 1;
        let mut m = self.marked_at.lock().unwrap_or_else(|p| p.into_inner());
        for t in tables {
            m.insert(t.clone(), seq);
        }
    }

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
        "the secondary's stored position says LSN {stored} was applied, but the journal ends at \
         {journal_end}: this journal is not the one that secondary was fed from (replaced or \
         deleted), or its database was dropped and created again. Nothing is applied. If the \
         secondary was re-copied from the primary, run on it: DELETE FROM {book}.apply_position \
         WHERE db = {db}; DELETE FROM {book}.applied_lsn WHERE db = {db}; and restart"
    )]
    Mismatch {
        stored: Lsn,
        journal_end: Lsn,
        book: String,
        db: String,
    },
    #[error("dead-letter file: {0}")]
    DeadLetter(std::io::Error),
}

pub struct Applier {
    cfg: Arc<ApplierConfig>,
    journal: JournalHandle,
    stats: Arc<ApplierStats>,
}

/// How often the journal is asked to delete applied segments.
const TRUNCATE_EVERY: Duration = Duration::from_millis(100);

/// Rows of `applied_lsn` are deleted once the stored
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
    /// `applied_lsn`, and the stored position becomes `lwm` (below which
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
    /// Delete `applied_lsn` rows at or below this (all below the stored
    /// position).
    cleanup: Option<Lsn>,
    /// An effect (`mirror::effect`, always alone): the error its statement
    /// ended in on the primary, which the secondary must answer too.
    effect: Option<Option<u16>>,
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
        first.await_earlier_appliers(&stop).await?;
        let (mut stored, mut applied) = first.load_position_retrying(&stop).await?;
        let journal_end = *visible.borrow();
        let fresh = super::journal::first_lsn_in(&self.cfg.journal_dir).is_ok_and(|l| l == 1);
        if stored > journal_end && fresh {
            // A journal that starts at LSN 1 is new (started over, its
            // directory emptied): the stored position counts another
            // journal's records, and every record of this one is still to
            // apply. (Its database was likely dropped and created again,
            // which no longer takes Tandem's rows with it.)
            warn!(
                stored,
                journal_end,
                "the secondary's stored position belongs to an earlier journal; this journal is new, so it is applied from its start"
            );
            first
                .forget_position()
                .await
                .map_err(|e| ApplierError::Secondary(e.to_string()))?;
            (stored, applied) = (0, HashSet::new());
        }
        if stored > journal_end {
            return Err(ApplierError::Mismatch {
                stored,
                journal_end,
                book: crate::sql::quote(&self.cfg.secondary.bookkeeping),
                db: crate::mirror::bookkeeping::owner(&self.cfg.secondary),
            });
        }
        self.stats.applied_lsn.store(stored, Ordering::Relaxed);
        self.stats.spanning_since.store(stored, Ordering::Relaxed);
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
        let start_end = *visible.borrow();
        let mut c = Coordinator {
            start_end,
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
            ddl_tables: HashMap::new(),
            table_ddl: HashMap::new(),
            effects: HashMap::new(),
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
