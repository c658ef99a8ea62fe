//! `tandem verify` against a PostgreSQL secondary: every row compared by
//! canonical values (`canon`), every difference named by its key, and
//! `--repair` makes PostgreSQL equal.
//!
//! The walk reads MySQL in primary-key chunks and looks the chunk's keys up
//! in PostgreSQL (the engines may order string keys differently, so ranges
//! are not compared); a second walk over PostgreSQL's keys finds rows only
//! PostgreSQL has. Nothing mirrors into PostgreSQL yet, so no write is in
//! flight to settle: a difference seen is read again once from both sides
//! after a pause, and what persists is reported.

use super::canon;
use super::mapping::{self, Column, Kind, TableMap};
use super::{describe, encode, quote_ident, quote_literal};
use crate::config::{BackendConfig, Config};
use crate::verify::{Report, TableReport, VerifyOptions};
use bytes::BytesMut;
use futures_util::SinkExt;
use mysql_async::prelude::*;
use mysql_async::{Conn, Row, Value};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tokio_postgres::Client;

/// A row in canonical form (one entry per column).
type Canon = Vec<Option<String>>;

pub async fn run(cfg: &Config, opts: &VerifyOptions) -> Result<Report, String> {
    let sb = cfg
        .postgres_secondary()
        .ok_or("verify against PostgreSQL needs a PostgreSQL secondary")?;
    let mut p = super::copy::connect_primary(cfg)
        .await
        .map_err(|e| e.to_string())?;
    let mut pg = super::connect(sb).await?;
    let tables = match crate::schema::select_tables(&mut p, cfg, opts.tables.as_deref())
        .await
        .map_err(|e| e.to_string())?
    {
        Ok(t) => t,
        Err(unknown) => {
            return Err(format!(
                "unknown table(s) on the primary: {}",
                unknown.join(", ")
            ))
        }
    };
    let mut reports = Vec::new();
    for table in tables {
        let started = Instant::now();
        let mut report = TableReport {
            table: table.clone(),
            ..Default::default()
        };
        if let Err(e) = verify_table(&mut p, &mut pg, sb, &table, cfg, opts, &mut report).await {
            report.error = Some(e);
        }
        report.seconds = started.elapsed().as_secs_f64();
        reports.push(report);
    }
    let _ = p.disconnect().await;
    Ok(Report {
        primary: cfg.primary_backend().name.clone(),
        secondary: sb.name.clone(),
        identical: reports.iter().all(|r| r.identical()),
        errors: reports.iter().any(|r| r.error.is_some()),
        tables: reports,
        in_flight: "PostgreSQL secondary: nothing is mirrored into it yet; a difference seen \
                    was read again from both sides after a pause"
            .into(),
        finished_at_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        objects: vec![],
    })
}

/// One table on both sides: its mapping, and how to read and address rows.
struct Sides<'a> {
    map: TableMap,
    pg_table: String,
    pg_select: String,
    /// How MySQL walks the table (column order = `map.columns`).
    plan: crate::schema::TablePlan,
    sb: &'a BackendConfig,
}

