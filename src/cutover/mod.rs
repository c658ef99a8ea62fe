//! Cutover: the fenced flip of primary and secondary (see docs/design.md,
//! "Cutover"). Every trigger — an edit of `migration.primary` picked up by
//! the reload path, `POST /cutover`, `tandem cutover --to` — ends in [`run`]:
//!
//! 1. preflight: the target is the current secondary, reachable and
//!    writable; the old primary can take the mirror position (the rollback
//!    path); lag is under `cutover_max_lag`; no table is divergent; the
//!    target has the old primary's views, routines and triggers;
//! 2. fence: new transactions and autocommit writes wait in their sessions
//!    (reads keep going to the old primary);
//! 3. open transactions finish (their sessions hold a fence ticket until
//!    COMMIT/ROLLBACK);
//! 4. the journal drains (everything committed is applied on the target),
//!    and no table was marked divergent meanwhile (a dead-lettered
//!    transaction is not on the target);
//! 5. swap: the mirror turns around, the roles are recorded beside the
//!    journal, the new config is published;
//! 6. release: fenced sessions move to the new primary at their next
//!    transaction boundary and go on.
//!
//! Steps 2–5 must fit in `migration.cutover_timeout`; otherwise the fence
//! opens towards the old primary and nothing has changed.

use crate::config::roles::{RolesRecord, ROLES_FILE};
use crate::config::Config;
use crate::mirror::sync::MirrorSync;
use crate::state::{unix_now, Shared};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{info, warn};

pub mod fence;
mod holders;
use fence::{ms, quantile};
pub use fence::{Cutover, CutoverOptions, CutoverReport, Fence, Ticket};

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
pub async fn run(
    shared: &Shared,
    new: Config,
    trigger: &str,
    opts: CutoverOptions,
) -> Result<CutoverReport, String> {
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
        events_moved: Vec::new(),
        events_left: Vec::new(),
        events_error: None,
        ended_sessions: Vec::new(),
    };
    info!(from = %report.from, to = %report.to, trigger, "cutover starting");
    let c = &shared.cutover;
    let started = Instant::now();
    let mut waits = Vec::new();
    let result = steps(shared, &current, new, opts, &mut report, &mut waits).await;
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
    c.record(report.clone());
    result.map(|()| report)
}

async fn steps(
    shared: &Shared,
    current: &Arc<Config>,
    new: Config,
    opts: CutoverOptions,
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
    let timeout = opts.wait.unwrap_or(current.cutover_timeout);
    let deadline = tokio::time::Instant::now() + timeout;
    c.set_phase(Some("fence"));
    c.fence.clear_arrivals();
    let closed = c.fence.close();
    let outcome = fenced(
        shared,
        &mirror,
        &new,
        (deadline, timeout),
        opts,
        report,
        &mut end_phase,
    )
    .await;
    *waits = closed.open();
    report.fenced_ms = ms(fenced_at.elapsed());
    if outcome.is_ok() {
        c.set_phase(Some("events"));
        swap_events(current, &new, report).await;
        end_phase(report, "events");
    }
    // On success the new config was published before the fence opened, so
    // released sessions see the new primary.
    outcome
}

