//! What /status shows of the mirror, and the divergent-table list persisted
//! beside the journal.

use super::*;

/// The divergent-table list: tables whose secondary copy is known to
/// differ, with why, persisted beside the journal.
impl Mirror {
    /// Marks tables whose secondary copy can no longer be trusted (they need
    /// a backfill/verify). Persisted next to the journal.
    pub fn mark_divergent(&self, tables: &[String], reason: &str) {
        self.applier.note_marked(tables);
        let mut d = self.divergent.lock().unwrap_or_else(|p| p.into_inner());
        let mut changed = false;
        for t in tables {
            if !d.contains_key(t) {
                d.insert(t.clone(), reason.to_string());
                changed = true;
            }
        }
        if changed {
            warn!(?tables, reason, "tables marked divergent");
            persist_divergent(&self.divergent_path, &d);
        }
    }

    /// Clears the divergent mark of tables a verify repaired (or found
    /// identical). Names match qualified or not. With `before` (the
    /// `mark_seq` read when the verify's pass began), a mark made after it
    /// stays: the pass may not have covered what it marks. Returns what
    /// was cleared.
    pub fn clear_divergent(&self, tables: &[String], before: Option<u64>) -> Vec<String> {
        let mut wanted: HashSet<String> = tables.iter().map(|t| table_key(t)).collect();
        {
            let mut at = self
                .applier
                .marked_at
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if let Some(before) = before {
                for (t, seq) in at.iter() {
                    if *seq > before && wanted.remove(&table_key(t)) {
                        info!(table = %t, "divergent mark kept: made after the verify began");
                    }
                }
            }
            at.retain(|t, _| !wanted.contains(&table_key(t)));
        }
        let mut d = self.divergent.lock().unwrap_or_else(|p| p.into_inner());
        let mut cleared = remove_tables(&mut d, &wanted);
        if !cleared.is_empty() {
            persist_divergent(&self.divergent_path, &d);
        }
        drop(d);
        let mut a = self
            .applier
            .divergent_tables
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        a.retain(|t| {
            let hit = wanted.contains(&table_key(t));
            if hit && !cleared.contains(t) {
                cleared.push(t.clone());
            }
            !hit
        });
        if !cleared.is_empty() {
            info!(?cleared, "divergent marks cleared");
        }
        cleared
    }

    /// Divergent tables and why (capture side and applier dead letters).
    pub fn divergent(&self) -> BTreeMap<String, String> {
        let mut d = self
            .divergent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let applier = self
            .applier
            .divergent_tables
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for t in applier.iter() {
            d.entry(t.clone())
                .or_insert_with(|| "dead-lettered on the secondary".into());
        }
        d
    }
}

impl Mirror {
    /// Everything /status shows about mirroring.
    pub fn status_json(&self) -> serde_json::Value {
        let (lag_txns, lag_seconds) = self.lag();
        let c = &self.stats;
        let a = &self.applier;
        let get = |x: &AtomicU64| x.load(Ordering::Relaxed);
        serde_json::json!({
            "secondary": self.secondary_name(),
            "writers_outside_tandem": self.outside_writers,
            "lag_transactions": lag_txns,
            "lag_seconds": lag_seconds,
            // Upper bound of the histogram bucket (ms); "over 60000" past the last.
            "apply_lag_p50_ms": quantile_json(a.lag.quantile_ms(0.5)),
            "apply_lag_p99_ms": quantile_json(a.lag.quantile_ms(0.99)),
            "journal_bytes": self.journal.size_bytes(),
            "journal_fsyncs": self.journal.fsyncs(),
            "journaled": get(&c.committed),
            "statements": get(&c.statements),
            "aborted": get(&c.aborted),
            "in_doubt": get(&c.in_doubt),
            "applied": get(&a.applied),
            "apply_groups": get(&a.groups),
            "applied_lsn": get(&a.applied_lsn),
            "apply_workers": self.apply_workers,
            "apply_batch_wait_ms": self.apply_batch_wait.as_millis() as u64,
            "journal_commit_wait_us": self.journal_commit_wait.as_micros() as u64,
            "apply_errors": self.apply_errors.get(),
            "apply_parallel_peak": get(&a.parallel_peak),
            "retried": get(&a.retried),
            "plain_fallbacks": get(&a.plain_fallbacks),
            "dead_lettered": get(&a.dead_lettered),
            "skipped": get(&a.skipped),
            "dropped": get(&c.dropped),
            "unsafe_rejected": get(&c.unsafe_rejected),
            "unsafe_primary_only": get(&c.unsafe_primary_only),
            "journal_errors": get(&c.journal_errors),
            "journal_full_waits": get(&c.journal_full_waits),
            "journal_full_refused": get(&c.journal_full_refused),
            "journal_full_degraded": get(&c.journal_full_degraded),
            "divergent_tables": self.divergent(),
            "applier_stopped": *self.applier.stopped.lock().unwrap_or_else(|p| p.into_inner()),
        })
    }
}

