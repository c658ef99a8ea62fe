//! Mirroring committed writes to the secondary (dual-write milestone).
//!
//! - `journal`: segments of CRC-checked records; `JournalHandle` (below) is
//!   its group-commit writer thread.
//! - `record`: what a record holds (intents, outcomes, pinned values).
//! - `applier`: replays committed intents on the secondary, exactly once.
//! - `runtime`: the running mirror `serve` owns: start-up recovery of
//!   in-doubt intents, commit markers on the primary, the applier task.
//! - `guard`: the per-database lock that keeps a second Tandem from
//!   mirroring the same databases.
//! - `sync`: how verify and backfill wait for writes in flight (in-process
//!   or through the admin API).
//!
//! Capture itself happens in the session (`frontend::session::capture`).

pub mod applier;
pub mod guard;
pub mod journal;
pub mod record;
pub mod runtime;
pub mod sync;
pub mod writeset;

use journal::{Journal, JournalError, Lsn};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use tokio::sync::{mpsc, oneshot, watch};

/// Microseconds since the Unix epoch (commit times, lag).
pub fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

enum Request {
    /// `sync`: this record needs an fsync of its own before its answer;
    /// otherwise it is written at once and answered with a later fsync.
    Append {
        record: Vec<u8>,
        sync: bool,
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
}

/// Requests taken into one batch (one fsync) at most.
const MAX_BATCH: usize = 4096;
/// Lazy appends (`append_lazy`) waiting for an fsync; at this many the
/// writer syncs without being asked.
const MAX_UNSYNCED: usize = 1024;

/// An answer owed once the records written so far are durable: the
/// record's LSN, or (None) the durable LSN for a `Sync`.
type Waiter = (
    Result<Option<Lsn>, String>,
    oneshot::Sender<Result<Lsn, String>>,
);

impl JournalHandle {
    /// Starts the writer thread. `queue` bounds how many appends can wait
    /// (back-pressure: appenders wait when it is full; nothing is dropped).
    pub fn spawn(mut journal: Journal, queue: usize) -> (Self, JoinHandle<()>) {
        let (tx, mut rx) = mpsc::channel::<Request>(queue.max(1));
        let (durable_tx, durable) = watch::channel(journal.durable_lsn());
        let (written_tx, written) = watch::channel(journal.durable_lsn());
        let bytes = Arc::new(AtomicU64::new(journal.size_bytes()));
        let size = bytes.clone();
        let thread = std::thread::Builder::new()
            .name("tandem-journal".into())
            .spawn(move || {
                let watches = Watches {
                    durable: durable_tx,
                    written: written_tx,
                };
                let mut batch = Vec::with_capacity(64);
                let mut unsynced: Vec<Waiter> = Vec::new();
                while let Some(first) = rx.blocking_recv() {
                    batch.push(first);
                    while batch.len() < MAX_BATCH {
                        match rx.try_recv() {
                            Ok(r) => batch.push(r),
                            Err(_) => break,
                        }
                    }
                    write_batch(&mut journal, &mut batch, &mut unsynced, &watches);
                    size.store(journal.size_bytes(), Ordering::Relaxed);
                }
                // Every handle is gone: make the rest durable and answer.
                let synced = journal.sync();
                answer(&synced, &mut unsynced, &watches);
            })
            .expect("spawning the journal thread");
        (
            Self {
                tx,
                durable,
                written,
                bytes,
            },
            thread,
        )
    }

    /// Appends a record and waits until it is on disk; returns its LSN.
    pub async fn append(&self, record: Vec<u8>) -> Result<Lsn, JournalError> {
        self.request_append(record, true).await
    }

    /// Appends a record that does not need an fsync of its own: it is
    /// written (readers see it) at once and made durable by the next fsync
    /// another append or `sync` asks for. Returns once it is durable.
    /// For records whose loss in a crash is recovered otherwise (outcomes:
    /// the commit marker settles them).
    pub async fn append_lazy(&self, record: Vec<u8>) -> Result<Lsn, JournalError> {
        self.request_append(record, false).await
    }

    async fn request_append(&self, record: Vec<u8>, sync: bool) -> Result<Lsn, JournalError> {
        self.request(|done| Request::Append { record, sync, done })
            .await
    }

    /// Makes everything written so far durable; returns the durable LSN.
    pub async fn sync(&self) -> Result<Lsn, JournalError> {
        self.request(Request::Sync).await
    }

    /// Sends a request to the writer and waits for its answer.
    async fn request(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<Lsn, String>>) -> Request,
    ) -> Result<Lsn, JournalError> {
        let (done, wait) = oneshot::channel();
        self.tx.send(make(done)).await.map_err(|_| closed())?;
        wait.await
            .map_err(|_| closed())?
            .map_err(|e| JournalError::Io(std::io::Error::other(e)))
    }

    /// Lets the writer delete segments below `lsn` (applied everywhere).
    pub async fn truncate_before(&self, lsn: Lsn) {
        let _ = self.tx.send(Request::TruncateBefore(lsn)).await;
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
    /// durable or a lazy append (so every intent up to it is durable).
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

fn write_batch(
    journal: &mut Journal,
    batch: &mut Vec<Request>,
    unsynced: &mut Vec<Waiter>,
    watches: &Watches,
) {
    let mut need_sync = false;
    let mut truncate = None;
    for req in batch.drain(..) {
        match req {
            Request::Append { record, sync, done } => {
                need_sync |= sync;
                let r = journal.append(&record).map(Some).map_err(|e| e.to_string());
                unsynced.push((r, done));
            }
            Request::Sync(done) => {
                need_sync = true;
                unsynced.push((Ok(None), done));
            }
            Request::TruncateBefore(lsn) => truncate = truncate.max(Some(lsn)),
        }
    }
    if need_sync || unsynced.len() >= MAX_UNSYNCED {
        // Acknowledge only after the fsync; if it fails, every record
        // waiting for it is reported failed (the caller must not treat it
        // as durable).
        let synced = journal.sync();
        answer(&synced, unsynced, watches);
    } else {
        match journal.write() {
            Ok(lsn) => {
                let _ = watches.written.send(lsn);
            }
            Err(e) => answer(&Err(e), unsynced, watches),
        }
    }
    if let Some(lsn) = truncate {
        if let Err(e) = journal.truncate_before(lsn) {
            tracing::error!(error = %e, "journal truncation failed");
        }
    }
}

/// Answers every waiter after a sync (or a failed write).
fn answer(synced: &Result<Lsn, JournalError>, waiting: &mut Vec<Waiter>, watches: &Watches) {
    match synced {
        Ok(lsn) => {
            let _ = watches.durable.send(*lsn);
            let _ = watches.written.send(*lsn);
        }
        Err(e) => tracing::error!(error = %e, "journal write or fsync failed"),
    }
    for (r, done) in waiting.drain(..) {
        let r = match (synced, r) {
            (Ok(lsn), Ok(None)) => Ok(*lsn),
            (Ok(_), Ok(Some(lsn))) => Ok(lsn),
            (Ok(_), Err(e)) => Err(e),
            (Err(e), _) => Err(e.to_string()),
        };
        let _ = done.send(r);
    }
}
