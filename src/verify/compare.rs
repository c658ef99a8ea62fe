//! Comparing one primary-key range of a table on both sides, and the exact
//! re-check that keeps writes in flight from showing as differences.
//!
//! A range is read from the primary, then from the secondary, and rows are
//! matched by key and compared by normalized hash. Under live traffic those
//! two reads see different instants, so every difference is only a
//! *suspect*. Suspects are re-read on the primary with a locking read (the
//! rows, and for absent keys the gaps, cannot change while it is held),
//! then the mirror is settled (everything that committed before is applied
//! on the secondary, see `mirror::sync`), then the secondary is read. With
//! the primary frozen and the secondary caught up, a difference that is
//! still there is real; `repair` fixes it while the lock is still held, so
//! the repair cannot race the mirror either. Cost: a shared lock on the
//! suspect rows for one mirror round trip, only for chunks that differ.

use super::normalize::{self, Kind};
use crate::mirror::sync::{MirrorSync, SyncError};
use crate::schema::TablePlan;
use crate::sql::quote;
use mysql_async::prelude::*;
use mysql_async::{Conn, IsolationLevel, Row, TxOpts, Value};
use std::collections::BTreeMap;
use std::time::Duration;

/// Keys bound per `IN (...)` statement.
const KEYS_PER_STATEMENT: usize = 500;
/// Re-check rounds when the mirror cannot be settled (`MirrorSync::Unknown`).
const BLIND_ROUNDS: usize = 3;

/// A primary-key range: `lo` (inclusive when the flag is set, else
/// exclusive) to `hi` (inclusive); `None` is open.
#[derive(Debug, Clone, Default)]
pub struct Range {
    pub lo: Option<(Vec<Value>, bool)>,
    pub hi: Option<Vec<Value>>,
}

/// Differences found in a range, by key (the key's values joined by ',').
#[derive(Debug, Default)]
pub struct Diff {
    pub missing: Vec<String>,
    pub extra: Vec<String>,
    pub changed: Vec<String>,
    /// Rows written or deleted on the secondary by a repair.
    pub repaired: u64,
    /// Suspect rows that were re-checked.
    pub rechecked: u64,
}

impl Diff {
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.extra.is_empty() && self.changed.is_empty()
    }
}

/// What comparing one range found.
#[derive(Debug, Default)]
pub struct RangeResult {
    /// Rows read from the primary.
    pub rows: usize,
    /// The last primary key read when `limit` cut the range short (the next
    /// range starts after it); `None` when the range was read to its end.
    pub next: Option<Vec<Value>>,
    pub diff: Diff,
}

/// How a comparison runs.
pub struct Checker<'a> {
    pub p: &'a mut Conn,
    pub s: &'a mut Conn,
    pub plan: &'a TablePlan,
    pub sync: &'a MirrorSync,
    pub repair: bool,
    pub settle_timeout: Duration,
    /// Every range is compared under the primary's locks (see
    /// [`Checker::range`]), not only its suspects.
    pub exact: bool,
}

