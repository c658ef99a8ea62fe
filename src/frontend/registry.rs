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
    /// What the session holds that a cutover waits for, for the message
    /// that names it when the cutover gives up.
    pub holding: Arc<Mutex<Holding>>,
}

/// Who a session is and what it holds of the cutover fence.
#[derive(Debug, Default)]
pub struct Holding {
    /// `user@host:port`, once logged in.
    pub who: String,
    /// Since when it holds a fence ticket, and why (in a transaction,
    /// LOCK TABLES, a named lock).
    pub since: Option<(std::time::Instant, &'static str)>,
}

/// A session a cutover waited for.
#[derive(Debug)]
pub struct Holder {
    pub id: u32,
    pub who: String,
    pub held_for: std::time::Duration,
    pub why: &'static str,
}

/// As a cutover names it: `session 7 (app@10.0.0.5:51234) is in a
/// transaction for 12.0 s`.
impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "session {} ({}) {} for {:.1} s",
            self.id,
            self.who,
            self.why,
            self.held_for.as_secs_f64()
        )
    }
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

    /// The sessions holding a fence ticket, longest first.
    pub fn holders(&self) -> Vec<Holder> {
        let mut out: Vec<Holder> = self
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter_map(|(id, e)| {
                let h = e.holding.lock().unwrap_or_else(|p| p.into_inner());
                let (since, why) = h.since?;
                Some(Holder {
                    id: *id,
                    who: h.who.clone(),
                    held_for: since.elapsed(),
                    why,
                })
            })
            .collect();
        out.sort_by_key(|h| std::cmp::Reverse(h.held_for));
        out
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
