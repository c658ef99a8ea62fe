//! Mirroring committed writes to the secondary (dual-write milestone).
//!
//! - `journal`: segments of CRC-checked records; `JournalHandle` (below) is
//!   its group-commit writer thread.
//! - `record`: what a record holds (intents, outcomes, pinned values).
//! - `applier`: replays committed intents on the secondary, exactly once.
//! - `runtime`: the running mirror `serve` owns: start-up recovery of
//!   in-doubt intents, commit markers on the primary, the applier task.
//! - `rowkey`: how a write names exactly the rows it changed (keyed
//!   writes; see `router::keyed`).
//! - `bookkeeping`: Tandem's own database on each server (markers,
//!   positions, checkpoints), rows keyed by the database they track.
//! - `ddl`: how an in-doubt DDL is settled: the named tables' definitions
//!   before it ran (in the intent's token) against the primary's now.
//! - `events`: scheduled events, mirrored disabled and swapped at cutover.
//! - `guard`: the per-database lock that keeps a second Tandem from
//!   mirroring the same databases.
//! - `sync`: how verify and backfill wait for writes in flight (in-process
//!   or through the admin API).
//!
//! Capture itself happens in the session (`frontend::session::capture`).

pub mod applier;
pub mod bookkeeping;
pub mod ddl;
pub mod effect;
pub mod events;
pub mod guard;
pub mod journal;
pub mod record;
pub mod rowkey;
pub mod runtime;
pub mod sync;
pub mod writeset;

use journal::{Journal, JournalError, Lsn};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

/// Microseconds since the Unix epoch (commit times, lag).
pub fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

enum Request {
    /// A record that needs an fsync before its answer.
    Append {
        record: Vec<u8>,
        done: oneshot::Sender<Result<Lsn, String>>,
    },
    /// An fsync now; answered with the durable LSN.
    Sync(oneshot::Sender<Result<Lsn, String>>),
    TruncateBefore(Lsn),
}

/// Cloneable handle to the journal's writer thread.
#[derive(Clone)]
pub struct JournalHandle {
    tx: mpsc::Sender<Request>,
    durable: watch::Receiver<Lsn>,
    written: watch::Receiver<Lsn>,
    bytes: Arc<AtomicU64>,
    /// Deferred appends (`append_deferred`), taken by the writer with its
    /// next batch.
    deferred: Arc<Mutex<Vec<Vec<u8>>>>,
    hold: Arc<Hold>,
    /// Successful fsyncs the writer has done (group commit: appends per
    /// fsync).
    fsyncs: Arc<AtomicU64>,
    /// LSNs whose append was answered with an error (see `Writer::void`).
    void: Arc<Mutex<Vec<Lsn>>>,
}

/// The writer's group-commit hold, as appenders see it. While holding, the
/// writer sleeps instead of waiting on its queue, so an append queued then
/// wakes nobody (no futex wake for the appender, no thread switch for the
/// writer); only a request that finds nothing more expected wakes it.
struct Hold {
    expected: Arc<AtomicUsize>,
    holding: AtomicBool,
    writer: OnceLock<std::thread::Thread>,
}

impl Hold {
    /// After a request is queued: ends the hold if no append is on its
    /// way.
    fn queued(&self) {
        if self.expected.load(Ordering::SeqCst) == 0 && self.holding.load(Ordering::SeqCst) {
            if let Some(t) = self.writer.get() {
                t.unpark();
            }
        }
    }
}

/// Requests taken into one batch (one fsync) at most.
const MAX_BATCH: usize = 4096;
/// Deferred appends written since the last fsync; at this many the writer
/// syncs without being asked.
const MAX_UNSYNCED: usize = 1024;

/// An answer owed once the records written so far are durable: the
/// record's LSN, or (None) the durable LSN for a `Sync`.
type Waiter = (
    Result<Option<Lsn>, String>,
    oneshot::Sender<Result<Lsn, String>>,
);

/// Group commit: how long the writer may hold an fsync for appends that
/// are on their way (`migration.journal_commit_wait`).
#[derive(Clone, Default)]
pub struct CommitWait {
    /// Longest hold (zero: never).
    pub max: Duration,
    /// How many appends are on their way: the writer holds the fsync only
    /// while this is above zero, and stops holding when it reaches zero.
    /// Kept by the caller (the mirror: sessions in a mirrored transaction
    /// whose intent is not journaled yet).
    pub expected: Arc<AtomicUsize>,
}

/// The writer thread's state between batches.
struct Writer {
    journal: Journal,
    /// Deferred records written since the last fsync.
    unsynced: usize,
    deferred: Arc<Mutex<Vec<Vec<u8>>>>,
    watches: Watches,
    fsyncs: Arc<AtomicU64>,
    /// LSNs of appends answered with an error although the record was
    /// queued (its write or the fsync failed): the bytes stay queued and
    /// reach the file with a later batch, so readers must take them as
    /// void, never as intents waiting for an outcome. (After a restart
    /// the commit marker settles them like any intent without outcome.)
    void: Arc<Mutex<Vec<Lsn>>>,
}

