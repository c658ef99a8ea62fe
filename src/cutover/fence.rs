//! The cutover's state, owned by the server (`Shared::cutover`): the fence
//! every transaction and autocommit write passes, the phase a cutover is
//! in, and the history of reports for `/status`.

use serde::Serialize;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, Default)]
struct FenceState {
    closed: bool,
    /// Sessions holding a ticket: in a transaction, or running a write.
    active: usize,
}

/// The gate every transaction and autocommit write passes. Closed by a
/// cutover; a session holding a ticket keeps it until its transaction ends.
pub struct Fence {
    tx: watch::Sender<FenceState>,
    /// When each statement that found the fence closed arrived (its wait
    /// ends when the fence opens).
    arrivals: Mutex<Vec<Instant>>,
}

impl Default for Fence {
    fn default() -> Self {
        Self {
            tx: watch::Sender::new(FenceState::default()),
            arrivals: Mutex::new(Vec::new()),
        }
    }
}

/// A session's pass through the fence; released on drop.
pub struct Ticket<'a>(&'a Fence);

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        self.0
            .tx
            .send_modify(|s| s.active = s.active.saturating_sub(1));
    }
}

impl Fence {
    /// Takes a ticket, waiting while the fence is closed. Also returns how
    /// long it waited (None: it did not).
    pub async fn enter(&self) -> (Ticket<'_>, Option<Duration>) {
        let mut since: Option<Instant> = None;
        loop {
            let mut entered = false;
            self.tx.send_if_modified(|s| {
                if s.closed {
                    return false;
                }
                s.active += 1;
                entered = true;
                // Only the cutover waits on `active`; it wakes on the
                // decrements that matter (see `leave`).
                false
            });
            if entered {
                return (Ticket(self), since.map(|t| t.elapsed()));
            }
            if since.is_none() {
                let now = Instant::now();
                since = Some(now);
                self.arrivals
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(now);
            }
            let mut rx = self.tx.subscribe();
            let _ = rx.wait_for(|s| !s.closed).await;
        }
    }

    /// Closes the fence until the returned guard is opened or dropped (a
    /// panic or a dropped future cannot leave writes waiting).
    /// Forgets the arrival times of an earlier closing.
    pub(super) fn clear_arrivals(&self) {
        self.arrivals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    pub(super) fn close(&self) -> Closed<'_> {
        self.tx.send_modify(|s| s.closed = true);
        Closed(self, false)
    }

    /// Opens the fence; returns how long each statement held at it waited.
    fn open(&self) -> Vec<Duration> {
        let opened = Instant::now();
        self.tx.send_modify(|s| s.closed = false);
        std::mem::take(&mut *self.arrivals.lock().unwrap_or_else(|p| p.into_inner()))
            .into_iter()
            .map(|a| opened.saturating_duration_since(a))
            .collect()
    }

    pub fn is_closed(&self) -> bool {
        self.tx.borrow().closed
    }

    /// Sessions in a transaction or a write right now.
    pub fn active(&self) -> usize {
        self.tx.borrow().active
    }

    pub(super) async fn idle(&self) {
        let mut rx = self.tx.subscribe();
        let _ = rx.wait_for(|s| s.active == 0).await;
    }
}

/// The fence, closed; opens on drop.
pub(super) struct Closed<'a>(&'a Fence, bool);

impl Closed<'_> {
    pub(super) fn open(mut self) -> Vec<Duration> {
        self.1 = true;
        self.0.open()
    }
}

impl Drop for Closed<'_> {
    fn drop(&mut self) {
        if !self.1 {
            self.0.open();
        }
    }
}

