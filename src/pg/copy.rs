//! `tandem backfill` into a PostgreSQL secondary: each table's rows in
//! primary-key chunks, read through MySQL's binary protocol (exact floats,
//! typed dates) and written with binary COPY.
//!
//! - Resumable: a chunk's rows and the table's checkpoint (last key
//!   copied) are committed in one PostgreSQL transaction, in
//!   `<bookkeeping>.backfill_checkpoint` on the PostgreSQL side, so a run
//!   killed at any point continues exactly where it stopped.
//! - `--create-tables` creates missing tables from the mapping
//!   (`mapping`); foreign keys are added once every table's rows are in,
//!   and identity sequences are set past MySQL's AUTO_INCREMENT.
//! - A value PostgreSQL cannot hold as MySQL does stops the table's copy
//!   with the row's key and the reason.
//! - No mirror writes into PostgreSQL yet, so a copy of a table that is
//!   being written is not a snapshot: `tandem verify --repair` afterwards
//!   makes it equal (docs/postgres.md).

use super::mapping::{self, TableMap};
use super::{describe, encode, quote_ident};
use crate::backfill::{Backfill, BackfillError, BackfillOptions, TableSummary};
use crate::config::{BackendConfig, Config};
use crate::schema;
use bytes::BytesMut;
use futures_util::SinkExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use mysql_async::prelude::*;
use mysql_async::{Conn, Row, Value};
use std::io::IsTerminal;
use std::time::Instant;
use tokio_postgres::Client;

/// Where the checkpoints live on the PostgreSQL side.
pub fn checkpoint_table(b: &BackendConfig) -> String {
    format!("{}.backfill_checkpoint", quote_ident(&b.bookkeeping))
}

/// Whose checkpoints: the database and schema copied into.
fn owner(b: &BackendConfig) -> String {
    format!(
        "{}.{}",
        b.database.as_deref().unwrap_or(""),
        super::schema_of(b)
    )
}

/// The MySQL session the PostgreSQL tools read from: UTC (TIMESTAMP values
/// as instants), UTF-8 results, backslash escapes in literals.
pub async fn connect_primary(cfg: &Config) -> Result<Conn, BackfillError> {
    let mut p = schema::connect(cfg.primary_backend()).await?;
    p.query_drop(
        "SET NAMES utf8mb4, SESSION sql_mode = REPLACE(@@sql_mode, 'NO_BACKSLASH_ESCAPES', '')",
    )
    .await
    .map_err(|e| BackfillError::Setup(e.to_string()))?;
    Ok(p)
}

pub async fn run(cfg: &Config, opts: &BackfillOptions) -> Result<Backfill, BackfillError> {
    let setup = BackfillError::Setup;
    let sb = cfg
        .postgres_secondary()
        .ok_or_else(|| setup("backfill into PostgreSQL needs a PostgreSQL secondary".into()))?;
    let mut p = connect_primary(cfg).await?;
    let mut pg = super::connect(sb).await.map_err(setup)?;
    let schema = super::schema_of(sb);
    pg.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {bk};
         CREATE TABLE IF NOT EXISTS {cp} (db text NOT NULL, table_name text NOT NULL,
           last_key text, rows_copied bigint NOT NULL, done boolean NOT NULL,
           PRIMARY KEY (db, table_name))",
        bk = quote_ident(&sb.bookkeeping),
        cp = checkpoint_table(sb)
    ))
    .await
    .map_err(|e| setup(format!("{}: {}", sb.name, describe(&e))))?;
    let tables = match schema::select_tables(&mut p, cfg, opts.tables.as_deref())
        .await
        .map_err(|e| setup(e.to_string()))?
    {
        Ok(t) => t,
        Err(unknown) => {
            return Err(setup(format!(
                "unknown table(s) on the primary: {}",
                unknown.join(", ")
            )))
        }
    };
    let bars = indicatif::MultiProgress::with_draw_target(if std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    });
    let mut out = Vec::new();
    let mut copied_maps = Vec::new();
    for table in tables {
        let started = Instant::now();
        let mut summary = TableSummary {
            table: table.clone(),
            ..Default::default()
        };
        let copied = match mapping::load_for(&mut p, cfg, &table).await {
            Ok(map) => copy_table(&mut p, &mut pg, sb, map, opts, &bars, &mut summary).await,
            Err(e) => Err(e),
        };
        match copied {
            Ok(map) => copied_maps.push((map, summary.created)),
            Err(e) => summary.error = Some(e),
        }
        summary.seconds = started.elapsed().as_secs_f64();
        out.push(summary);
    }
    // Foreign keys once every table's rows are in (tables are copied in
    // name order, a child before its parent); identity sequences past
    // every copied id.
    let all_done = out.iter().all(|s| s.error.is_none());
    for (map, created) in &copied_maps {
        let mut stmts: Vec<String> = map.identity_sql(schema).into_iter().collect();
        if *created && all_done {
            stmts.extend(map.foreign_key_sql(schema));
        }
        for sql in stmts {
            if let Err(e) = pg.batch_execute(&sql).await {
                if let Some(s) = out.iter_mut().find(|s| s.table == map.table) {
                    s.error = Some(format!("{sql}: {}", describe(&e)));
                }
            }
        }
    }
    let _ = p.disconnect().await;
    Ok(Backfill {
        tables: out,
        ..Default::default()
    })
}