impl JournalHandle {
    /// Starts the writer thread. `queue` bounds how many appends can wait
    /// (back-pressure: appenders wait when it is full; nothing is dropped).
    pub fn spawn(journal: Journal, queue: usize) -> (Self, JoinHandle<()>) {
        Self::spawn_with(journal, queue, CommitWait::default())
    }

    /// [`spawn`](Self::spawn) with group commit: before an fsync for
    /// appends, the writer waits up to `wait.max` for more while
    /// `wait.expected` says some are on their way, so one fsync covers
    /// them all.
    pub fn spawn_with(journal: Journal, queue: usize, wait: CommitWait) -> (Self, JoinHandle<()>) {
        let (tx, mut rx) = mpsc::channel::<Request>(queue.max(1));
        let (durable_tx, durable) = watch::channel(journal.durable_lsn());
        let (written_tx, written) = watch::channel(journal.durable_lsn());
        let bytes = Arc::new(AtomicU64::new(journal.size_bytes()));
        let size = bytes.clone();
        let deferred = Arc::new(Mutex::new(Vec::new()));
        let fsyncs = Arc::new(AtomicU64::new(0));
        let void = Arc::new(Mutex::new(Vec::new()));
        let mut w = Writer {
            journal,
            unsynced: 0,
            deferred: deferred.clone(),
            fsyncs: fsyncs.clone(),
            void: void.clone(),
            watches: Watches {
                durable: durable_tx,
                written: written_tx,
            },
        };
        let hold = Arc::new(Hold {
            expected: wait.expected.clone(),
            holding: AtomicBool::new(false),
            writer: OnceLock::new(),
        });
        let held = hold.clone();
        let thread = std::thread::Builder::new()
            .name("tandem-journal".into())
            .spawn(move || {
                let _ = held.writer.set(std::thread::current());
                let mut batch = Vec::with_capacity(64);
                while let Some(first) = rx.blocking_recv() {
                    batch.push(first);
                    drain(&mut rx, &mut batch);
                    if !wait.max.is_zero()
                        && batch.iter().any(|r| matches!(r, Request::Append { .. }))
                    {
                        hold_fsync(&held, wait.max, &mut rx, &mut batch);
                    }
                    w.write_batch(&mut batch);
                    size.store(w.journal.size_bytes(), Ordering::Relaxed);
                }
                // Every handle is gone: make the rest durable and answer.
                w.take_deferred();
                let synced = w.journal.sync();
                w.answer(&synced, Vec::new());
            })
            .expect("spawning the journal thread");
        (
            Self {
                tx,
                durable,
                written,
                bytes,
                deferred,
                hold,
                fsyncs,
                void,
            },
            thread,
        )
    }

    /// Appends a record and waits until it is on disk; returns its LSN.
    pub async fn append(&self, record: Vec<u8>) -> Result<Lsn, JournalError> {
        self.request(|done| Request::Append { record, done }).await
    }

    /// Queues a record that needs no fsync of its own and returns at once:
    /// the writer takes it with its next batch (another append, a `sync`,
    /// a truncation) and the fsync after that makes it durable. It wakes
    /// nobody, so it costs no thread switch. For records whose loss in a
    /// crash is recovered otherwise (outcomes: the commit marker settles
    /// them); a failed write is logged by the writer.
    pub fn append_deferred(&self, record: Vec<u8>) {
        self.deferred
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(record);
    }

    /// Makes everything appended so far durable (deferred appends too);
    /// returns the durable LSN.
    pub async fn sync(&self) -> Result<Lsn, JournalError> {
        self.request(Request::Sync).await
    }