async fn verify_table(
    p: &mut Conn,
    pg: &mut Client,
    sb: &BackendConfig,
    table: &str,
    cfg: &Config,
    opts: &VerifyOptions,
    report: &mut TableReport,
) -> Result<(), String> {
    let map = mapping::load_for(p, cfg, table).await?;
    let sides = Sides {
        pg_table: super::qualified(sb, table),
        pg_select: map
            .columns
            .iter()
            .map(|c| canon::pg_select(c.kind, &quote_ident(&c.name)))
            .collect::<Vec<_>>()
            .join(", "),
        plan: map.plan(),
        map,
        sb,
    };
    let pgerr = |e: tokio_postgres::Error| describe(&e);
    report.rows_primary = p
        .query_first(format!("SELECT COUNT(*) FROM {}", sides.plan.quoted))
        .await
        .map_err(|e| e.to_string())?
        .unwrap_or(0);
    report.rows_secondary = pg
        .query_one(&format!("SELECT COUNT(*) FROM {}", sides.pg_table), &[])
        .await
        .map_err(pgerr)?
        .get::<_, i64>(0) as u64;
    let mut suspects: Vec<Vec<String>> = Vec::new();
    let mut last: Option<String> = None;
    // Keys both engines order alike are compared range against range;
    // string keys (collations differ) are looked up, and rows only
    // PostgreSQL has are found by a walk over its keys.
    let ordered = sides.ordered_keys();
    let mut lo: Option<Vec<String>> = None;
    loop {
        let rows =
            super::copy::read_chunk(p, &sides.plan, last.as_deref(), opts.chunk_size).await?;
        report.chunks += 1;
        report.rows_checked += rows.len() as u64;
        let mine = sides.canon_mysql(&rows);
        let hi = match rows.last() {
            Some(r) if rows.len() == opts.chunk_size => Some(sides.canon_key(r)),
            _ => None,
        };
        let theirs = if ordered {
            sides.pg_range(pg, lo.as_deref(), hi.as_deref()).await?
        } else {
            let keys: Vec<Vec<String>> = mine.keys().cloned().collect();
            sides.pg_rows(pg, &keys).await?
        };
        let before = suspects.len();
        for (k, row) in &mine {
            if theirs.get(k) != Some(row) {
                suspects.push(k.clone());
            }
        }
        if ordered {
            suspects.extend(theirs.keys().filter(|k| !mine.contains_key(*k)).cloned());
        }
        lo = hi;
        if suspects.len() > before {
            report.divergent_chunks += 1;
        }
        if rows.len() < opts.chunk_size {
            break;
        }
        last = rows
            .last()
            .map(|r| super::copy::key_literals(&sides.plan, r));
    }
    // Rows only PostgreSQL has (string keys): its keys, in its order,
    // looked up in MySQL.
    let mut pg_last: Option<Vec<String>> = None;
    if !ordered {
        loop {
            let keys = sides
                .pg_keys(pg, pg_last.as_deref(), opts.chunk_size)
                .await?;
            let found = sides.mysql_rows(p, &keys).await?;
            suspects.extend(keys.iter().filter(|k| !found.contains_key(*k)).cloned());
            if keys.len() < opts.chunk_size {
                break;
            }
            pg_last = keys.last().cloned();
        }
    }
    suspects.sort();
    suspects.dedup();
    if suspects.is_empty() {
        return Ok(());
    }
    // Read both sides again after a pause: a write that reached one side
    // between the two reads is not a difference.
    tokio::time::sleep(Duration::from_millis(300)).await;
    report.rechecked = suspects.len() as u64;
    let mine = sides.mysql_rows(p, &suspects).await?;
    let theirs = sides.pg_rows(pg, &suspects).await?;
    let (mut fix, mut delete) = (Vec::new(), Vec::new());
    for k in &suspects {
        let shown = k.join(",");
        match (mine.get(k), theirs.get(k)) {
            (Some(_), None) => {
                report.missing_total += 1;
                push_capped(&mut report.missing, shown, opts.max_keys);
                fix.push(k.clone());
            }
            (None, Some(_)) => {
                report.extra_total += 1;
                push_capped(&mut report.extra, shown, opts.max_keys);
                delete.push(k.clone());
            }
            (Some(a), Some(b)) if a != b => {
                report.changed_total += 1;
                push_capped(&mut report.changed, shown, opts.max_keys);
                fix.push(k.clone());
            }
            _ => {}
        }
    }
    if opts.repair && !(fix.is_empty() && delete.is_empty()) {
        report.repaired = sides.repair(p, pg, &fix, &delete).await?;
        report.missing_total = 0;
        report.extra_total = 0;
        report.changed_total = 0;
        report.missing.clear();
        report.extra.clear();
        report.changed.clear();
    }
    Ok(())
}

fn push_capped(list: &mut Vec<String>, key: String, max: usize) {
    if list.len() < max {
        list.push(key);
    }
}