/// One cutover attempt, for /status and the log.
#[derive(Debug, Clone, Serialize)]
pub struct CutoverReport {
    pub from: String,
    pub to: String,
    pub trigger: String,
    pub started_at_unix: u64,
    pub ok: bool,
    pub error: Option<String>,
    /// Phase name → milliseconds, in order.
    pub phases: Vec<(String, f64)>,
    /// Fence closed → released (what clients could notice), ms.
    pub fenced_ms: f64,
    pub total_ms: f64,
    /// Statements that waited at the fence, and how long.
    pub fenced_statements: usize,
    pub fence_wait_p50_ms: Option<f64>,
    pub fence_wait_p99_ms: Option<f64>,
    pub fence_wait_max_ms: Option<f64>,
    /// Scheduled events moved with the primary (enabled on the new one,
    /// `DISABLE ON SLAVE` on the old one), and events enabled on the old
    /// primary only, left running there.
    pub events_moved: Vec<String>,
    pub events_left: Vec<String>,
    /// Why events could not be swapped (the cutover itself stands).
    pub events_error: Option<String>,
    /// Sessions ended after the grace period (`end_holders_after`): who
    /// they were and what they held.
    pub ended_sessions: Vec<String>,
}

/// How one cutover treats sessions that hold the fence (an open
/// transaction, LOCK TABLES, a named lock).
#[derive(Debug, Clone, Copy, Default)]
pub struct CutoverOptions {
    /// How long the whole cutover may take instead of
    /// `migration.cutover_timeout`.
    pub wait: Option<std::time::Duration>,
    /// After this, sessions still holding are ended: their backend
    /// connection is killed (the server rolls their transaction back and
    /// frees their locks) and their client connection closed, as a KILL
    /// on the server would. None: never; the cutover aborts naming them.
    pub end_holders_after: Option<std::time::Duration>,
}

/// Cutover state owned by the server.
#[derive(Default)]
pub struct Cutover {
    pub fence: Fence,
    /// The phase a cutover is in (None: idle).
    phase: Mutex<Option<&'static str>>,
    history: Mutex<VecDeque<CutoverReport>>,
}

const HISTORY: usize = 20;

impl Cutover {
    pub fn status_json(&self) -> serde_json::Value {
        let phase = *self.phase.lock().unwrap_or_else(|p| p.into_inner());
        let history: Vec<CutoverReport> = self
            .history
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect();
        serde_json::json!({
            "state": phase.unwrap_or("idle"),
            "fence_closed": self.fence.is_closed(),
            "open_transactions": self.fence.active(),
            "history": history,
        })
    }

    /// Keeps `report` in the history (the last `HISTORY`).
    pub(super) fn record(&self, report: CutoverReport) {
        let mut h = self.history.lock().unwrap_or_else(|p| p.into_inner());
        if h.len() == HISTORY {
            h.pop_front();
        }
        h.push_back(report);
    }

    pub(super) fn set_phase(&self, p: Option<&'static str>) {
        *self.phase.lock().unwrap_or_else(|p| p.into_inner()) = p;
    }
}

pub(super) fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

pub(super) fn quantile(sorted: &[Duration], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    Some(ms(sorted[i]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn fence_holds_new_tickets_and_waits_for_open_ones() {
        let f = Arc::new(Fence::default());
        let (t1, waited) = f.enter().await;
        assert!(waited.is_none());
        let closed = f.close();
        let f2 = f.clone();
        let waiter = tokio::spawn(async move {
            let (_t, waited) = f2.enter().await;
            waited.is_some()
        });
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(!waiter.is_finished());
        assert_eq!(f.active(), 1);
        let idle = tokio::time::timeout(Duration::from_millis(30), f.idle()).await;
        assert!(idle.is_err(), "an open ticket keeps the fence busy");
        drop(t1);
        tokio::time::timeout(Duration::from_secs(1), f.idle())
            .await
            .unwrap();
        let waits = closed.open();
        assert_eq!(waits.len(), 1);
        assert!(waits[0] >= Duration::from_millis(30));
        assert!(waiter.await.unwrap());
        assert_eq!(f.active(), 0);
        // A cutover that is dropped or panics cannot leave the fence closed.
        drop(f.close());
        assert!(!f.is_closed());
    }
}
