//! `tandem backfill`: copies the rows that existed before mirroring began
//! from the primary to the secondary, in primary-key chunks.
//!
//! - Insert-if-absent (`INSERT IGNORE`): a row the mirror already wrote is
//!   never overwritten by an older copy; a chunk whose range already held
//!   rows on the secondary is compared with verify's exact re-check (the
//!   mirror may have written such a row from a partial state: an upsert of
//!   a row not copied yet). Any warning but a duplicate (a value truncated
//!   or clipped by a different column type) stops the copy.
//! - Resumable: each chunk's rows and the table's checkpoint (last key copied)
//!   are written in one secondary transaction (`backfill_checkpoint` in Tandem's bookkeeping database), so an
//!   interrupted run (Ctrl-C, SIGKILL) continues exactly where it stopped.
//! - Mirror-aware: a chunk is read without locks and inserted a moment
//!   later, so a row updated or deleted on the primary in between, with the
//!   mirror applying that change before the insert, would come back stale.
//!   When the mirror has written the table since before the chunk was read
//!   (the running server's `GET /mirror/position` says so), the chunk's key
//!   range is compared again with verify's exact re-check (primary rows
//!   locked, mirror settled) and fixed. Tables nobody writes cost nothing.
//! - Closing comparison (`close`): tables that writes carrying other rows'
//!   values reached during the run are compared again, whole.
//! - Pauses while mirror lag is above `--max-lag`, so cutover readiness is
//!   not hurt; throttled by an optional rows/s limit; progress bars on a
//!   TTY, log lines otherwise; a summary at the end.
//! - The secondary session runs with `foreign_key_checks = 0`: tables are
//!   copied in name order, and a child row copied before its parent must
//!   not be skipped by `INSERT IGNORE`.

use crate::config::Config;
use crate::mirror::runtime::table_key;
use crate::mirror::sync::MirrorSync;
use crate::schema;
use crate::verify::compare::{key_values, Checker, Range};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use mysql_async::prelude::*;
use mysql_async::{Conn, Row, Value};
use serde::Serialize;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct BackfillOptions {
    pub tables: Option<Vec<String>>,
    pub create_tables: bool,
    /// Rows per second at most (None: as fast as possible).
    pub rate: Option<u64>,
    pub chunk_size: usize,
    /// Copying pauses while mirror lag is above this.
    pub max_lag: Duration,
}

