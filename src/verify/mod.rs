//! `tandem verify`: proves primary and secondary hold the same rows, table by
//! table, and optionally repairs the secondary.
//!
//! Per table: row counts (informational: under live traffic the two counts
//! are taken at different instants); then the table is walked in
//! primary-key order in chunks (keyset pagination bounded by the primary's
//! keys, so rows that exist only on the secondary are found too); each
//! chunk is compared row by row by normalized hash (`normalize`). Rows that
//! differ are re-checked with the primary's rows locked and the mirror
//! settled (`compare`), so writes in flight never show as differences;
//! only persistent ones are reported. `--repair` fixes them inside that
//! re-check (REPLACE / DELETE on the secondary), verifies the table again
//! and clears the table's divergent mark.

pub mod compare;
pub mod normalize;

use crate::config::Config;
use crate::mirror::sync::MirrorSync;
use crate::schema;
use compare::{Checker, Range};
use mysql_async::prelude::*;
use mysql_async::Conn;
use serde::Serialize;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// Only these tables (default: every base table the rules mirror).
    pub tables: Option<Vec<String>>,
    pub repair: bool,
    pub chunk_size: usize,
    /// Keys listed per kind of difference, at most.
    pub max_keys: usize,
    /// How long a re-check waits for the mirror to apply writes in flight.
    pub settle_timeout: Duration,
    /// Every chunk is compared under the primary's locks (see
    /// `compare::Checker::range`), not only the rows that differ at first.
    pub locked: bool,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        Self {
            tables: None,
            repair: false,
            chunk_size: 5000,
            max_keys: 100,
            settle_timeout: Duration::from_secs(60),
            locked: false,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct TableReport {
    pub table: String,
    pub rows_primary: u64,
    pub rows_secondary: u64,
    pub rows_checked: u64,
    pub chunks: u64,
    pub divergent_chunks: u64,
    /// Rows that differed at first sight and were re-checked.
    pub rechecked: u64,
    /// Primary keys (values joined with ',') of rows missing on the secondary.
    pub missing: Vec<String>,
    /// Rows only the secondary has.
    pub extra: Vec<String>,
    /// Rows whose values differ.
    pub changed: Vec<String>,
    pub missing_total: u64,
    pub extra_total: u64,
    pub changed_total: u64,
    /// Rows written or deleted on the secondary by --repair.
    pub repaired: u64,
    pub seconds: f64,
    /// Set when the table could not be verified (e.g. no primary key).
    pub error: Option<String>,
}

impl TableReport {
    /// No persistent difference (the chunk walk sees every row of both
    /// sides, so the counts, taken at different instants, are not compared).
    pub fn identical(&self) -> bool {
        self.error.is_none()
            && self.missing_total == 0
            && self.extra_total == 0
            && self.changed_total == 0
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub primary: String,
    pub secondary: String,
    pub tables: Vec<TableReport>,
    pub identical: bool,
    pub errors: bool,
    /// How writes in flight were ruled out (see `mirror::sync`).
    pub in_flight: String,
    pub finished_at_unix: u64,
    /// Views, routines, triggers and events that are missing on the
    /// secondary or differ there (compared when no `--tables` is given).
    pub objects: Vec<crate::schema_objects::ObjectDiff>,
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("verify needs migration.secondary in the config")]
    NoSecondary,
    #[error("{0}: {1}")]
    Backend(String, mysql_async::Error),
    #[error(transparent)]
    Connect(#[from] schema::ConnectError),
    #[error("unknown table(s) on the primary: {0}")]
    UnknownTables(String),
    #[error("{0}")]
    Other(String),
}

/// Verifies (and with `repair`, repairs) every selected table; `sync` tells
/// how to wait for writes in flight.
pub async fn run(
    cfg: &Config,
    opts: &VerifyOptions,
    sync: &MirrorSync,
) -> Result<Report, VerifyError> {
    let secondary_name = cfg.secondary.clone().ok_or(VerifyError::NoSecondary)?;
    let pcfg = cfg.primary_backend().clone();
    let scfg = cfg.backends[&secondary_name].clone();
    let mut p = schema::connect(&pcfg).await?;
    let mut s = schema::connect(&scfg).await?;
    let be = |name: &str| {
        let name = name.to_string();
        move |e| VerifyError::Backend(name.clone(), e)
    };
    let tables = match crate::schema::select_tables(&mut p, cfg, opts.tables.as_deref())
        .await
        .map_err(be(&pcfg.name))?
    {
        Ok(t) => t,
        Err(unknown) => return Err(VerifyError::UnknownTables(unknown.join(", "))),
    };
    // A re-check holds shared locks on a few primary rows; never wait long
    // behind an application transaction for them.
    p.query_drop("SET SESSION innodb_lock_wait_timeout = 10")
        .await
        .map_err(be(&pcfg.name))?;
    if opts.repair {
        s.query_drop("SET SESSION foreign_key_checks = 0")
            .await
            .map_err(be(&scfg.name))?;
    }
    let mut reports = Vec::new();
    for table in tables {
        let started = Instant::now();
        // Marks made from here on may not be covered by this pass.
        let marks_before = sync.position().await.ok().flatten().map(|p| p.mark_seq);
        let mut r = match verify_table(&mut p, &mut s, &table, opts, sync, opts.repair).await {
            Ok(r) => r,
            Err(e) => TableReport {
                table: table.clone(),
                error: Some(e),
                ..Default::default()
            },
        };
        if opts.repair && r.error.is_none() {
            if r.repaired > 0 {
                // Report what was found and fixed; prove the table is equal now.
                match verify_table(&mut p, &mut s, &table, opts, sync, false).await {
                    Ok(after) if after.identical() => {
                        r.rows_secondary = after.rows_secondary;
                        r.missing_total = 0;
                        r.extra_total = 0;
                        r.changed_total = 0;
                    }
                    Ok(_) => r.error = Some("differences remain after repair".into()),
                    Err(e) => r.error = Some(format!("re-verify after repair failed: {e}")),
                }
            }
            if r.identical() {
                sync.clear_divergent(std::slice::from_ref(&table), &cfg.journal, marks_before)
                    .await;
            }
        }
        r.seconds = started.elapsed().as_secs_f64();
        reports.push(r);
    }
    let objects = if opts.tables.is_none() {
        crate::schema_objects::diff(cfg, &mut p, &mut s)
            .await
            .map_err(be(&pcfg.name))?
    } else {
        Vec::new()
    };
    let identical = reports.iter().all(|r| r.identical()) && objects.is_empty();
    let errors = reports.iter().any(|r| r.error.is_some());
    let _ = p.disconnect().await;
    let _ = s.disconnect().await;
    Ok(Report {
        primary: pcfg.name,
        secondary: secondary_name,
        tables: reports,
        identical,
        errors,
        in_flight: sync.describe(),
        finished_at_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        objects,
    })
}

pub(crate) async fn verify_table(
    p: &mut Conn,
    s: &mut Conn,
    table: &str,
    opts: &VerifyOptions,
    sync: &MirrorSync,
    repair: bool,
) -> Result<TableReport, String> {
    let err = |e: mysql_async::Error| e.to_string();
    let plan = schema::TablePlan::load(p, table).await?;
    let t = &plan.quoted;
    let mut report = TableReport {
        table: table.to_string(),
        ..Default::default()
    };
    report.rows_primary = p
        .query_first(format!("SELECT COUNT(*) FROM {t}"))
        .await
        .map_err(err)?
        .unwrap_or(0);
    report.rows_secondary = s
        .query_first(format!("SELECT COUNT(*) FROM {t}"))
        .await
        .map_err(err)?
        .unwrap_or(0);
    let mut checker = Checker {
        p,
        s,
        plan: &plan,
        sync,
        repair,
        settle_timeout: opts.settle_timeout,
        exact: opts.locked,
    };
    let mut range = Range::default();
    loop {
        let r = checker.range(&range, Some(opts.chunk_size)).await?;
        report.chunks += 1;
        report.rows_checked += r.rows as u64;
        let d = r.diff;
        report.rechecked += d.rechecked;
        report.repaired += d.repaired;
        if !d.is_empty() {
            report.divergent_chunks += 1;
        }
        for (list, total, keys) in [
            (&mut report.missing, &mut report.missing_total, d.missing),
            (&mut report.extra, &mut report.extra_total, d.extra),
            (&mut report.changed, &mut report.changed_total, d.changed),
        ] {
            *total += keys.len() as u64;
            for k in keys {
                if list.len() < opts.max_keys {
                    list.push(k);
                }
            }
        }
        match r.next {
            Some(next) => range.lo = Some((next, false)),
            None => break,
        }
    }
    Ok(report)
}

/// Human-readable report.
pub fn render(report: &Report) -> String {
    let mut out = format!(
        "verify {} (primary) against {} (secondary)\n",
        report.primary, report.secondary
    );
    for t in &report.tables {
        let state = match (&t.error, t.identical()) {
            (Some(e), _) => format!("ERROR: {e}"),
            (None, true) if t.repaired > 0 => format!("repaired ({} rows)", t.repaired),
            (None, true) => "identical".into(),
            (None, false) => "DIVERGENT".into(),
        };
        out.push_str(&format!(
            "  {:<30} {state}\n    rows {} / {} (primary / secondary, counted at different instants), {} checked in {} chunks ({} divergent, {} rows re-checked), {:.2}s\n",
            t.table, t.rows_primary, t.rows_secondary, t.rows_checked, t.chunks, t.divergent_chunks, t.rechecked, t.seconds
        ));
        for (what, total, keys) in [
            ("missing on secondary", t.missing_total, &t.missing),
            ("extra on secondary", t.extra_total, &t.extra),
            ("changed", t.changed_total, &t.changed),
        ] {
            if total > 0 {
                let more = if total as usize > keys.len() {
                    " …"
                } else {
                    ""
                };
                out.push_str(&format!(
                    "    {what}: {total} (keys {}{more})\n",
                    keys.join("; ")
                ));
            }
        }
    }
    if !report.objects.is_empty() {
        out.push_str("  schema objects (views, routines, triggers, events)\n");
        out.push_str(&crate::schema_objects::render(&report.objects));
    }
    out.push_str(if report.errors {
        "result: ERROR\n"
    } else if report.identical {
        "result: identical\n"
    } else {
        "result: DIVERGENT\n"
    });
    out.push_str(&format!("in-flight writes: {}\n", report.in_flight));
    out
}