/// What a locked comparison reads: suspect keys, or a whole range (at most
/// so many primary rows).
#[derive(Clone, Copy)]
enum Target<'a> {
    Keys(&'a [Vec<Value>]),
    Range(&'a Range, Option<usize>),
}

impl Checker<'_> {
    /// Compares `range` (at most `limit` primary rows); suspects are
    /// re-checked, so only persistent differences are returned.
    ///
    /// Two reads at different instants can also agree by chance: a row the
    /// secondary missed one update of (`k = k + 1` applied to a row not
    /// copied yet) matches the primary's read once the mirror applies the
    /// primary's next update. Equal rows are therefore only proof when the
    /// secondary cannot be wrong but late (verify of a mirrored table).
    /// With `exact` (backfill, whose copies may be stale), the whole range
    /// is read under the primary's locks with the mirror settled.
    pub async fn range(
        &mut self,
        range: &Range,
        limit: Option<usize>,
    ) -> Result<RangeResult, String> {
        if self.exact {
            let (diff, rows, next) = self.locked(Target::Range(range, limit)).await?;
            return Ok(RangeResult { rows, next, diff });
        }
        let err = |e: mysql_async::Error| e.to_string();
        let prows = read_range(self.p, self.plan, range, limit, "")
            .await
            .map_err(err)?;
        let next = next_key(self.plan, &prows, limit);
        let srows = read_range(self.s, self.plan, &secondary_range(range, &next), None, "")
            .await
            .map_err(err)?;
        let suspects = self.suspects(&prows, &srows);
        let diff = if suspects.is_empty() {
            Diff::default()
        } else {
            self.recheck(suspects).await?
        };
        Ok(RangeResult {
            rows: prows.len(),
            next,
            diff,
        })
    }

    /// Key values of the rows that differ between the two reads.
    fn suspects(&self, prows: &[Row], srows: &[Row]) -> Vec<Vec<Value>> {
        let (fix, delete) = classify(self.plan, prows, srows, &mut Diff::default());
        fix.into_iter()
            .chain(delete)
            .map(|r| key_values(self.plan, r))
            .collect()
    }

    /// Re-reads `keys` with the primary's rows locked and the mirror settled;
    /// returns what still differs (repaired when `repair`).
    async fn recheck(&mut self, mut keys: Vec<Vec<Value>>) -> Result<Diff, String> {
        let rounds = if self.sync.exact() || self.repair {
            1
        } else {
            BLIND_ROUNDS
        };
        let rechecked = keys.len() as u64;
        let mut diff = Diff::default();
        for round in 0..rounds {
            if round > 0 {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            // A deadlock or lock wait with the application's transactions
            // (or the applier's) rolls the attempt back: try again.
            diff = self.locked(Target::Keys(&keys)).await?.0;
            if diff.is_empty() {
                break;
            }
            let still: Vec<&String> = diff
                .missing
                .iter()
                .chain(&diff.changed)
                .chain(&diff.extra)
                .collect();
            keys.retain(|k| still.contains(&&key_string(k)));
        }
        diff.rechecked = rechecked;
        Ok(diff)
    }

    /// Compares `target` with the primary's rows locked and the mirror
    /// settled (repaired when `repair`), trying again when the server rolls
    /// an attempt back: (differences, primary rows, the range's next key).
    async fn locked(
        &mut self,
        target: Target<'_>,
    ) -> Result<(Diff, usize, Option<Vec<Value>>), String> {
        let mut attempt = 0;
        loop {
            match self.locked_once(target).await {
                Ok(r) => return Ok(r),
                Err(Attempt::Again(e)) if attempt < LOCK_RETRIES => {
                    attempt += 1;
                    tracing::debug!(error = %e, attempt, "re-check rolled back; trying again");
                    tokio::time::sleep(lock_retry_pause(attempt)).await;
                }
                Err(Attempt::Again(e) | Attempt::Fail(e)) => return Err(e),
            }
        }
    }

    async fn locked_once(
        &mut self,
        target: Target<'_>,
    ) -> Result<(Diff, usize, Option<Vec<Value>>), Attempt> {
        let err = Attempt::from;
        let Checker {
            p,
            s,
            plan,
            sync,
            repair,
            settle_timeout,
            ..
        } = self;
        let plan: &TablePlan = plan;
        let opts = TxOpts::default()
            .with_isolation_level(IsolationLevel::RepeatableRead)
            .clone();
        // No primary lock is held while a DDL is applied (see
        // `MirrorSync::wait_for_ddl`): wait first, lock, and if a DDL was
        // journaled meanwhile, let go and wait again.
        let deadline = tokio::time::Instant::now() + *settle_timeout;
        let (ptx, prows) = loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            sync.wait_for_ddl(left)
                .await
                .map_err(|e| Attempt::Fail(settle_error(e)))?;
            let mut ptx = p.start_transaction(opts.clone()).await.map_err(err)?;
            let prows = match target {
                Target::Keys(keys) => select_keys(&mut ptx, plan, keys, SHARED).await,
                Target::Range(range, limit) => {
                    read_range(&mut ptx, plan, range, limit, SHARED).await
                }
            }
            .map_err(err)?;
            match sync.ddl_pending().await {
                Ok(false) => break (ptx, prows),
                Ok(true) => ptx.rollback().await.map_err(err)?,
                Err(e) => {
                    let _ = ptx.rollback().await;
                    return Err(Attempt::Fail(settle_error(e)));
                }
            }
        };
        if let Err(e) = sync.settle(*settle_timeout).await {
            let _ = ptx.rollback().await;
            return Err(Attempt::Fail(settle_error(e)));
        }
        let mut diff = Diff::default();
        let result = async {
            let next = next_key(plan, &prows, target.limit());
            if !*repair {
                let srows = read_secondary(*s, plan, target, &next, "")
                    .await
                    .map_err(err)?;
                classify(plan, &prows, &srows, &mut diff);
                return Ok(());
            }
            let mut stx = s.start_transaction(TxOpts::default()).await.map_err(err)?;
            let srows = read_secondary(&mut stx, plan, target, &next, " FOR UPDATE")
                .await
                .map_err(err)?;
            let (fix, delete) = classify(plan, &prows, &srows, &mut diff);
            let (t, cols) = (&plan.quoted, &plan.column_list);
            let marks = vec!["?"; plan.columns.len()].join(", ");
            for r in fix {
                let values: Vec<Value> = (0..plan.columns.len())
                    .map(|c| r.as_ref(c).cloned().unwrap_or(Value::NULL))
                    .collect();
                stx.exec_drop(
                    format!("REPLACE INTO {t} ({cols}) VALUES ({marks})"),
                    values,
                )
                .await
                .map_err(err)?;
                diff.repaired += 1;
            }
            let key_match = plan
                .primary_key
                .iter()
                .map(|c| format!("{} <=> ?", quote(c)))
                .collect::<Vec<_>>()
                .join(" AND ");
            for r in delete {
                stx.exec_drop(
                    format!("DELETE FROM {t} WHERE {key_match}"),
                    key_values(plan, r),
                )
                .await
                .map_err(err)?;
                diff.repaired += 1;
            }
            stx.commit().await.map_err(err)
        }
        .await;
        // Releases the primary's locks whatever happened.
        let _ = ptx.rollback().await;
        result.map(|_| (diff, prows.len(), next_key(plan, &prows, target.limit())))
    }
}