impl Default for BackfillOptions {
    fn default() -> Self {
        Self {
            tables: None,
            create_tables: false,
            rate: None,
            chunk_size: 2000,
            max_lag: Duration::from_secs(1),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct TableSummary {
    pub table: String,
    /// Rows read from the primary in this run.
    pub rows_read: u64,
    /// Rows inserted on the secondary (absent ones; present ones kept).
    pub rows_inserted: u64,
    pub resumed: bool,
    pub created: bool,
    /// Chunks compared again because the mirror wrote the table meanwhile.
    pub chunks_rechecked: u64,
    /// Rows those re-checks fixed on the secondary.
    pub rows_repaired: u64,
    /// Time spent paused for mirror lag.
    pub paused_seconds: f64,
    /// Whole-table comparisons after the copy (see `close`).
    pub closing_passes: u32,
    /// The copy continued an interrupted run's (rows copied then may have
    /// been changed by writes this run cannot see).
    #[serde(skip)]
    pub continued: bool,
    pub seconds: f64,
    pub error: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    #[error(transparent)]
    Connect(#[from] schema::ConnectError),
    #[error("{0}")]
    Setup(String),
}

/// Where backfill keeps its checkpoints: Tandem's bookkeeping table on
/// the secondary, rows keyed by the secondary's database.
struct Checkpoints {
    table: String,
    owner: String,
}

/// What a run did: per table, and for the other schema objects.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Backfill {
    pub tables: Vec<TableSummary>,
    /// Views, routines, triggers and events missing on the secondary or
    /// different there (looked at when no `--tables` is given).
    pub objects: Vec<crate::schema_objects::ObjectDiff>,
    /// With `--create-tables`: one line per missing object created, or why
    /// it was not.
    pub objects_created: Vec<String>,
}

impl Backfill {
    /// Something could not be copied.
    pub fn failed(&self) -> bool {
        self.tables.iter().any(|s| s.error.is_some())
            || self
                .objects_created
                .iter()
                .any(|l| l.contains("NOT created"))
    }
}

pub async fn run(
    cfg: &Config,
    opts: &BackfillOptions,
    sync: &MirrorSync,
) -> Result<Backfill, BackfillError> {
    let secondary = cfg
        .secondary
        .clone()
        .ok_or_else(|| BackfillError::Setup("backfill needs migration.secondary".into()))?;
    let mut p = schema::connect(cfg.primary_backend()).await?;
    let mut s = schema::connect(&cfg.backends[&secondary]).await?;
    let setup = |e: mysql_async::Error| BackfillError::Setup(e.to_string());
    // Values travel as SQL literals with backslash escapes: make sure both
    // sessions read them that way.
    for c in [&mut p, &mut s] {
        c.query_drop("SET SESSION sql_mode = REPLACE(@@sql_mode, 'NO_BACKSLASH_ESCAPES', '')")
            .await
            .map_err(setup)?;
    }
    p.query_drop("SET SESSION innodb_lock_wait_timeout = 10")
        .await
        .map_err(setup)?;
    // foreign_key_checks: see the module doc; max_error_count: every
    // warning of a chunk's insert is read (`lossy_copy`).
    s.query_drop("SET SESSION foreign_key_checks = 0, max_error_count = 65535")
        .await
        .map_err(setup)?;
    if matches!(sync, MirrorSync::Unknown) {
        tracing::warn!(
            "cannot see Tandem's mirror (no reachable `admin` in the config): chunks written \
             during the copy are not re-checked; run `tandem verify --repair` afterwards"
        );
    }
    // Writes applied after this may meet rows not copied yet.
    let run_start = sync
        .position()
        .await
        .map_err(|e| BackfillError::Setup(e.to_string()))?
        .map(|p| p.applied_lsn);
    let tables = match schema::select_tables(&mut p, cfg, opts.tables.as_deref())
        .await
        .map_err(setup)?
    {
        Ok(t) => t,
        Err(unknown) => {
            return Err(BackfillError::Setup(format!(
                "unknown table(s) on the primary: {}",
                unknown.join(", ")
            )))
        }
    };
    let sb = &cfg.backends[&secondary];
    crate::mirror::bookkeeping::ensure(&mut s, sb)
        .await
        .map_err(setup)?;
    let checkpoints = Checkpoints {
        table: crate::mirror::bookkeeping::table(sb, crate::mirror::bookkeeping::BACKFILL),
        owner: crate::mirror::bookkeeping::owner(sb),
    };
    let bars = MultiProgress::with_draw_target(if std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    });
    let mut out = Vec::new();
    for table in tables {
        let started = Instant::now();
        let mut summary = TableSummary {
            table: table.clone(),
            ..Default::default()
        };
        let ctx = Ctx {
            opts,
            sync,
            bars: &bars,
            checkpoints: &checkpoints,
        };
        if let Err(e) = copy_table(&mut p, &mut s, &table, &ctx, &mut summary).await {
            summary.error = Some(e);
        }
        summary.seconds = started.elapsed().as_secs_f64();
        out.push(summary);
    }
    if let Err(e) = close(&mut p, &mut s, opts, sync, run_start, &mut out).await {
        for t in out.iter_mut().filter(|t| t.error.is_none()) {
            t.error = Some(format!("closing comparison: {e}"));
        }
    }
    let mut run = Backfill {
        tables: out,
        ..Default::default()
    };
    if opts.tables.is_none() {
        // The schema's other objects, once its tables are there (a view
        // or trigger names them).
        s.query_drop("SET SESSION foreign_key_checks = 1")
            .await
            .map_err(setup)?;
        let mut objects = crate::schema_objects::diff(cfg, &mut p, &mut s)
            .await
            .map_err(setup)?;
        if opts.create_tables {
            run.objects_created = crate::schema_objects::create_missing(&mut s, &objects).await;
            objects = crate::schema_objects::diff(cfg, &mut p, &mut s)
                .await
                .map_err(setup)?;
        }
        run.objects = objects;
    }
    let _ = p.disconnect().await;
    let _ = s.disconnect().await;
    Ok(run)
}

/// Passes of the closing comparison per table, at most.
const CLOSING_PASSES: u32 = 5;

/// The closing comparison. A mirrored write that changes each row from
/// that row alone is exact on a partly copied table: a row not copied yet
/// is either absent (the write does nothing; the copy brings the newer
/// row) or was written by the mirror first (the copy finds it present and
/// compares the chunk). A write that may carry other rows' values (moves a
/// key, reads other rows, decides by a unique-key conflict:
/// `writeset::spans`) may read a row not copied yet and leave a wrong row
/// in a range already copied. Every table such a write reached during the
/// run (or whose copy continued an interrupted run, or when the server
/// restarted meanwhile) is compared again, whole, with verify's exact
/// re-check and repaired; a pass during which no such write reached the
/// table, or which found nothing, ends it (every row equal when its chunk
/// was compared, and only row-local writes since). After
/// `CLOSING_PASSES` the table is reported, never silently left.
async fn close(
    p: &mut Conn,
    s: &mut Conn,
    opts: &BackfillOptions,
    sync: &MirrorSync,
    run_start: Option<u64>,
    out: &mut [TableSummary],
) -> Result<(), String> {
    let Some(run_start) = run_start else {
        // No mirror to ask (none running, or not reachable: warned).
        return Ok(());
    };
    let sync_err = |e: crate::mirror::sync::SyncError| e.to_string();
    let vopts = crate::verify::VerifyOptions {
        chunk_size: opts.chunk_size.max(1000),
        locked: true,
        ..Default::default()
    };
    // Tables a previous run finished were whole before this run began.
    for t in out
        .iter_mut()
        .filter(|t| t.error.is_none() && (t.continued || !t.resumed))
    {
        let key = table_key(&t.table);
        let mut since = run_start;
        let mut continued = t.continued;
        loop {
            sync.settle(vopts.settle_timeout).await.map_err(sync_err)?;
            let Some(pos) = sync.position().await.map_err(sync_err)? else {
                return Ok(());
            };
            let spanned = pos.spanning_since > since
                || pos
                    .spanning_writes
                    .get(&key)
                    .is_some_and(|lsn| *lsn > since);
            if !spanned && !continued {
                break;
            }
            if t.closing_passes >= CLOSING_PASSES {
                t.error = Some(format!(
                    "writes that carry other rows' values kept changing rows during {CLOSING_PASSES} \
                     closing comparisons; run `tandem verify --repair --tables {}` when they calm down",
                    t.table
                ));
                break;
            }
            since = pos.applied_lsn;
            continued = false;
            let started = Instant::now();
            let r = crate::verify::verify_table(p, s, &t.table, &vopts, sync, true).await?;
            t.closing_passes += 1;
            t.rows_repaired += r.repaired;
            t.seconds += started.elapsed().as_secs_f64();
            tracing::info!(
                table = t.table,
                repaired = r.repaired,
                "backfill closing comparison"
            );
            if r.repaired == 0 && r.identical() {
                break;
            }
        }
    }
    Ok(())
}

/// What every table's copy shares.
struct Ctx<'a> {
    opts: &'a BackfillOptions,
    sync: &'a MirrorSync,
    bars: &'a MultiProgress,
    checkpoints: &'a Checkpoints,
}

async fn copy_table(
    p: &mut Conn,
    s: &mut Conn,
    table: &str,
    ctx: &Ctx<'_>,
    summary: &mut TableSummary,
) -> Result<(), String> {
    let (opts, bars, sync, checkpoints) = (ctx.opts, ctx.bars, ctx.sync, ctx.checkpoints);
    let err = |e: mysql_async::Error| e.to_string();
    let sync_err = |e: crate::mirror::sync::SyncError| e.to_string();
    let plan = schema::TablePlan::load(p, table).await?;
    let t = &plan.quoted;
    let (col_list, pk_list) = (&plan.column_list, &plan.key_list);
    let exists: Option<String> = s
        .exec_first(
            "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?",
            (table,),
        )
        .await
        .map_err(err)?;
    if exists.is_none() {
        if !opts.create_tables {
            return Err(format!(
                "table {table} does not exist on the secondary (use --create-tables to create it from the primary's schema)"
            ));
        }
        let (_, ddl): (String, String) = p
            .query_first(format!("SHOW CREATE TABLE {t}"))
            .await
            .map_err(err)?
            .ok_or("SHOW CREATE TABLE returned nothing")?;
        s.query_drop(ddl).await.map_err(err)?;
        summary.created = true;
    }
    let checkpoint: Option<(Option<String>, u64, bool)> = s
        .exec_first(
            format!(
                "SELECT last_key, rows_copied, done FROM {} WHERE db = {} AND table_name = ?",
                checkpoints.table, checkpoints.owner
            ),
            (table,),
        )
        .await
        .map_err(err)?;
    let (mut last_key, mut copied) = match checkpoint {
        Some((_, n, true)) => {
            summary.resumed = true;
            tracing::info!(table, rows = n, "backfill already complete");
            return Ok(());
        }
        Some((k, n, false)) => {
            summary.resumed = k.is_some();
            summary.continued = k.is_some();
            (k, n)
        }
        None => (None, 0),
    };
    let total: u64 = p
        .query_first(format!("SELECT COUNT(*) FROM {t}"))
        .await
        .map_err(err)?
        .unwrap_or(0);
    let bar = bars.add(ProgressBar::new(total));
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix:>20} {bar:30} {pos}/{len} rows {per_sec} eta {eta} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_prefix(table.to_string());
    bar.set_position(copied.min(total));
    let mut pace = Pace::new(opts.rate);
    let key = table_key(table);
    // The previous chunk's last key, as values (None after a resume: the
    // checkpoint keeps it as SQL text).
    let mut prev_vals: Option<Vec<Value>> = None;
    let mut deadlock_retries = 0u32;
    loop {
        // Pause while the mirror is behind; note what it has applied before
        // the chunk is read: a later write to this table means the chunk
        // may have raced the mirror.
        let applied_before = match sync.position().await.map_err(sync_err)? {
            Some(pos) if pos.lag_seconds > opts.max_lag.as_secs_f64() => {
                let paused = Instant::now();
                bar.set_message(format!("paused: mirror lag {:.1}s", pos.lag_seconds));
                tracing::info!(
                    table,
                    lag = pos.lag_seconds,
                    "backfill paused for mirror lag"
                );
                loop {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    match sync.position().await.map_err(sync_err)? {
                        Some(p) if p.lag_seconds > opts.max_lag.as_secs_f64() => {}
                        _ => break,
                    }
                }
                bar.set_message("");
                summary.paused_seconds += paused.elapsed().as_secs_f64();
                sync.position()
                    .await
                    .map_err(sync_err)?
                    .map(|p| p.applied_lsn)
            }
            pos => pos.map(|p| p.applied_lsn),
        };
        // Keyset pagination; the last key is kept as SQL literals produced
        // by the driver's own escaping.
        let after = last_key
            .as_ref()
            .map(|k| format!("WHERE ({pk_list}) > ({k})"))
            .unwrap_or_default();
        let rows: Vec<Row> = p
            .query(format!(
                "SELECT {col_list} FROM {t} {after} ORDER BY {pk_list} LIMIT {}",
                opts.chunk_size
            ))
            .await
            .map_err(err)?;
        let done = rows.len() < opts.chunk_size;
        // Every write that committed before the read is applied before
        // the copy: a row the chunk holds because a mirrored insert put it
        // on the primary is on the secondary already and the copy skips
        // it; copying it first would make that insert fail there (a
        // duplicate key) and dead-letter its transaction.
        if !rows.is_empty() {
            sync.settle(Duration::from_secs(60))
                .await
                .map_err(sync_err)?;
        }
        let prev_key = last_key.clone();
        let chunk = Chunk {
            rows: &rows,
            prev_key: prev_key.as_deref(),
            done,
            copied: copied + rows.len() as u64,
        };
        let (inserted, held, new_last) =
            match copy_chunk(s, &plan, table, checkpoints, &chunk).await {
                Ok(Ok(x)) => x,
                // A deadlock or lock wait with the applier rolled the chunk
                // back: read it again.
                Ok(Err(e)) if deadlock_retries < CHUNK_RETRIES => {
                    deadlock_retries += 1;
                    tracing::debug!(table, error = %e, "chunk rolled back; read again");
                    tokio::time::sleep(crate::verify::compare::lock_retry_pause(deadlock_retries))
                        .await;
                    continue;
                }
                Ok(Err(e)) => return Err(e.to_string()),
                Err(e) => return Err(e),
            };
        deadlock_retries = 0;
        if new_last.is_some() {
            last_key = new_last;
        }
        let present = inserted < rows.len() as u64 || held != rows.len() as u64;
        copied += rows.len() as u64;
        // A write not yet applied when the chunk was read may have raced
        // the copy (applied before the insert, or after it on the copied
        // row).
        let raced = match applied_before {
            Some(applied) => sync
                .position()
                .await
                .map_err(sync_err)?
                .and_then(|pos| pos.table_writes.get(&key).copied())
                .is_some_and(|lsn| lsn > applied),
            None => false,
        };
        tracing::debug!(
            table,
            after = prev_key.as_deref().unwrap_or(""),
            last = last_key.as_deref().unwrap_or(""),
            rows = rows.len(),
            inserted,
            held,
            applied_before = ?applied_before,
            raced,
            present,
            "chunk copied"
        );
        if raced || present {
            let mut checker = Checker {
                p: &mut *p,
                s: &mut *s,
                plan: &plan,
                sync,
                repair: true,
                settle_timeout: Duration::from_secs(60),
                // The copy may be stale: see `Checker::range`.
                exact: true,
            };
            // From just after the previous chunk (rows only the secondary
            // holds between two chunks are in this one), to the end of the
            // table for the last chunk.
            let lo = match (&prev_vals, rows.first()) {
                (Some(v), _) => Some((v.clone(), false)),
                (None, Some(first)) if prev_key.is_some() => Some((key_values(&plan, first), true)),
                _ => None,
            };
            let hi = match (done, rows.last()) {
                (false, Some(last)) => Some(key_values(&plan, last)),
                _ => None,
            };
            let r = checker.range(&Range { lo, hi }, None).await?;
            tracing::debug!(
                table,
                rows = r.rows,
                changed = ?r.diff.changed,
                missing = ?r.diff.missing,
                extra = ?r.diff.extra,
                repaired = r.diff.repaired,
                "chunk re-checked"
            );
            summary.chunks_rechecked += 1;
            summary.rows_repaired += r.diff.repaired;
        }
        if let Some(last) = rows.last() {
            prev_vals = Some(key_values(&plan, last));
        }
        summary.rows_read += rows.len() as u64;
        summary.rows_inserted += inserted;
        pace.progress(&bar, table, copied, total);
        if done {
            break;
        }
        pace.throttle(summary.rows_read).await;
    }
    bar.finish();
    Ok(())
}

