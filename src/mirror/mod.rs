//! Mirroring committed writes to the secondary (dual-write milestone).
//!
//! - `journal`: segments of CRC-checked records; `JournalHandle` (below) is
//!   its group-commit writer thread.
//! - `record`: what a record holds (intents, outcomes, pinned values).
//! - `applier`: replays committed intents on the secondary, exactly once.
//! - `runtime`: the running mirror `serve` owns: start-up recovery of
//!   in-doubt intents, commit markers on the primary, the applier task.
//! - `sync`: how verify and backfill wait for writes in flight (in-process
//!   or through the admin API).
//!
//! Capture itself happens in the session (`frontend::session::capture`).

pub mod applier;
pub mod journal;
pub mod record;
pub mod runtime;
pub mod sync;

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
    Append(Vec<u8>, oneshot::Sender<Result<Lsn, String>>),
    TruncateBefore(Lsn),
}

/// Cloneable handle to the journal's writer thread.
#[derive(Clone)]
pub struct JournalHandle {
    tx: mpsc::Sender<Request>,
    durable: watch::Receiver<Lsn>,
    bytes: Arc<AtomicU64>,
}

/// Requests taken into one batch (one fsync) at most.
const MAX_BATCH: usize = 4096;

impl JournalHandle {
    /// Starts the writer thread. `queue` bounds how many appends can wait
    /// (back-pressure: appenders wait when it is full; nothing is dropped).
    pub fn spawn(mut journal: Journal, queue: usize) -> (Self, JoinHandle<()>) {
        let (tx, mut rx) = mpsc::channel::<Request>(queue.max(1));
        let (durable_tx, durable) = watch::channel(journal.durable_lsn());
        let bytes = Arc::new(AtomicU64::new(journal.size_bytes()));
        let size = bytes.clone();
        let thread = std::thread::Builder::new()
            .name("tandem-journal".into())
            .spawn(move || {
                let mut batch = Vec::with_capacity(64);
                while let Some(first) = rx.blocking_recv() {
                    batch.push(first);
                    while batch.len() < MAX_BATCH {
                        match rx.try_recv() {
                            Ok(r) => batch.push(r),
                            Err(_) => break,
                        }
                    }
                    write_batch(&mut journal, &mut batch, &durable_tx);
                    size.store(journal.size_bytes(), Ordering::Relaxed);
                }
                let _ = journal.sync();
            })
            .expect("spawning the journal thread");
        (Self { tx, durable, bytes }, thread)
    }

    /// Appends a record and waits until it is on disk; returns its LSN.
    pub async fn append(&self, record: Vec<u8>) -> Result<Lsn, JournalError> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Request::Append(record, done))
            .await
            .map_err(|_| closed())?;
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

    /// Watch of the highest durable LSN (the applier reads up to it).
    pub fn durable(&self) -> watch::Receiver<Lsn> {
        self.durable.clone()
    }

    /// The highest durable LSN now.
    pub fn durable_lsn(&self) -> Lsn {
        *self.durable.borrow()
    }
}

fn closed() -> JournalError {
    JournalError::Io(std::io::Error::new(
        std::io::ErrorKind::BrokenPipe,
        "journal writer stopped",
    ))
}

fn write_batch(journal: &mut Journal, batch: &mut Vec<Request>, durable: &watch::Sender<Lsn>) {
    let mut waiting = Vec::with_capacity(batch.len());
    let mut truncate = None;
    for req in batch.drain(..) {
        match req {
            Request::Append(record, done) => {
                let r = journal.append(&record).map_err(|e| e.to_string());
                waiting.push((r, done));
            }
            Request::TruncateBefore(lsn) => truncate = truncate.max(Some(lsn)),
        }
    }
    // Acknowledge only after the fsync; if it fails, every record of the
    // batch is reported failed (the caller must not treat it as durable).
    let synced = journal.sync();
    match &synced {
        Ok(lsn) => {
            let _ = durable.send(*lsn);
        }
        Err(e) => tracing::error!(error = %e, "journal fsync failed"),
    }
    for (r, done) in waiting {
        let r = match (&synced, r) {
            (Ok(_), r) => r,
            (Err(e), _) => Err(e.to_string()),
        };
        let _ = done.send(r);
    }
    if let Some(lsn) = truncate {
        if let Err(e) = journal.truncate_before(lsn) {
            tracing::error!(error = %e, "journal truncation failed");
        }
    }
}
