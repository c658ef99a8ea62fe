//! Live client sessions by Tandem connection id: how `KILL <id>` from one
//! client finds another client's backend thread, and how it is told to close.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

/// What other sessions may see of a session.
#[derive(Debug, Clone)]
pub struct SessionEntry {
    /// Backend thread currently serving the session (0 before it has one).
    pub backend_thread: Arc<AtomicU32>,
    /// Cancelled to close the session (KILL CONNECTION, shutdown).
    pub cancel: CancellationToken,
    /// Notified by the server's idle tick: a session that has been waiting
    /// for its client since the last tick starts watching its backend for
    /// a close (one notification per tick, stored until the session waits).
    pub idle_tick: Arc<tokio::sync::Notify>,
}

#[derive(Debug, Default)]
pub struct Registry {
    next: AtomicU32,
    sessions: Mutex<HashMap<u32, SessionEntry>>,
}

impl Registry {
    /// Allocates a connection id that no live session uses (never 0) and
    /// registers the entry under it.
    pub fn register(&self, entry: SessionEntry) -> u32 {
        let mut map = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let id = self.next.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
            if id != 0 && !map.contains_key(&id) {
                map.insert(id, entry);
                return id;
            }
        }
    }

    pub fn get(&self, id: u64) -> Option<SessionEntry> {
        let id = u32::try_from(id).ok()?;
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()
    }

    pub fn remove(&self, id: u32) {
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
    }

    pub fn len(&self) -> usize {
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Notifies every session's idle tick.
    pub fn tick(&self) {
        for e in self
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
        {
            e.idle_tick.notify_one();
        }
    }
}