/// See [`Mirror::position`]. Also the body of `GET /mirror/position`.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Position {
    pub journaled_lsn: Lsn,
    pub applied_lsn: Lsn,
    pub lag_seconds: f64,
    pub applier_stopped: Option<String>,
    pub table_writes: HashMap<String, Lsn>,
    /// Per table: the last LSN handed to the applier that wrote it in a
    /// way that may carry other rows' values (`writeset::spans`).
    #[serde(default)]
    pub spanning_writes: HashMap<String, Lsn>,
    /// `spanning_writes` covers the transactions above this LSN only (the
    /// applier's start); `u64::MAX` from a server that does not track them.
    #[serde(default = "untracked")]
    pub spanning_since: Lsn,
    /// Divergent marks made so far (see `Mirror::clear_divergent`).
    #[serde(default)]
    pub mark_seq: u64,
    /// The last LSN journaled for a DDL: until it is applied, a tool that
    /// waits for the mirror may wait as long as the secondary's DDL takes.
    #[serde(default)]
    pub ddl_lsn: Lsn,
}

fn untracked() -> Lsn {
    Lsn::MAX
}

/// How table names are compared across the mirror, verify and backfill:
/// unqualified, unquoted, lower case (a collision only costs a re-check).
pub fn table_key(name: &str) -> String {
    let last = name.rsplit('.').next().unwrap_or(name);
    last.trim_matches('`').to_lowercase()
}

/// Writes the divergent-table list next to the journal (atomically).
/// The divergent-table list's file, beside the journal.
pub const DIVERGENT_FILE: &str = "divergent.json";

/// The persisted divergent-table list (empty when there is none).
pub(super) fn load_divergent(path: &std::path::Path) -> BTreeMap<String, String> {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Removes the tables whose `table_key` is in `wanted`; returns their names.
pub(super) fn remove_tables(
    d: &mut BTreeMap<String, String>,
    wanted: &HashSet<String>,
) -> Vec<String> {
    let mut removed = Vec::new();
    d.retain(|t, _| {
        let hit = wanted.contains(&table_key(t));
        if hit {
            removed.push(t.clone());
        }
        !hit
    });
    removed
}

/// Clears divergent marks in the journal directory's file, for when no
/// server holds them (the offline tools).
pub fn clear_divergent_file(journal: &std::path::Path, tables: &[String]) {
    let path = journal.join(DIVERGENT_FILE);
    let mut d = load_divergent(&path);
    let wanted: HashSet<String> = tables.iter().map(|t| table_key(t)).collect();
    if !remove_tables(&mut d, &wanted).is_empty() {
        persist_divergent(&path, &d);
    }
}

pub(super) fn persist_divergent(path: &std::path::Path, d: &BTreeMap<String, String>) {
    if let Ok(json) = serde_json::to_vec_pretty(d) {
        let tmp = path.with_extension("json.tmp");
        let r = crate::mirror::journal::private_file()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .and_then(|mut f| std::io::Write::write_all(&mut f, &json))
            .and_then(|_| std::fs::rename(&tmp, path));
        if let Err(e) = r {
            error!(error = %e, "cannot persist the divergent-table list");
        }
    }
}

pub(super) fn quantile_json(q: Option<u64>) -> serde_json::Value {
    match q {
        Some(u64::MAX) => serde_json::json!("over 60000"),
        Some(v) => serde_json::json!(v),
        None => serde_json::Value::Null,
    }
}