impl Target<'_> {
    fn limit(self) -> Option<usize> {
        match self {
            Target::Range(_, limit) => limit,
            Target::Keys(_) => None,
        }
    }
}

/// The secondary's rows of a locked comparison (`next`: where the primary's
/// rows of a range ended).
async fn read_secondary<Q: Queryable>(
    c: &mut Q,
    plan: &TablePlan,
    target: Target<'_>,
    next: &Option<Vec<Value>>,
    lock: &str,
) -> Result<Vec<Row>, mysql_async::Error> {
    match target {
        Target::Keys(keys) => select_keys(c, plan, keys, lock).await,
        Target::Range(range, _) => {
            read_range(c, plan, &secondary_range(range, next), None, lock).await
        }
    }
}

/// The primary's shared lock on the rows (and, for a range, its gaps).
const SHARED: &str = " LOCK IN SHARE MODE";

/// The last key of a range's primary rows when `limit` cut it short.
fn next_key(plan: &TablePlan, prows: &[Row], limit: Option<usize>) -> Option<Vec<Value>> {
    match limit {
        Some(n) if prows.len() == n => prows.last().map(|r| key_values(plan, r)),
        _ => None,
    }
}

/// The secondary's side of a range ends where the primary's rows ended, so
/// rows only the secondary has are found in the chunk they fall in.
fn secondary_range(range: &Range, next: &Option<Vec<Value>>) -> Range {
    Range {
        lo: range.lo.clone(),
        hi: next.clone().or_else(|| range.hi.clone()),
    }
}

/// Sorts differing rows into the diff; returns the primary rows to write
/// and the secondary rows to delete.
fn classify<'r>(
    plan: &TablePlan,
    prows: &'r [Row],
    srows: &'r [Row],
    diff: &mut Diff,
) -> (Vec<&'r Row>, Vec<&'r Row>) {
    let (pm, sm) = (keyed(plan, prows), keyed(plan, srows));
    let (mut fix, mut delete) = (Vec::new(), Vec::new());
    for (k, (h, i)) in &pm {
        match sm.get(k) {
            None => {
                diff.missing.push(k.clone());
                fix.push(&prows[*i]);
            }
            Some((h2, _)) if h2 != h => {
                diff.changed.push(k.clone());
                fix.push(&prows[*i]);
            }
            Some(_) => {}
        }
    }
    for (k, (_, i)) in &sm {
        if !pm.contains_key(k) {
            diff.extra.push(k.clone());
            delete.push(&srows[*i]);
        }
    }
    (fix, delete)
}

/// Rows by key string → (normalized hash, index).
fn keyed(plan: &TablePlan, rows: &[Row]) -> BTreeMap<String, (u64, usize)> {
    let kinds: Vec<Kind> = rows
        .first()
        .map(|r| {
            r.columns_ref()
                .iter()
                .map(|c| Kind::of(c.column_type()))
                .collect()
        })
        .unwrap_or_default();
    rows.iter()
        .enumerate()
        .map(|(i, r)| (key_string(&key_values(plan, r)), (hash_row(&kinds, r), i)))
        .collect()
}

/// The primary-key values of a row.
pub fn key_values(plan: &TablePlan, r: &Row) -> Vec<Value> {
    plan.key_positions
        .iter()
        .map(|i| r.as_ref(*i).cloned().unwrap_or(Value::NULL))
        .collect()
}