/// Copies one table; returns its mapping when the copy is complete.
async fn copy_table(
    p: &mut Conn,
    pg: &mut Client,
    sb: &BackendConfig,
    map: TableMap,
    opts: &BackfillOptions,
    bars: &indicatif::MultiProgress,
    summary: &mut TableSummary,
) -> Result<TableMap, String> {
    let pgerr = |e: tokio_postgres::Error| describe(&e);
    let table = map.table.clone();
    let table = table.as_str();
    let schema = super::schema_of(sb);
    let exists = pg
        .query_opt(
            "SELECT 1 FROM information_schema.tables WHERE table_schema = $1 AND table_name = $2",
            &[&schema, &table],
        )
        .await
        .map_err(pgerr)?
        .is_some();
    if !exists {
        if !opts.create_tables {
            return Err(format!(
                "table {table} does not exist on PostgreSQL (use --create-tables, or \
                 `tandem schema --to postgres` to review the DDL first)"
            ));
        }
        let tx = pg.transaction().await.map_err(pgerr)?;
        for sql in map.create_sql(schema) {
            tx.batch_execute(&sql)
                .await
                .map_err(|e| format!("{sql}: {}", describe(&e)))?;
        }
        tx.commit().await.map_err(pgerr)?;
        summary.created = true;
    }
    let cp = checkpoint_table(sb);
    let who = owner(sb);
    let checkpoint = pg
        .query_opt(
            &format!(
                "SELECT last_key, rows_copied, done FROM {cp} WHERE db = $1 AND table_name = $2"
            ),
            &[&who, &table],
        )
        .await
        .map_err(pgerr)?;
    // The table may have been made by hand: a wrong column type is an
    // error, not a panic.
    let checkpoint = checkpoint
        .map(|r| {
            Ok::<_, tokio_postgres::Error>((
                r.try_get::<_, Option<String>>(0)?,
                r.try_get::<_, i64>(1)?,
                r.try_get::<_, bool>(2)?,
            ))
        })
        .transpose()
        .map_err(|e| format!("{cp}: {e}"))?;
    let (mut last_key, mut copied): (Option<String>, u64) = match checkpoint {
        Some((_, _, true)) => {
            summary.resumed = true;
            return Ok(map);
        }
        Some((k, n, false)) => {
            summary.resumed = k.is_some();
            (k, n.max(0) as u64)
        }
        None => (None, 0),
    };
    let plan = map.plan();
    let t = &plan.quoted;
    let total: u64 = p
        .query_first(format!("SELECT COUNT(*) FROM {t}"))
        .await
        .map_err(|e| e.to_string())?
        .unwrap_or(0);
    let bar = bars.add(ProgressBar::new(total));
    bar.set_style(
        ProgressStyle::with_template("{prefix:>20} {bar:30} {pos}/{len} rows {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_prefix(table.to_string());
    bar.set_position(copied.min(total));
    let pg_cols = map
        .columns
        .iter()
        .map(|c| quote_ident(&c.name))
        .collect::<Vec<_>>()
        .join(", ");
    let copy_sql = format!(
        "COPY {}.{} ({pg_cols}) FROM STDIN (FORMAT binary)",
        quote_ident(schema),
        quote_ident(table)
    );
    let upsert = format!(
        "INSERT INTO {cp} (db, table_name, last_key, rows_copied, done) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (db, table_name) DO UPDATE SET last_key = EXCLUDED.last_key,
           rows_copied = EXCLUDED.rows_copied, done = EXCLUDED.done"
    );
    let mut pace = crate::backfill::Pace::new(opts.rate);
    loop {
        let rows = read_chunk(p, &plan, last_key.as_deref(), opts.chunk_size).await?;
        let done = rows.len() < opts.chunk_size;
        let mut buf = BytesMut::with_capacity(rows.len() * 64 + 32);
        encode::header(&mut buf);
        let mut values = Vec::with_capacity(map.columns.len());
        for r in &rows {
            values.clear();
            values.extend(
                (0..map.columns.len()).map(|i| r.as_ref(i).cloned().unwrap_or(Value::NULL)),
            );
            encode::row(&map.columns, &values, &mut buf)
                .map_err(|e| format!("row with key ({}): {e}", key_literals(&plan, r)))?;
        }
        encode::trailer(&mut buf);
        let new_last = rows
            .last()
            .map(|r| key_literals(&plan, r))
            .or(last_key.clone());
        copied += rows.len() as u64;
        let tx = pg.transaction().await.map_err(pgerr)?;
        if !rows.is_empty() {
            let sink = tx.copy_in(&copy_sql).await.map_err(pgerr)?;
            futures_util::pin_mut!(sink);
            sink.send(buf.freeze())
                .await
                .map_err(|e| copy_error(&e, table))?;
            sink.finish().await.map_err(|e| copy_error(&e, table))?;
        }
        tx.execute(&upsert, &[&who, &table, &new_last, &(copied as i64), &done])
            .await
            .map_err(pgerr)?;
        tx.commit().await.map_err(pgerr)?;
        last_key = new_last;
        summary.rows_read += rows.len() as u64;
        summary.rows_inserted += rows.len() as u64;
        pace.progress(&bar, table, copied, total);
        if done {
            break;
        }
        pace.throttle(summary.rows_read).await;
    }
    bar.finish();
    Ok(map)
}

/// A COPY refused by PostgreSQL (a duplicate key: rows written there by
/// someone else; a CHECK: a value out of MySQL's range).
fn copy_error(e: &tokio_postgres::Error, table: &str) -> String {
    let what = describe(e);
    if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) {
        format!(
            "{table}: PostgreSQL already holds rows past the checkpoint ({what}); \
             `tandem verify --repair --tables {table}` makes it equal"
        )
    } else {
        format!("{table}: {what}")
    }
}

/// The chunk of `plan`'s table after `after` (its last key as SQL
/// literals), in key order, through the binary protocol: FLOAT as the
/// stored float, not its six-digit text.
pub(super) async fn read_chunk(
    p: &mut Conn,
    plan: &schema::TablePlan,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<Row>, String> {
    let (t, cols, keys) = (&plan.quoted, &plan.column_list, &plan.key_list);
    let after = after
        .map(|k| format!("WHERE ({keys}) > ({k})"))
        .unwrap_or_default();
    p.exec(
        format!("SELECT {cols} FROM {t} {after} ORDER BY {keys} LIMIT {limit}"),
        (),
    )
    .await
    .map_err(|e| e.to_string())
}

/// A row's primary key as SQL literals for MySQL (the checkpoint).
pub(super) fn key_literals(plan: &schema::TablePlan, r: &Row) -> String {
    plan.key_positions
        .iter()
        .map(|i| r.as_ref(*i).unwrap_or(&Value::NULL).as_sql(false))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `tandem schema --to postgres`: the DDL for every table (or `tables`),
/// and the reasons a table cannot be mapped.
pub async fn schema_ddl(cfg: &Config, tables: Option<&[String]>) -> Result<(String, bool), String> {
    let mut p = connect_primary(cfg).await.map_err(|e| e.to_string())?;
    let schema = cfg
        .postgres_secondary()
        .map(|b| super::schema_of(b).to_string())
        .unwrap_or_else(|| "public".into());
    let tables = match schema::select_tables(&mut p, cfg, tables)
        .await
        .map_err(|e| e.to_string())?
    {
        Ok(t) => t,
        Err(unknown) => return Err(format!("unknown table(s): {}", unknown.join(", "))),
    };
    let mut out = format!(
        "-- PostgreSQL schema for {} (Tandem's mapping: docs/postgres.md)\n",
        schema
    );
    let mut fks = Vec::new();
    let mut refused = false;
    for t in &tables {
        match mapping::load(&mut p, t, mapping::rule_of(cfg, t)).await? {
            Ok(map) => {
                for s in map.create_sql(&schema) {
                    out.push_str(&s);
                    out.push_str(";\n");
                }
                fks.extend(map.foreign_key_sql(&schema));
            }
            Err(reasons) => {
                refused = true;
                out.push_str(&format!("-- {t}: NOT MAPPED\n"));
                for r in reasons {
                    out.push_str(&format!("--   {r}\n"));
                }
            }
        }
    }
    for f in fks {
        out.push_str(&f);
        out.push_str(";\n");
    }
    let _ = p.disconnect().await;
    Ok((out, refused))
}
