//! `tandem verify`: proves primary and secondary hold the same rows, table by
//! table, and optionally repairs the secondary.
//!
//! Per table: row counts; then the table is walked in primary-key order in
//! chunks (keyset pagination bounded by the primary's keys, so rows that
//! exist only on the secondary are found too); each chunk is hashed from
//! normalized values (`normalize`), and a chunk whose hashes differ is
//! diffed row by row: missing, extra and changed rows with their keys.
//! `--repair` writes the primary's rows over the secondary's (REPLACE),
//! deletes extras, then verifies the table again.
//!
//! Not yet: re-checking a mismatch after the mirror applied in-flight writes
//! (needs the dual-write capture); until then verify is exact only while
//! nothing writes, and the report says so.

pub mod normalize;

use crate::config::Config;
use crate::schema::{self, quote};
use mysql_async::prelude::*;
use mysql_async::{Conn, Row, Value};
use normalize::Kind;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Instant;

#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// Only these tables (default: every base table the rules mirror).
    pub tables: Option<Vec<String>>,
    pub repair: bool,
    pub chunk_size: usize,
    /// Keys listed per kind of difference, at most.
    pub max_keys: usize,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        Self {
            tables: None,
            repair: false,
            chunk_size: 5000,
            max_keys: 100,
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
    pub fn identical(&self) -> bool {
        self.error.is_none()
            && self.missing_total == 0
            && self.extra_total == 0
            && self.changed_total == 0
            && self.rows_primary == self.rows_secondary
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub primary: String,
    pub secondary: String,
    pub tables: Vec<TableReport>,
    pub identical: bool,
    pub errors: bool,
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
}

/// Verifies (and with `repair`, repairs) every selected table.
pub async fn run(cfg: &Config, opts: &VerifyOptions) -> Result<Report, VerifyError> {
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
    if opts.repair {
        s.query_drop("SET SESSION foreign_key_checks = 0")
            .await
            .map_err(be(&scfg.name))?;
    }
    let mut reports = Vec::new();
    for table in tables {
        let started = Instant::now();
        let mut r = match verify_table(&mut p, &mut s, &table, opts, false).await {
            Ok(r) => r,
            Err(e) => TableReport {
                table: table.clone(),
                error: Some(e),
                ..Default::default()
            },
        };
        if opts.repair && r.error.is_none() && !r.identical() {
            match verify_table(&mut p, &mut s, &table, opts, true).await {
                Ok(fixed) => {
                    // Report what was found, then the state after repair.
                    let after = verify_table(&mut p, &mut s, &table, opts, false).await;
                    r.repaired = fixed.repaired;
                    if let Ok(after) = after {
                        r.rows_secondary = after.rows_secondary;
                        if !after.identical() {
                            r.error = Some("differences remain after repair".into());
                        } else {
                            r.missing_total = 0;
                            r.extra_total = 0;
                            r.changed_total = 0;
                        }
                    }
                }
                Err(e) => r.error = Some(format!("repair failed: {e}")),
            }
        }
        r.seconds = started.elapsed().as_secs_f64();
        reports.push(r);
    }
    let identical = reports.iter().all(|r| r.identical());
    let errors = reports.iter().any(|r| r.error.is_some());
    let _ = p.disconnect().await;
    let _ = s.disconnect().await;
    Ok(Report {
        primary: pcfg.name,
        secondary: secondary_name,
        tables: reports,
        identical,
        errors,
    })
}

async fn verify_table(
    p: &mut Conn,
    s: &mut Conn,
    table: &str,
    opts: &VerifyOptions,
    repair: bool,
) -> Result<TableReport, String> {
    let err = |e: mysql_async::Error| e.to_string();
    let plan = schema::TablePlan::load(p, table).await?;
    let (t, cols, pk) = (&plan.quoted, &plan.columns, &plan.primary_key);
    let (col_list, pk_list, pk_pos) = (&plan.column_list, &plan.key_list, &plan.key_positions);
    let marks = vec!["?"; pk.len()].join(", ");
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

    let mut lo: Option<Vec<Value>> = None;
    loop {
        let after = if lo.is_some() {
            format!("WHERE ({pk_list}) > ({marks})")
        } else {
            String::new()
        };
        let params: Vec<Value> = lo.clone().unwrap_or_default();
        let prows: Vec<Row> = p
            .exec(
                format!(
                    "SELECT {col_list} FROM {t} {after} ORDER BY {pk_list} LIMIT {}",
                    opts.chunk_size
                ),
                params.clone(),
            )
            .await
            .map_err(err)?;
        let hi: Option<Vec<Value>> = if prows.len() == opts.chunk_size {
            prows.last().map(|r| {
                pk_pos
                    .iter()
                    .map(|i| r.as_ref(*i).cloned().unwrap_or(Value::NULL))
                    .collect()
            })
        } else {
            None // last chunk: the secondary's side is open-ended
        };
        let mut cond = Vec::new();
        let mut sparams = params.clone();
        if lo.is_some() {
            cond.push(format!("({pk_list}) > ({marks})"));
        }
        if let Some(hi) = &hi {
            cond.push(format!("({pk_list}) <= ({marks})"));
            sparams.extend(hi.iter().cloned());
        }
        let where_ = if cond.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", cond.join(" AND "))
        };
        let srows: Vec<Row> = s
            .exec(
                format!("SELECT {col_list} FROM {t} {where_} ORDER BY {pk_list}"),
                sparams,
            )
            .await
            .map_err(err)?;
        report.chunks += 1;
        report.rows_checked += prows.len() as u64;
        let kinds: Vec<Kind> = prows
            .first()
            .or(srows.first())
            .map(|r| {
                r.columns_ref()
                    .iter()
                    .map(|c| Kind::of(c.column_type()))
                    .collect()
            })
            .unwrap_or_default();
        let keyed = |rows: &[Row]| -> BTreeMap<String, (u64, usize)> {
            rows.iter()
                .enumerate()
                .map(|(i, r)| (row_key(r, pk_pos), (hash_row(&kinds, r), i)))
                .collect()
        };
        let (pk_map, sk_map) = (keyed(&prows), keyed(&srows));
        let same = pk_map.len() == sk_map.len()
            && pk_map
                .iter()
                .zip(&sk_map)
                .all(|(a, b)| a.0 == b.0 && a.1 .0 == b.1 .0);
        if !same {
            report.divergent_chunks += 1;
            let mut fix_rows: Vec<usize> = Vec::new();
            let mut del_rows: Vec<usize> = Vec::new();
            for (k, (h, i)) in &pk_map {
                match sk_map.get(k) {
                    None => {
                        report.missing_total += 1;
                        push_key(&mut report.missing, k, opts.max_keys);
                        fix_rows.push(*i);
                    }
                    Some((h2, _)) if h2 != h => {
                        report.changed_total += 1;
                        push_key(&mut report.changed, k, opts.max_keys);
                        fix_rows.push(*i);
                    }
                    Some(_) => {}
                }
            }
            for (k, (_, i)) in &sk_map {
                if !pk_map.contains_key(k) {
                    report.extra_total += 1;
                    push_key(&mut report.extra, k, opts.max_keys);
                    del_rows.push(*i);
                }
            }
            if repair {
                let placeholders = vec!["?"; cols.len()].join(", ");
                for i in fix_rows {
                    let values: Vec<Value> = (0..cols.len())
                        .map(|c| prows[i].as_ref(c).cloned().unwrap_or(Value::NULL))
                        .collect();
                    s.exec_drop(
                        format!("REPLACE INTO {t} ({col_list}) VALUES ({placeholders})"),
                        values,
                    )
                    .await
                    .map_err(err)?;
                    report.repaired += 1;
                }
                let key_match = pk
                    .iter()
                    .map(|c| format!("{} <=> ?", quote(c)))
                    .collect::<Vec<_>>()
                    .join(" AND ");
                for i in del_rows {
                    let key: Vec<Value> = pk_pos
                        .iter()
                        .map(|c| srows[i].as_ref(*c).cloned().unwrap_or(Value::NULL))
                        .collect();
                    s.exec_drop(format!("DELETE FROM {t} WHERE {key_match}"), key)
                        .await
                        .map_err(err)?;
                    report.repaired += 1;
                }
            }
        }
        match hi {
            Some(hi) => lo = Some(hi),
            None => break,
        }
    }
    Ok(report)
}

fn push_key(list: &mut Vec<String>, key: &str, max: usize) {
    if list.len() < max {
        list.push(key.to_string());
    }
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

fn row_key(r: &Row, pk_pos: &[usize]) -> String {
    pk_pos
        .iter()
        .map(|i| match r.as_ref(*i) {
            Some(Value::Bytes(b)) => String::from_utf8_lossy(b).into_owned(),
            Some(Value::NULL) | None => "NULL".into(),
            Some(other) => other.as_sql(true),
        })
        .collect::<Vec<_>>()
        .join(",")
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
            "  {:<30} {state}\n    rows {} / {} (primary / secondary), {} checked in {} chunks ({} divergent), {:.2}s\n",
            t.table, t.rows_primary, t.rows_secondary, t.rows_checked, t.chunks, t.divergent_chunks, t.seconds
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
    out.push_str(if report.errors {
        "result: ERROR\n"
    } else if report.identical {
        "result: identical\n"
    } else {
        "result: DIVERGENT\n"
    });
    out.push_str(
        "note: writes in flight during the check can show as differences until mirroring re-checks them (dual-write milestone)\n",
    );
    out
}