    /// Sends a request to the writer and waits for its answer (ending the
    /// writer's hold if nothing more is expected: `Hold::queued`).
    async fn request(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<Lsn, String>>) -> Request,
    ) -> Result<Lsn, JournalError> {
        let (done, wait) = oneshot::channel();
        self.tx.send(make(done)).await.map_err(|_| closed())?;
        self.hold.queued();
        wait.await
            .map_err(|_| closed())?
            .map_err(|e| JournalError::Io(std::io::Error::other(e)))
    }

    /// Lets the writer delete segments below `lsn` (applied everywhere).
    pub async fn truncate_before(&self, lsn: Lsn) {
        let _ = self.tx.send(Request::TruncateBefore(lsn)).await;
    }

    /// LSNs appended but answered with an error since the last call:
    /// the applier takes them as aborted when it reads them.
    pub fn take_void(&self) -> Vec<Lsn> {
        std::mem::take(&mut *self.void.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Successful fsyncs the writer has done since it started.
    pub fn fsyncs(&self) -> u64 {
        self.fsyncs.load(Ordering::Relaxed)
    }

    /// Bytes the journal's segments hold on disk.
    pub fn size_bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Watch of the highest durable LSN.
    pub fn durable(&self) -> watch::Receiver<Lsn> {
        self.durable.clone()
    }

    /// Watch of the highest LSN readers can see: every record up to it is
    /// durable or a deferred append (so every intent up to it is durable).
    pub fn written(&self) -> watch::Receiver<Lsn> {
        self.written.clone()
    }

    /// The highest durable LSN now.
    pub fn durable_lsn(&self) -> Lsn {
        *self.durable.borrow()
    }
}

struct Watches {
    durable: watch::Sender<Lsn>,
    written: watch::Sender<Lsn>,
}

fn closed() -> JournalError {
    JournalError::Io(std::io::Error::new(
        std::io::ErrorKind::BrokenPipe,
        "journal writer stopped",
    ))
}

/// Group commit: holds the batch's fsync up to `max` while appends are
/// expected, taking what arrives meanwhile. The writer sleeps rather than
/// waiting on the queue, so appends queued during the hold wake nobody;
/// a request after which nothing more is expected ends it (`Hold::queued`).
fn hold_fsync(
    hold: &Hold,
    max: Duration,
    rx: &mut mpsc::Receiver<Request>,
    batch: &mut Vec<Request>,
) {
    let deadline = std::time::Instant::now() + max;
    hold.holding.store(true, Ordering::SeqCst);
    loop {
        drain(rx, batch);
        if hold.expected.load(Ordering::SeqCst) == 0 || batch.len() >= MAX_BATCH {
            break;
        }
        let now = std::time::Instant::now();
        if now >= deadline {
            break;
        }
        std::thread::park_timeout(deadline - now);
    }
    hold.holding.store(false, Ordering::SeqCst);
}

/// Takes what is queued now, up to a batch.
fn drain(rx: &mut mpsc::Receiver<Request>, batch: &mut Vec<Request>) {
    while batch.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(r) => batch.push(r),
            Err(_) => break,
        }
    }
}

impl Writer {
    /// Moves deferred records into the journal (after the records of
    /// earlier batches, before this batch's).
    fn take_deferred(&mut self) {
        let records = std::mem::take(&mut *self.deferred.lock().unwrap_or_else(|p| p.into_inner()));
        for record in records {
            match self.journal.append(&record) {
                Ok(_) => self.unsynced += 1,
                Err(e) => tracing::error!(error = %e, "journal: deferred record not written"),
            }
        }
    }

    fn write_batch(&mut self, batch: &mut Vec<Request>) {
        self.take_deferred();
        let mut need_sync = false;
        let mut truncate = None;
        // Answers owed after this batch's fsync.
        let mut waiting: Vec<Waiter> = Vec::new();
        for req in batch.drain(..) {
            match req {
                Request::Append { record, done } => {
                    need_sync = true;
                    let r = self
                        .journal
                        .append(&record)
                        .map(Some)
                        .map_err(|e| e.to_string());
                    waiting.push((r, done));
                }
                Request::Sync(done) => {
                    need_sync = true;
                    waiting.push((Ok(None), done));
                }
                Request::TruncateBefore(lsn) => truncate = truncate.max(Some(lsn)),
            }
        }
        if need_sync || self.unsynced >= MAX_UNSYNCED {
            // Acknowledge only after the fsync; if it fails, every record
            // waiting for it is reported failed (the caller must not treat
            // it as durable).
            let synced = self.journal.sync();
            if synced.is_ok() {
                self.fsyncs.fetch_add(1, Ordering::Relaxed);
            }
            self.answer(&synced, waiting);
        } else {
            // Nothing waits for an answer (no append, no sync).
            match self.journal.write() {
                Ok(lsn) => {
                    let _ = self.watches.written.send(lsn);
                }
                Err(e) => tracing::error!(error = %e, "journal write failed"),
            }
        }
        if let Some(lsn) = truncate {
            if let Err(e) = self.journal.truncate_before(lsn) {
                tracing::error!(error = %e, "journal truncation failed");
            }
        }
    }

    /// Answers every waiter after a sync.
    fn answer(&mut self, synced: &Result<Lsn, JournalError>, waiting: Vec<Waiter>) {
        match synced {
            Ok(lsn) => {
                self.unsynced = 0;
                let _ = self.watches.durable.send(*lsn);
                let _ = self.watches.written.send(*lsn);
            }
            Err(e) => {
                tracing::error!(error = %e, "journal write or fsync failed");
                let failed = waiting.iter().filter_map(|(r, _)| match r {
                    Ok(Some(lsn)) => Some(*lsn),
                    _ => None,
                });
                self.void
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend(failed);
            }
        }
        for (r, done) in waiting {
            let r = match (synced, r) {
                (Ok(lsn), Ok(None)) => Ok(*lsn),
                (Ok(_), Ok(Some(lsn))) => Ok(lsn),
                (Ok(_), Err(e)) => Err(e),
                (Err(e), _) => Err(e.to_string()),
            };
            let _ = done.send(r);
        }
    }
}