/// Attempts of a re-check rolled back by a deadlock or lock wait timeout.
const LOCK_RETRIES: u32 = 10;

/// How a re-check attempt failed.
enum Attempt {
    /// Rolled back by the server (deadlock, lock wait timeout): try again.
    Again(String),
    Fail(String),
}

impl From<mysql_async::Error> for Attempt {
    fn from(e: mysql_async::Error) -> Self {
        if rolled_back_by_locks(&e) {
            Attempt::Again(e.to_string())
        } else {
            Attempt::Fail(e.to_string())
        }
    }
}

/// The server rolled the statement's transaction back for a deadlock or a
/// lock wait timeout: the same work can simply be tried again.
pub(crate) fn rolled_back_by_locks(e: &mysql_async::Error) -> bool {
    matches!(e, mysql_async::Error::Server(s) if s.code == 1213 || s.code == 1205)
}

/// How long to wait before the `attempt`th try after such a rollback.
pub(crate) fn lock_retry_pause(attempt: u32) -> Duration {
    Duration::from_millis(20 << attempt.min(5))
}

fn settle_error(e: SyncError) -> String {
    format!("cannot re-check differences against writes in flight: {e}")
}

/// Rows of `range` in key order, at most `limit`, with `suffix` (a
/// locking clause).
pub async fn read_range<Q: Queryable>(
    c: &mut Q,
    plan: &TablePlan,
    range: &Range,
    limit: Option<usize>,
    suffix: &str,
) -> Result<Vec<Row>, mysql_async::Error> {
    let (t, cols, keys) = (&plan.quoted, &plan.column_list, &plan.key_list);
    let marks = vec!["?"; plan.primary_key.len()].join(", ");
    let mut cond = Vec::new();
    let mut params: Vec<Value> = Vec::new();
    if let Some((lo, inclusive)) = &range.lo {
        let op = if *inclusive { ">=" } else { ">" };
        cond.push(format!("({keys}) {op} ({marks})"));
        params.extend(lo.iter().cloned());
    }
    if let Some(hi) = &range.hi {
        cond.push(format!("({keys}) <= ({marks})"));
        params.extend(hi.iter().cloned());
    }
    let where_ = if cond.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", cond.join(" AND "))
    };
    let limit = limit.map(|n| format!(" LIMIT {n}")).unwrap_or_default();
    c.exec(
        format!("SELECT {cols} FROM {t} {where_} ORDER BY {keys}{limit}{suffix}"),
        params,
    )
    .await
}

/// Rows with the given keys (any order), with `suffix` (a locking clause).
async fn select_keys<Q: Queryable>(
    c: &mut Q,
    plan: &TablePlan,
    keys: &[Vec<Value>],
    suffix: &str,
) -> Result<Vec<Row>, mysql_async::Error> {
    let (t, cols, key_list) = (&plan.quoted, &plan.column_list, &plan.key_list);
    let one = if plan.primary_key.len() == 1 {
        "?".to_string()
    } else {
        format!("({})", vec!["?"; plan.primary_key.len()].join(", "))
    };
    let target = if plan.primary_key.len() == 1 {
        key_list.clone()
    } else {
        format!("({key_list})")
    };
    let mut out = Vec::new();
    for batch in keys.chunks(KEYS_PER_STATEMENT) {
        let list = vec![one.as_str(); batch.len()].join(", ");
        let params: Vec<Value> = batch.iter().flatten().cloned().collect();
        let rows: Vec<Row> = c
            .exec(
                format!("SELECT {cols} FROM {t} WHERE {target} IN ({list}){suffix}"),
                params,
            )
            .await?;
        out.extend(rows);
    }
    Ok(out)
}

fn value_bytes(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::NULL => None,
        Value::Bytes(b) => Some(b.clone()),
        other => Some(other.as_sql(true).into_bytes()),
    }
}

fn hash_row(kinds: &[Kind], r: &Row) -> u64 {
    let owned: Vec<Option<Vec<u8>>> = (0..r.len())
        .map(|i| r.as_ref(i).and_then(value_bytes))
        .collect();
    let refs: Vec<Option<&[u8]>> = owned.iter().map(|v| v.as_deref()).collect();
    normalize::row_hash(kinds, &refs)
}

/// A key as reports show it: values joined by ','.
pub fn key_string(key: &[Value]) -> String {
    key.iter()
        .map(|v| match v {
            Value::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
            Value::NULL => "NULL".into(),
            other => other.as_sql(true),
        })
        .collect::<Vec<_>>()
        .join(",")
}
