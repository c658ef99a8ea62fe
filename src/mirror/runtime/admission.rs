//! Admission of writes to the journal (`Mirror::admit`: its size limit and
//! the free space left on its file system).
//!
//! Free space on the journal's file system (`migration.journal_min_free`):
//! below the minimum the journal counts as full, so `journal_full` applies
//! (`block`: writes wait, then are refused without running; `degrade`:
//! they run unmirrored and their tables are marked) before a filling disk
//! can make an fsync fail under a committed write. Read at most every
//! 200 ms (one `statvfs`), not per write.

use super::{Admit, Mirror};
use std::sync::atomic::Ordering;
use std::time::Duration;

/// How long a free-space reading is used.
const FRESH: Duration = Duration::from_millis(200);

impl Mirror {
    /// The journal file system's free bytes when below `min`, else None.
    pub(super) fn disk_short(&self, min: u64) -> Option<u64> {
        if min == 0 {
            return None;
        }
        let now = self.started.elapsed().as_millis() as u64;
        let at = self.disk_checked_ms.load(Ordering::Relaxed);
        let free = if at != 0 && now.saturating_sub(at) < FRESH.as_millis() as u64 {
            self.disk_free.load(Ordering::Relaxed)
        } else {
            let free = match rustix::fs::statvfs(&self.journal_dir) {
                Ok(s) => s.f_bavail.saturating_mul(s.f_frsize),
                // Unknown: not held against the writes.
                Err(_) => u64::MAX,
            };
            self.disk_free.store(free, Ordering::Relaxed);
            self.disk_checked_ms.store(now.max(1), Ordering::Relaxed);
            free
        };
        (free < min).then_some(free)
    }

    /// Applies the journal size limit before a write is journaled (and
    /// before it runs, where the caller can still refuse it). Under `block`
    /// the caller waits for the applier to free room, up to the timeout;
    /// under `degrade` the write runs unmirrored and its tables are marked
    /// divergent (mirroring of them resumes once there is room; the mark
    /// stays until `tandem verify --repair`). Nothing is dropped silently.
    pub async fn admit(&self, limit: &crate::config::JournalLimit, tables: &[String]) -> Admit {
        let full = || {
            self.journal.size_bytes() >= limit.max_bytes
                || self.disk_short(limit.min_free).is_some()
        };
        if !full() {
            return Admit::Journal;
        }
        match limit.when_full {
            crate::config::JournalFull::Degrade => {
                self.stats
                    .journal_full_degraded
                    .fetch_add(1, Ordering::Relaxed);
                self.mark_divergent(
                    tables,
                    "the mirror journal was full (journal_full: degrade)",
                );
                Admit::Degraded
            }
            crate::config::JournalFull::Block => {
                self.stats
                    .journal_full_waits
                    .fetch_add(1, Ordering::Relaxed);
                let deadline = tokio::time::Instant::now() + limit.timeout;
                while full() {
                    if tokio::time::Instant::now() >= deadline {
                        self.stats
                            .journal_full_refused
                            .fetch_add(1, Ordering::Relaxed);
                        if let Some(free) = self.disk_short(limit.min_free) {
                            return Admit::Refused(format!(
                                "Tandem: the mirror journal's disk has {free} bytes free, less than migration.journal_min_free ({}), and no room came back within {:?}; the write was not run",
                                limit.min_free, limit.timeout
                            ));
                        }
                        return Admit::Refused(format!(
                            "Tandem: the mirror journal is full ({} bytes, limit {}) and the secondary did not catch up within {:?}; the write was not run",
                            self.journal.size_bytes(),
                            limit.max_bytes,
                            limit.timeout
                        ));
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Admit::Journal
            }
        }
    }
}