/// Keys looked up per statement.
const KEYS_PER_LOOKUP: usize = 1000;

impl Sides<'_> {
    fn key_columns(&self) -> impl Iterator<Item = &Column> {
        self.plan
            .key_positions
            .iter()
            .map(|i| &self.map.columns[*i])
    }

    /// Every key column orders the same on both engines: numbers, dates
    /// and times, bytes (bytewise), ENUMs (declaration order).
    fn ordered_keys(&self) -> bool {
        self.key_columns()
            .all(|c| !matches!(c.kind, Kind::Text | Kind::Set | Kind::Json | Kind::Bit(_)))
    }

    /// A MySQL row's key in canonical form.
    fn canon_key(&self, r: &Row) -> Vec<String> {
        self.key_columns()
            .zip(&self.plan.key_positions)
            .map(|(c, i)| {
                canon::mysql(c.kind, r.as_ref(*i).unwrap_or(&Value::NULL)).unwrap_or_default()
            })
            .collect()
    }

    /// PostgreSQL's rows with keys after `lo` up to `hi` (open ends: None).
    async fn pg_range(
        &self,
        pg: &Client,
        lo: Option<&[String]>,
        hi: Option<&[String]>,
    ) -> Result<BTreeMap<Vec<String>, Canon>, String> {
        let cols = self
            .key_columns()
            .map(|c| quote_ident(&c.name))
            .collect::<Vec<_>>()
            .join(", ");
        let lits = |k: &[String]| {
            self.key_columns()
                .zip(k)
                .map(|(c, v)| self.pg_literal(c, v))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut cond = Vec::new();
        if let Some(k) = lo {
            cond.push(format!("({cols}) > ({})", lits(k)));
        }
        if let Some(k) = hi {
            cond.push(format!("({cols}) <= ({})", lits(k)));
        }
        let filter = if cond.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", cond.join(" AND "))
        };
        let sql = format!("SELECT {} FROM {} {filter}", self.pg_select, self.pg_table);
        let rows = pg.query(&sql, &[]).await.map_err(|e| describe(&e))?;
        Ok(self.canon_pg(&rows))
    }

    /// PostgreSQL rows (read with `pg_select`) by canonical key.
    fn canon_pg(&self, rows: &[tokio_postgres::Row]) -> BTreeMap<Vec<String>, Canon> {
        self.canon_rows(rows, pg_value)
    }

    /// MySQL rows by canonical key.
    fn canon_mysql(&self, rows: &[Row]) -> BTreeMap<Vec<String>, Canon> {
        self.canon_rows(rows, |kind, r, i| {
            canon::mysql(kind, r.as_ref(i).unwrap_or(&Value::NULL))
        })
    }

    /// Either side's rows by canonical key, `value` reading column `i`
    /// of a row canonically.
    fn canon_rows<R>(
        &self,
        rows: &[R],
        value: impl Fn(Kind, &R, usize) -> Option<String>,
    ) -> BTreeMap<Vec<String>, Canon> {
        rows.iter()
            .map(|r| {
                let canon: Canon = self
                    .map
                    .columns
                    .iter()
                    .enumerate()
                    .map(|(i, c)| value(c.kind, r, i))
                    .collect();
                let key = self
                    .plan
                    .key_positions
                    .iter()
                    .map(|i| canon[*i].clone().unwrap_or_default())
                    .collect();
                (key, canon)
            })
            .collect()
    }

    /// MySQL's rows with these (canonical) keys.
    async fn mysql_rows(
        &self,
        p: &mut Conn,
        keys: &[Vec<String>],
    ) -> Result<BTreeMap<Vec<String>, Canon>, String> {
        let mut out = BTreeMap::new();
        for batch in keys.chunks(KEYS_PER_LOOKUP) {
            let rows = self.mysql_raw(p, batch).await?;
            out.extend(self.canon_mysql(&rows));
        }
        Ok(out)
    }

    async fn mysql_raw(&self, p: &mut Conn, keys: &[Vec<String>]) -> Result<Vec<Row>, String> {
        if keys.is_empty() {
            return Ok(vec![]);
        }
        let filter = self.in_list(keys, crate::sql::quote, |c, v| mysql_literal(c.kind, v));
        p.exec(
            format!(
                "SELECT {} FROM {} WHERE {filter}",
                self.plan.column_list, self.plan.quoted
            ),
            (),
        )
        .await
        .map_err(|e| e.to_string())
    }

    /// `(key columns) IN (...)` for PostgreSQL.
    fn pg_key_filter(&self, keys: &[Vec<String>]) -> String {
        self.in_list(keys, quote_ident, |c, v| self.pg_literal(c, v))
    }

    /// `(key columns) IN ((values), ...)` with an engine's quoting.
    fn in_list(
        &self,
        keys: &[Vec<String>],
        quote: fn(&str) -> String,
        literal: impl Fn(&Column, &str) -> String,
    ) -> String {
        let cols = self
            .key_columns()
            .map(|c| quote(&c.name))
            .collect::<Vec<_>>()
            .join(", ");
        let list = keys
            .iter()
            .map(|k| {
                let lits: Vec<String> = self
                    .key_columns()
                    .zip(k)
                    .map(|(c, v)| literal(c, v))
                    .collect();
                format!("({})", lits.join(", "))
            })
            .collect::<Vec<_>>()
            .join(", ");
        format!("({cols}) IN ({list})")
    }

    /// PostgreSQL's rows with these keys, in canonical form.
    async fn pg_rows(
        &self,
        pg: &Client,
        keys: &[Vec<String>],
    ) -> Result<BTreeMap<Vec<String>, Canon>, String> {
        let mut out = BTreeMap::new();
        for batch in keys.chunks(KEYS_PER_LOOKUP) {
            if batch.is_empty() {
                continue;
            }
            let sql = format!(
                "SELECT {} FROM {} WHERE {}",
                self.pg_select,
                self.pg_table,
                self.pg_key_filter(batch)
            );
            let rows = pg.query(&sql, &[]).await.map_err(|e| describe(&e))?;
            out.extend(self.canon_pg(&rows));
        }
        Ok(out)
    }

    /// PostgreSQL's keys after `after`, in its key order.
    async fn pg_keys(
        &self,
        pg: &Client,
        after: Option<&[String]>,
        limit: usize,
    ) -> Result<Vec<Vec<String>>, String> {
        let cols: Vec<&Column> = self.key_columns().collect();
        let list = cols
            .iter()
            .map(|c| quote_ident(&c.name))
            .collect::<Vec<_>>()
            .join(", ");
        let select = cols
            .iter()
            .map(|c| canon::pg_select(c.kind, &quote_ident(&c.name)))
            .collect::<Vec<_>>()
            .join(", ");
        let filter = after
            .map(|k| {
                let lits: Vec<String> = cols
                    .iter()
                    .zip(k)
                    .map(|(c, v)| self.pg_literal(c, v))
                    .collect();
                format!("WHERE ({list}) > ({})", lits.join(", "))
            })
            .unwrap_or_default();
        let sql = format!(
            "SELECT {select} FROM {} {filter} ORDER BY {list} LIMIT {limit}",
            self.pg_table
        );
        let rows = pg.query(&sql, &[]).await.map_err(|e| describe(&e))?;
        Ok(rows
            .iter()
            .map(|r| {
                cols.iter()
                    .enumerate()
                    .map(|(i, c)| pg_value(c.kind, r, i).unwrap_or_default())
                    .collect()
            })
            .collect())
    }

    /// A canonical key value as a PostgreSQL literal of the column's type.
    fn pg_literal(&self, c: &Column, v: &str) -> String {
        let ty = match c.kind {
            Kind::Enum => format!(
                "{}.{}",
                quote_ident(super::schema_of(self.sb)),
                quote_ident(&self.map.enum_type(&c.name))
            ),
            _ => c.pg_type.clone(),
        };
        let text = match c.kind {
            Kind::Bytea => format!("\\x{v}"),
            Kind::Interval => format!("{v} microseconds"),
            _ => v.to_string(),
        };
        format!("CAST({} AS {ty})", quote_literal(&text))
    }

    /// Makes PostgreSQL's rows with `fix` keys MySQL's (deleted, then
    /// copied again) and deletes the `delete` ones, in one transaction.
    async fn repair(
        &self,
        p: &mut Conn,
        pg: &mut Client,
        fix: &[Vec<String>],
        delete: &[Vec<String>],
    ) -> Result<u64, String> {
        let pgerr = |e: tokio_postgres::Error| describe(&e);
        let tx = pg.transaction().await.map_err(pgerr)?;
        let mut n = 0;
        for batch in fix
            .chunks(KEYS_PER_LOOKUP)
            .chain(delete.chunks(KEYS_PER_LOOKUP))
        {
            tx.execute(
                &format!(
                    "DELETE FROM {} WHERE {}",
                    self.pg_table,
                    self.pg_key_filter(batch)
                ),
                &[],
            )
            .await
            .map_err(pgerr)?;
        }
        n += delete.len() as u64;
        let cols = self
            .map
            .columns
            .iter()
            .map(|c| quote_ident(&c.name))
            .collect::<Vec<_>>()
            .join(", ");
        for batch in fix.chunks(KEYS_PER_LOOKUP) {
            let rows = self.mysql_raw(p, batch).await?;
            let mut buf = BytesMut::new();
            encode::header(&mut buf);
            for r in &rows {
                let values: Vec<Value> = (0..self.map.columns.len())
                    .map(|i| r.as_ref(i).cloned().unwrap_or(Value::NULL))
                    .collect();
                encode::row(&self.map.columns, &values, &mut buf)?;
            }
            encode::trailer(&mut buf);
            let sink = tx
                .copy_in(&format!(
                    "COPY {} ({cols}) FROM STDIN (FORMAT binary)",
                    self.pg_table
                ))
                .await
                .map_err(pgerr)?;
            futures_util::pin_mut!(sink);
            sink.send(buf.freeze()).await.map_err(pgerr)?;
            sink.finish().await.map_err(pgerr)?;
            n += rows.len() as u64;
        }
        tx.commit().await.map_err(pgerr)?;
        Ok(n)
    }
}

