//! Cutover: the fenced flip of primary and secondary (see ARCHITECTURE.md,
//! "Cutover"). Every trigger — an edit of `migration.primary` picked up by
//! the reload path, `POST /cutover`, `tandem cutover --to` — ends in [`run`]:
//!
//! 1. preflight: the target is the current secondary, reachable and
//!    writable; the old primary can take the mirror position (the rollback
//!    path); lag is under `cutover_max_lag`; no table is divergent;
//! 2. fence: new transactions and autocommit writes wait in their sessions
//!    (reads keep going to the old primary);
//! 3. open transactions finish (their sessions hold a fence ticket until
//!    COMMIT/ROLLBACK);
//! 4. the journal drains (everything committed is applied on the target);
//! 5. swap: the mirror turns around, the roles are recorded beside the
//!    journal, the new config is published;
//! 6. release: fenced sessions move to the new primary at their next
//!    transaction boundary and go on.
//!
//! Steps 2–5 must fit in `migration.cutover_timeout`; otherwise the fence
//! opens towards the old primary and nothing has changed.

use crate::config::Config;
use crate::frontend::{unix_now, Shared};
use crate::mirror::sync::MirrorSync;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tracing::{info, warn};

/// File beside the journal recording the roles after the last cutover.
pub const ROLES_FILE: &str = "roles.json";

/// Roles as the last cutover left them. A start whose config disagrees is
/// refused (its journal and commit markers belong to the recorded primary).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RolesRecord {
    pub primary: String,
    pub secondary: String,
    pub at_unix: u64,
}

impl RolesRecord {
    pub fn read(journal: &Path) -> Option<RolesRecord> {
        let bytes = std::fs::read(journal.join(ROLES_FILE)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Written atomically (temporary file, fsync, rename, fsync of the
    /// directory).
    pub fn write(&self, journal: &Path) -> std::io::Result<()> {
        use std::io::Write;
        std::fs::create_dir_all(journal)?;
        let tmp = journal.join(format!("{ROLES_FILE}.tmp"));
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?)?;
        f.sync_all()?;
        std::fs::rename(&tmp, journal.join(ROLES_FILE))?;
        std::fs::File::open(journal)?.sync_all()
    }
}

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
    fn close(&self) -> Closed<'_> {
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

    async fn idle(&self) {
        let mut rx = self.tx.subscribe();
        let _ = rx.wait_for(|s| s.active == 0).await;
    }
}

/// The fence, closed; opens on drop.
struct Closed<'a>(&'a Fence, bool);