/// A table copy's progress (bar, or log lines off a TTY) and its optional
/// rows/s limit; both backfills use it.
pub(crate) struct Pace {
    started: Instant,
    last_log: Instant,
    rate: Option<u64>,
}

impl Pace {
    pub(crate) fn new(rate: Option<u64>) -> Self {
        Self {
            started: Instant::now(),
            last_log: Instant::now(),
            rate: rate.filter(|r| *r > 0),
        }
    }

    pub(crate) fn progress(&mut self, bar: &ProgressBar, table: &str, copied: u64, total: u64) {
        bar.set_position(copied.min(total.max(copied)));
        if self.last_log.elapsed() > Duration::from_secs(5) && bar.is_hidden() {
            tracing::info!(table, copied, total, "backfill progress");
            self.last_log = Instant::now();
        }
    }

    /// Sleeps until this copy's average is back under the limit.
    pub(crate) async fn throttle(&self, rows_read: u64) {
        if let Some(rate) = self.rate {
            let due = Duration::from_secs_f64(rows_read as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(self.started.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// Times a chunk rolled back by a deadlock or lock wait is read again.
const CHUNK_RETRIES: u32 = 10;

/// One chunk to copy.
struct Chunk<'a> {
    rows: &'a [Row],
    /// The last key copied before it (SQL literals), None at the start.
    prev_key: Option<&'a str>,
    /// The table's last chunk (its range is open above).
    done: bool,
    /// Rows copied with it, for the checkpoint.
    copied: u64,
}

/// Copies one chunk and its checkpoint in one secondary transaction:
/// (rows inserted, rows the secondary holds in the chunk's range, the
/// chunk's last key). `Ok(Err)`: the server rolled it back (a deadlock or
/// lock wait with the applier), to be read again; `Err`: the copy stops.
async fn copy_chunk(
    s: &mut Conn,
    plan: &schema::TablePlan,
    table: &str,
    checkpoints: &Checkpoints,
    chunk: &Chunk<'_>,
) -> Result<Result<(u64, u64, Option<String>), mysql_async::Error>, String> {
    let retry = |e: mysql_async::Error| {
        if crate::verify::compare::rolled_back_by_locks(&e) {
            Ok(e)
        } else {
            Err(e.to_string())
        }
    };
    let (t, cols, col_list, pk_list) = (
        &plan.quoted,
        &plan.columns,
        &plan.column_list,
        &plan.key_list,
    );
    let rows = chunk.rows;
    let mut tx = match s.start_transaction(Default::default()).await {
        Ok(tx) => tx,
        Err(e) => return retry(e).map(Err),
    };
    let mut inserted = 0;
    let mut last_key = None;
    if let Some(last) = rows.last() {
        let mut sql = format!("INSERT IGNORE INTO {t} ({col_list}) VALUES ");
        for (i, r) in rows.iter().enumerate() {
            if i > 0 {
                sql.push(',');
            }
            sql.push('(');
            for c in 0..cols.len() {
                if c > 0 {
                    sql.push(',');
                }
                sql.push_str(&r.as_ref(c).unwrap_or(&Value::NULL).as_sql(false));
            }
            sql.push(')');
        }
        if let Err(e) = tx.query_drop(sql).await {
            return retry(e).map(Err);
        }
        inserted = tx.affected_rows();
        // One duplicate warning per row already present; any other
        // warning is a value the secondary did not take as it was.
        if u64::from(tx.get_warnings()) > rows.len() as u64 - inserted {
            return Err(lossy_copy(&mut tx, table).await);
        }
        last_key = Some(
            plan.key_positions
                .iter()
                .map(|i| last.as_ref(*i).unwrap_or(&Value::NULL).as_sql(false))
                .collect::<Vec<_>>()
                .join(", "),
        );
    }
    // What the secondary holds in the chunk's key range now: anything but
    // exactly the rows just inserted means rows were there before (written
    // by the mirror before their copy, or by an earlier run) and may differ
    // from the primary's.
    let mut bounds = Vec::new();
    if let Some(k) = chunk.prev_key {
        bounds.push(format!("({pk_list}) > ({k})"));
    }
    if let (false, Some(k)) = (chunk.done, &last_key) {
        bounds.push(format!("({pk_list}) <= ({k})"));
    }
    let held: u64 = match tx
        .query_first(format!(
            "SELECT COUNT(*) FROM {t}{}{}",
            if bounds.is_empty() { "" } else { " WHERE " },
            bounds.join(" AND ")
        ))
        .await
    {
        Ok(n) => n.unwrap_or(0),
        Err(e) => return retry(e).map(Err),
    };
    let checkpoint = last_key
        .clone()
        .or_else(|| chunk.prev_key.map(str::to_string));
    let r = tx
        .exec_drop(
            format!(
                "INSERT INTO {} (db, table_name, last_key, rows_copied, done) VALUES ({}, ?, ?, ?, ?)
                 ON DUPLICATE KEY UPDATE last_key = VALUES(last_key), rows_copied = VALUES(rows_copied), done = VALUES(done)",
                checkpoints.table, checkpoints.owner
            ),
            (table, checkpoint, chunk.copied, chunk.done),
        )
        .await;
    if let Err(e) = r {
        return retry(e).map(Err);
    }
    if let Err(e) = tx.commit().await {
        return retry(e).map(Err);
    }
    Ok(Ok((inserted, held, last_key)))
}

/// `INSERT IGNORE` turns every error into a warning: duplicates are what
/// it is for (rows the mirror wrote first), anything else (a value
/// truncated, clipped or converted because the secondary's column differs)
/// would be a silent difference, so the chunk is refused and the copy stops
/// with the server's words.
async fn lossy_copy(tx: &mut mysql_async::Transaction<'_>, table: &str) -> String {
    let warnings: Vec<(String, u32, String)> = tx.query("SHOW WARNINGS").await.unwrap_or_default();
    let why = warnings
        .iter()
        .find(|(_, code, _)| *code != 1062)
        .map(|(level, code, message)| format!("{level} {code}: {message}"))
        .unwrap_or_else(|| "the server warned about a value".into());
    format!(
        "the secondary cannot hold {table}'s rows as they are on the primary ({why}); \
         make the secondary's column types match the primary's and run backfill again"
    )
}

/// Human-readable summary.
pub fn render(run: &Backfill) -> String {
    let mut out = String::from("backfill summary\n");
    for s in &run.tables {
        let state = match &s.error {
            Some(e) => format!("ERROR: {e}"),
            None => "done".into(),
        };
        let rate = if s.seconds > 0.0 {
            s.rows_read as f64 / s.seconds
        } else {
            0.0
        };
        out.push_str(&format!(
            "  {:<30} {state}\n    read {} rows, inserted {} (rows already present compared){}{}, {:.2}s ({:.0} rows/s)\n",
            s.table,
            s.rows_read,
            s.rows_inserted,
            if s.resumed { ", resumed from checkpoint" } else { "" },
            if s.created { ", table created" } else { "" },
            s.seconds,
            rate
        ));
        if s.chunks_rechecked > 0 || s.paused_seconds > 0.0 {
            out.push_str(&format!(
                "    {} chunks re-checked against mirrored writes ({} rows fixed), paused {:.1}s for mirror lag\n",
                s.chunks_rechecked, s.rows_repaired, s.paused_seconds
            ));
        }
        if s.closing_passes > 0 {
            out.push_str(&format!(
                "    compared again whole {} time(s) after the copy: writes that carry other rows' values reached it\n",
                s.closing_passes
            ));
        }
    }
    if !run.objects_created.is_empty() {
        out.push_str("  schema objects created on the secondary\n");
        for l in &run.objects_created {
            out.push_str(&format!("    {l}\n"));
        }
    }
    if !run.objects.is_empty() {
        out.push_str(
            "  schema objects (views, routines, triggers, events) that differ; \
             --create-tables creates the missing ones\n",
        );
        out.push_str(&crate::schema_objects::render(&run.objects));
    }
    out
}