/// Column `i` of a PostgreSQL row read with `pg_select` (text), in
/// canonical form; a value the driver cannot decode compares unequal to
/// anything MySQL holds (a leading NUL, which no canonical value has).
fn pg_value(kind: Kind, r: &tokio_postgres::Row, i: usize) -> Option<String> {
    match r.try_get::<_, Option<&str>>(i) {
        Ok(t) => canon::pg(kind, t),
        Err(e) => Some(format!("\0undecodable: {e}")),
    }
}

/// A canonical key value as a MySQL literal.
fn mysql_literal(kind: Kind, v: &str) -> String {
    match kind {
        Kind::Int2 | Kind::Int4 | Kind::Int8 | Kind::Numeric | Kind::Real | Kind::Double => {
            if v.bytes()
                .all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'.' | b'e' | b'E' | b'+'))
            {
                v.to_string()
            } else {
                Value::from(v).as_sql(false)
            }
        }
        Kind::Bytea => format!("X'{v}'"),
        Kind::Bit(_) => format!("b'{v}'"),
        Kind::Interval => {
            let us: i64 = v.parse().unwrap_or(0);
            let sign = if us < 0 { "-" } else { "" };
            let a = us.unsigned_abs();
            let secs = a / 1_000_000;
            format!(
                "'{sign}{}:{:02}:{:02}.{:06}'",
                secs / 3600,
                secs / 60 % 60,
                secs % 60,
                a % 1_000_000
            )
        }
        _ => Value::from(v).as_sql(false),
    }
}