impl Closed<'_> {
    fn open(mut self) -> Vec<Duration> {
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

    fn set_phase(&self, p: Option<&'static str>) {
        *self.phase.lock().unwrap_or_else(|p| p.into_inner()) = p;
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

fn quantile(sorted: &[Duration], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    Some(ms(sorted[i]))
}

/// The running config with the roles flipped towards `to` (for the API and
/// CLI triggers; a file edit brings its own).
pub fn flipped(current: &Config, to: &str) -> Result<Config, String> {
    if current.primary == to {
        return Err(format!("{to} is already the primary"));
    }
    if current.secondary.as_deref() != Some(to) {
        return Err(format!(
            "{to} is not the secondary (the secondary is {}): only the backend receiving mirrored \
             writes holds a copy to cut over to",
            current.secondary.as_deref().unwrap_or("not set")
        ));
    }
    let mut new = current.clone();
    new.secondary = Some(current.primary.clone());
    new.primary = to.to_string();
    Ok(new)
}

/// Runs a cutover to `new.primary` (the caller holds the reload lock).
/// On success `new` is the published config; on error nothing changed and
/// the reason says why.
pub async fn run(shared: &Shared, new: Config, trigger: &str) -> Result<CutoverReport, String> {
    let current = shared.config.load_full();
    let mut report = CutoverReport {
        from: current.primary.clone(),
        to: new.primary.clone(),
        trigger: trigger.to_string(),
        started_at_unix: unix_now(),
        ok: false,
        error: None,
        phases: Vec::new(),
        fenced_ms: 0.0,
        total_ms: 0.0,
        fenced_statements: 0,
        fence_wait_p50_ms: None,
        fence_wait_p99_ms: None,
        fence_wait_max_ms: None,
    };
    info!(from = %report.from, to = %report.to, trigger, "cutover starting");
    let c = &shared.cutover;
    let started = Instant::now();
    let mut waits = Vec::new();
    let result = steps(shared, &current, new, &mut report, &mut waits).await;
    c.set_phase(None);
    report.total_ms = ms(started.elapsed());
    waits.sort();
    report.fenced_statements = waits.len();
    report.fence_wait_p50_ms = quantile(&waits, 0.5);
    report.fence_wait_p99_ms = quantile(&waits, 0.99);
    report.fence_wait_max_ms = waits.last().map(|d| ms(*d));
    for (phase, v) in &report.phases {
        shared.metrics.observe_cutover_phase(phase, v / 1e3);
    }
    match &result {
        Ok(()) => {
            report.ok = true;
            shared.metrics.cutovers_ok.inc();
            info!(
                from = %report.from,
                to = %report.to,
                fenced_ms = report.fenced_ms,
                fenced_statements = report.fenced_statements,
                fence_wait_max_ms = ?report.fence_wait_max_ms,
                "cutover complete: {} is the primary, {} receives mirrored writes",
                report.to,
                report.from
            );
        }
        Err(e) => {
            report.error = Some(e.clone());
            shared.metrics.cutovers_failed.inc();
            warn!(from = %report.from, to = %report.to, error = %e, "cutover refused or aborted; nothing changed");
        }
    }
    {
        let mut h = c.history.lock().unwrap_or_else(|p| p.into_inner());
        if h.len() == HISTORY {
            h.pop_front();
        }
        h.push_back(report.clone());
    }
    result.map(|()| report)
}

async fn steps(
    shared: &Shared,
    current: &Arc<Config>,
    new: Config,
    report: &mut CutoverReport,
    waits: &mut Vec<Duration>,
) -> Result<(), String> {
    let c = &shared.cutover;
    let mut phase_start = Instant::now();
    let mut end_phase = |report: &mut CutoverReport, name: &str| {
        report
            .phases
            .push((name.to_string(), ms(phase_start.elapsed())));
        phase_start = Instant::now();
    };

    c.set_phase(Some("preflight"));
    let mirror = preflight(shared, current, &new).await?;
    end_phase(report, "preflight");

    let fenced_at = Instant::now();
    let deadline = tokio::time::Instant::now() + current.cutover_timeout;
    c.set_phase(Some("fence"));
    c.fence
        .arrivals
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clear();
    let closed = c.fence.close();
    let outcome = fenced(shared, &mirror, &new, deadline, report, &mut end_phase).await;
    *waits = closed.open();
    report.fenced_ms = ms(fenced_at.elapsed());
    // On success the new config was published before the fence opened, so
    // released sessions see the new primary.
    outcome
}

async fn fenced(
    shared: &Shared,
    mirror: &Arc<crate::mirror::runtime::Mirror>,
    new: &Config,
    deadline: tokio::time::Instant,
    report: &mut CutoverReport,
    end_phase: &mut impl FnMut(&mut CutoverReport, &str),
) -> Result<(), String> {
    let c = &shared.cutover;
    let current = shared.config.load_full();
    let timeout = current.cutover_timeout;
    c.set_phase(Some("wait_transactions"));
    if tokio::time::timeout_at(deadline, c.fence.idle())
        .await
        .is_err()
    {
        return Err(format!(
            "aborted: {} transaction(s) on {} were still open after {timeout:?} \
             (migration.cutover_timeout); the fence is released and {} stays primary",
            c.fence.active(),
            current.primary,
            current.primary
        ));
    }
    end_phase(report, "wait_transactions");

    c.set_phase(Some("drain"));
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    MirrorSync::InProcess(mirror.clone())
        .settle(left)
        .await
        .map_err(|e| {
            format!(
                "aborted: the mirror did not drain to {} within {timeout:?} \
                 (migration.cutover_timeout): {e}; {} stays primary",
                new.primary, current.primary
            )
        })?;
    end_phase(report, "drain");

    c.set_phase(Some("swap"));
    let left = deadline
        .saturating_duration_since(tokio::time::Instant::now())
        .max(Duration::from_secs(1));
    mirror
        .swap_roles(left)
        .await
        .map_err(|e| format!("aborted: {e}; {} stays primary", current.primary))?;
    let record = RolesRecord {
        primary: new.primary.clone(),
        secondary: current.primary.clone(),
        at_unix: unix_now(),
    };
    if let Err(e) = record.write(&current.journal) {
        // Turn the mirror back: nothing was written meanwhile (fenced).
        let back = mirror.swap_roles(Duration::from_secs(10)).await;
        return Err(format!(
            "aborted: cannot record the new roles in {}: {e}{}",
            current.journal.join(ROLES_FILE).display(),
            match back {
                Ok(()) => String::new(),
                Err(b) => format!("; turning the mirror back failed too: {b}"),
            }
        ));
    }
    shared.config.store(Arc::new(new.clone()));
    shared.config_version.fetch_add(1, Ordering::Relaxed);
    shared.loaded_at_unix.store(unix_now(), Ordering::Relaxed);
    end_phase(report, "swap");
    Ok(())
}

/// Checks that refuse a cutover before anything is fenced.
async fn preflight(
    shared: &Shared,
    current: &Config,
    new: &Config,
) -> Result<Arc<crate::mirror::runtime::Mirror>, String> {
    let to = &new.primary;
    let refused = |why: String| format!("refused: {why}");
    if current.secondary.as_deref() != Some(to.as_str()) {
        return Err(refused(format!(
            "{to} is not the secondary; only the backend receiving mirrored writes holds a copy"
        )));
    }
    let Some(mirror) = shared.mirror.load_full().filter(|m| m.mirrors_to(to)) else {
        return Err(refused(format!("nothing is mirrored to {to}")));
    };
    let pos = mirror.position();
    if let Some(why) = pos.applier_stopped {
        return Err(refused(format!("the mirror applier stopped: {why}")));
    }
    let divergent = mirror.divergent();
    if !divergent.is_empty() {
        let names: Vec<&str> = divergent.keys().map(String::as_str).collect();
        return Err(refused(format!(
            "tables are marked divergent on {to} ({}); run `tandem verify --repair` first",
            names.join(", ")
        )));
    }
    let (_, lag) = mirror.lag();
    if lag > current.cutover_max_lag.as_secs_f64() {
        return Err(refused(format!(
            "mirror lag is {lag:.3}s, above migration.cutover_max_lag ({:?})",
            current.cutover_max_lag
        )));
    }
    if !shared.pools.load().contains_key(to) {
        return Err(refused(format!("{to} has no connection pool")));
    }
    let t = current.limits.connect_timeout.max(Duration::from_secs(1));
    let target = new.primary_backend().clone();
    let old = current.primary_backend().clone();
    // The target: reachable, writable, holds the commit-marker table.
    let check_target = async {
        let mut conn = mysql_async::Conn::new(crate::backend::client_opts(&target)).await?;
        crate::mirror::applier::check_position_writable(&mut conn, &target).await?;
        crate::mirror::runtime::ensure_marker_table(&mut conn, &target).await?;
        let _ = conn.disconnect().await;
        Ok::<_, mysql_async::Error>(())
    };
    match tokio::time::timeout(t, check_target).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(refused(format!("{to} is not usable as the primary: {e}"))),
        Err(_) => return Err(refused(format!("{to} did not answer within {t:?}"))),
    }
    // The way back: the old primary must take mirrored writes.
    let check_reverse = async {
        let mut conn = mysql_async::Conn::new(crate::backend::client_opts(&old)).await?;
        crate::mirror::applier::check_position_writable(&mut conn, &old).await?;
        let _ = conn.disconnect().await;
        Ok::<_, mysql_async::Error>(())
    };
    match tokio::time::timeout(t, check_reverse).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            return Err(refused(format!(
                "{} could not receive mirrored writes afterwards (no rollback path): {e}",
                old.name
            )))
        }
        Err(_) => {
            return Err(refused(format!(
                "{} did not answer within {t:?} (no rollback path)",
                old.name
            )))
        }
    }
    Ok(mirror)
}