async fn fenced(
    shared: &Shared,
    mirror: &Arc<crate::mirror::runtime::Mirror>,
    new: &Config,
    (deadline, timeout): (tokio::time::Instant, Duration),
    opts: CutoverOptions,
    report: &mut CutoverReport,
    end_phase: &mut impl FnMut(&mut CutoverReport, &str),
) -> Result<(), String> {
    let c = &shared.cutover;
    let current = shared.config.load_full();
    c.set_phase(Some("wait_transactions"));
    let mut idle = false;
    if let Some(grace) = opts.end_holders_after {
        let until = (tokio::time::Instant::now() + grace).min(deadline);
        idle = tokio::time::timeout_at(until, c.fence.idle()).await.is_ok();
        if !idle && tokio::time::Instant::now() < deadline {
            c.set_phase(Some("end_holders"));
            report.ended_sessions = holders::end(shared, &current).await;
            c.set_phase(Some("wait_transactions"));
        }
    }
    if !idle
        && tokio::time::timeout_at(deadline, c.fence.idle())
            .await
            .is_err()
    {
        let holders: Vec<String> = shared
            .registry
            .holders()
            .iter()
            .map(ToString::to_string)
            .collect();
        return Err(format!(
            "aborted: {} transaction(s) on {} were still open after {timeout:?} \
             (migration.cutover_timeout, or the cutover's wait){}; the fence is released and {} stays primary",
            c.fence.active(),
            current.primary,
            if holders.is_empty() {
                String::new()
            } else {
                format!(": {}", holders.join("; "))
            },
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
    // Preflight found no table divergent: a mark now was made while the
    // cutover waited or drained (a transaction dead-lettered, a write run
    // on the primary only). Its write is not on the target.
    let divergent = mirror.divergent();
    if !divergent.is_empty() {
        let marks: Vec<String> = divergent
            .iter()
            .map(|(t, why)| format!("{t} ({why})"))
            .collect();
        return Err(format!(
            "aborted: tables were marked divergent during the cutover: {}; {} would miss those \
             writes, so {} stays primary; run `tandem verify --repair` and cut over again",
            marks.join(", "),
            new.primary,
            current.primary
        ));
    }
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
        let mut conn = crate::backend::own_conn(crate::backend::own_opts(&target).await).await?;
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
    // The accounts users act as must work on the target, markers included.
    let markers = crate::mirror::bookkeeping::table(&target, crate::mirror::bookkeeping::MARKERS);
    let mut problems =
        crate::backend::accounts::check_all(&target, new.accounts.values(), Some(&markers), t)
            .await;
    // …with the grants they have on the current primary.
    problems.extend(
        crate::backend::accounts::compare_all_grants(&old, &target, new.accounts.values(), t).await,
    );
    if !problems.is_empty() {
        return Err(refused(format!(
            "users could not work on {to}: {}",
            problems.join("; ")
        )));
    }
    // The application's views, routines and triggers must be there as on
    // the old primary (events move with the cutover: `swap_events`).
    let compare = async {
        let mut p = crate::backend::own_conn(crate::backend::own_opts(&old).await).await?;
        let mut s = crate::backend::own_conn(crate::backend::own_opts(&target).await).await?;
        let d = crate::schema_objects::diff(current, &mut p, &mut s).await;
        let _ = p.disconnect().await;
        let _ = s.disconnect().await;
        d
    };
    match tokio::time::timeout(t, compare).await {
        Ok(Ok(diffs)) => {
            let differ: Vec<String> = diffs
                .iter()
                .filter(|d| d.kind != "EVENT")
                .map(|d| format!("{} {} ({})", d.kind.to_lowercase(), d.name, d.state))
                .collect();
            if !differ.is_empty() {
                return Err(refused(format!(
                    "schema objects differ on {to}: {}; `tandem backfill --create-tables` creates \
                     missing ones, `tandem verify` prints the statements",
                    differ.join(", ")
                )));
            }
        }
        Ok(Err(e)) => return Err(refused(format!("cannot compare schema objects: {e}"))),
        Err(_) => return Err(refused(format!("comparing schema objects took over {t:?}"))),
    }
    // The way back: the old primary must take mirrored writes.
    let check_reverse = async {
        let mut conn = crate::backend::own_conn(crate::backend::own_opts(&old).await).await?;
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

/// After the roles moved: scheduled events follow the primary
/// (`mirror::events::swap`). A failure is reported, not undone: the
/// cutover stands, and the operator fixes the events by hand.
async fn swap_events(old_cfg: &Config, new_cfg: &Config, report: &mut CutoverReport) {
    let old = old_cfg.primary_backend();
    let new = new_cfg.primary_backend();
    let (Some(old_db), Some(new_db)) = (old.database.clone(), new.database.clone()) else {
        return;
    };
    let r = async {
        let mut o = crate::backend::own_conn(crate::backend::own_opts(old).await).await?;
        let mut n = crate::backend::own_conn(crate::backend::own_opts(new).await).await?;
        let r = crate::mirror::events::swap(&mut o, &old_db, &mut n, &new_db).await;
        let _ = o.disconnect().await;
        let _ = n.disconnect().await;
        r
    }
    .await;
    match r {
        Ok(s) => {
            if !s.moved.is_empty() {
                info!(events = ?s.moved, "scheduled events moved to the new primary");
            }
            if !s.left.is_empty() {
                warn!(events = ?s.left, "scheduled events enabled on the old primary only keep running there (created outside Tandem; their writes are not mirrored)");
            }
            report.events_moved = s.moved;
            report.events_left = s.left;
        }
        Err(e) => {
            warn!(error = %e, "scheduled events could not be swapped; check them on both servers");
            report.events_error = Some(e.to_string());
        }
    }
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
}