/// Records a cutover made through the API in the config file: the value of
/// `migration.primary` is replaced in place (comments and layout kept), so
/// the file says what runs and a restart keeps the roles.
pub fn record_in_file(path: &Path, from: &str, to: &str) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let edited = edit_primary(&text, from, to).ok_or_else(|| {
        format!(
            "{}: no `primary: {from}` line under `migration:` to edit",
            path.display()
        )
    })?;
    let tmp = path.with_extension("tandem-tmp");
    std::fs::write(&tmp, edited).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}

/// `text` with the value of `migration.primary` changed from `from` to `to`.
fn edit_primary(text: &str, from: &str, to: &str) -> Option<String> {
    let mut in_migration = false;
    let mut out = String::with_capacity(text.len() + to.len());
    let mut done = false;
    for line in text.split_inclusive('\n') {
        let top_level = !line.starts_with([' ', '\t', '#']) && !line.trim().is_empty();
        if top_level {
            in_migration = line.trim_end().trim_end_matches(':') == "migration"
                || line.starts_with("migration:");
        }
        if in_migration && !done && !top_level {
            let indent = line.len() - line.trim_start().len();
            let rest = &line[indent..];
            if let Some(value) = rest.strip_prefix("primary:") {
                let lead = value.len() - value.trim_start().len();
                let v = &value[lead..];
                for quoted in [from.to_string(), format!("\"{from}\""), format!("'{from}'")] {
                    if let Some(after) = v.strip_prefix(quoted.as_str()) {
                        if after.is_empty() || after.starts_with([' ', '\t', '\r', '\n', '#']) {
                            out.push_str(&line[..indent]);
                            out.push_str("primary:");
                            out.push_str(&value[..lead]);
                            out.push_str(to);
                            out.push_str(after);
                            done = true;
                            break;
                        }
                    }
                }
                if done {
                    continue;
                }
            }
        }
        out.push_str(line);
    }
    done.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primary_line_is_edited_in_place() {
        let text = "listen: x\nmigration:\n  primary: legacy    # edit me\n  secondary: next\nbackends:\n  primary: legacy\n";
        let out = edit_primary(text, "legacy", "next").unwrap();
        assert_eq!(
            out,
            "listen: x\nmigration:\n  primary: next    # edit me\n  secondary: next\nbackends:\n  primary: legacy\n"
        );
        assert!(edit_primary(text, "other", "next").is_none());
        let quoted = "migration:\n  primary: \"legacy\"\n";
        assert_eq!(
            edit_primary(quoted, "legacy", "next").unwrap(),
            "migration:\n  primary: next\n"
        );
        // A longer name that starts like `from` is not it.
        assert!(edit_primary("migration:\n  primary: legacy2\n", "legacy", "x").is_none());
    }

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
