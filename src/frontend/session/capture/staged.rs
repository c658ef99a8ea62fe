//! `INSERT … SELECT` / `REPLACE … SELECT` that replay cannot repeat from
//! its text: its SELECT reads in an order Tandem cannot pin (a join,
//! `GROUP BY`, `DISTINCT`, a source without a unique key) while the order
//! decides the ids, the duplicates kept or what a trigger sees; or it
//! writes a table without transactions while reading one with them. It
//! runs on the primary as the steps of `LOAD DATA LOCAL` do (see `load`):
//! its SELECT fills a temporary staging table shaped like the target (the
//! same conversions, defaults and errors as the target would give; its
//! AUTO_INCREMENT column a nullable number), the staged rows are read back
//! in the order the SELECT gave them, and the statement goes on as
//! `INSERT [IGNORE] | REPLACE INTO t (columns) VALUES …` through the
//! ordinary mirrored write: both sides insert the same rows in the same
//! order, so ids, duplicates and triggers match. The client's answer is
//! that INSERT's (its row count, ids, `Records:`/`Duplicates:`); the
//! warnings of the staging step are not in its `SHOW WARNINGS`.
//!
//! Not taken (the caller's refusal stands): under LOCK TABLES, a target
//! with a PARTITION clause or generated columns it fills, `RETURNING`, an
//! `ON DUPLICATE KEY UPDATE` that names a column outside the target, and
//! more than `MAX_ROWS` rows or `MAX_BYTES` of them.

use super::super::link::{query_packet, Link};
use super::super::load_stmt;
use super::super::SessionError;
use super::vars::rows;
use super::Capture;
use crate::frontend::session::cluster::insert_select::{source_span, values_text};
use crate::frontend::session::cluster::read::rows_of;
use crate::frontend::session::cluster::values::Column;
use crate::mirror::runtime::Mirror;
use crate::protocol::response::Expect;
use crate::router::determinism::UnsafeReason;
use crate::router::lexer::{self, Tok, Token};
use crate::router::{Class, Route, WriteKind};
use crate::sql::{quote, sql_literal};
use std::sync::Arc;

/// At most this many rows are staged.
const MAX_ROWS: usize = 100_000;
/// At most this many bytes of staged rows are read back.
const MAX_BYTES: usize = 32 << 20;

/// What an `INSERT … SELECT` says before its SELECT.
#[derive(Debug, PartialEq)]
struct Head {
    replace: bool,
    ignore: bool,
    db: Option<String>,
    table: String,
    /// Byte span of the target's name.
    name: (usize, usize),
    columns: Option<Vec<String>>,
}

/// Reads the head of `sql` up to token `start` (its SELECT); None: a shape
/// not taken.
fn head(sql: &[u8], toks: &[Token], start: usize) -> Option<Head> {
    let replace = toks.first()?.is_word(sql, "REPLACE");
    let mut i = 1;
    let mut ignore = false;
    while i < start {
        let t = &toks[i];
        if t.is_word(sql, "IGNORE") {
            ignore = true;
        } else if !(t.is_word(sql, "INTO")
            || t.is_word(sql, "LOW_PRIORITY")
            || t.is_word(sql, "HIGH_PRIORITY")
            || t.is_word(sql, "DELAYED"))
        {
            break;
        }
        i += 1;
    }
    let first = i;
    let mut table = toks.get(i)?.ident(sql)?;
    let mut db = None;
    if toks.get(i + 1).is_some_and(|t| t.kind == Tok::Punct(b'.')) {
        db = Some(table);
        table = toks.get(i + 2)?.ident(sql)?;
        i += 2;
    }
    let name = (toks[first].start, toks[i].end);
    i += 1;
    let mut columns = None;
    if i < start && toks[i].kind == Tok::Punct(b'(') {
        let mut names = Vec::new();
        i += 1;
        loop {
            names.push(toks.get(i)?.ident(sql)?);
            i += 1;
            match toks.get(i)?.kind {
                Tok::Punct(b',') => i += 1,
                Tok::Punct(b')') => break,
                _ => return None,
            }
        }
        i += 1;
        columns = Some(names);
    }
    // `(SELECT …)`: the parenthesis opens the source.
    if i != start {
        return None;
    }
    Some(Head {
        replace,
        ignore,
        db,
        table,
        name,
        columns,
    })
}

/// Whether a write the router refused may be staged: an `INSERT … SELECT`
/// whose order decides its result.
pub(super) fn stageable(route: &Route) -> bool {
    matches!(
        route.class,
        Class::Write(WriteKind::Insert | WriteKind::Replace)
    ) && route.determinism.unsafe_reason == Some(UnsafeReason::InsertSelectWithoutOrder)
}

/// What the staging table held (see `Capture::take_staged`).
pub(super) enum Staged {
    /// Its rows as `(v, …), (v, …)`.
    Values(Vec<u8>),
    Empty,
    /// Rows Tandem cannot read back, or more than the limit.
    Unreadable,
}

impl Capture {
    /// The columns of `db`.`table` in table order, each with whether it
    /// is generated; None: the catalog did not answer.
    pub(super) async fn target_columns(
        &mut self,
        cx: &mut Link<'_>,
        db: &str,
        table: &str,
    ) -> Result<Option<Vec<(String, bool)>>, SessionError> {
        let sql = format!(
            "SELECT COLUMN_NAME, EXTRA FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = {} \
             AND TABLE_NAME = {} ORDER BY ORDINAL_POSITION",
            sql_literal(db.as_bytes()),
            sql_literal(table.as_bytes())
        );
        let reply = self.own_read(cx, sql.as_bytes()).await?;
        let text = |v: &Option<Vec<u8>>| {
            String::from_utf8_lossy(v.as_deref().unwrap_or_default()).into_owned()
        };
        Ok(rows(&reply, cx.deprecate_eof()).map(|rows| {
            rows.iter()
                .map(|r| {
                    let extra = text(&r[1]).to_ascii_uppercase();
                    let generated = ["GENERATED", "VIRTUAL", "PERSISTENT"]
                        .iter()
                        .any(|w| extra.contains(w));
                    (text(&r[0]), generated)
                })
                .collect()
        }))
    }

    /// Reads the staging table's rows of `names` back (FLOAT columns again
    /// through DOUBLE when there are any: `load_stmt::reread`), at most
    /// `limit` (rows, bytes), and drops it.
    pub(super) async fn take_staged(
        &mut self,
        cx: &mut Link<'_>,
        names: &[String],
        limit: Option<(usize, usize)>,
    ) -> Result<Staged, SessionError> {
        let extended = cx.ext_caps & crate::backend::MARIADB_EXTENDED_METADATA != 0;
        let select = |exact: Option<&[Column]>| {
            let q = load_stmt::select_staged(names, exact);
            match limit {
                Some((rows, _)) => format!("{q} LIMIT {}", rows + 1),
                None => q,
            }
        };
        let mut staged = self.own_read(cx, select(None).as_bytes()).await?;
        if let Some((types, _)) = rows_of(&staged.packets, extended, cx.deprecate_eof())
            .filter(|(c, _)| load_stmt::reread(c))
        {
            staged = self.own_read(cx, select(Some(&types)).as_bytes()).await?;
        }
        self.drop_staging(cx).await?;
        let size: usize = staged.packets.iter().map(Vec::len).sum();
        let within = |n: usize| limit.is_none_or(|(rows, bytes)| n <= rows && size <= bytes);
        let Some((types, found)) = rows_of(&staged.packets, extended, cx.deprecate_eof())
            .filter(|(c, r)| c.len() == names.len() && within(r.len()))
        else {
            return Ok(Staged::Unreadable);
        };
        if found.is_empty() {
            return Ok(Staged::Empty);
        }
        Ok(
            match values_text(&types, found, self.no_backslash_escapes) {
                Some(v) => Staged::Values(v),
                None => Staged::Unreadable,
            },
        )
    }

    /// Whether `sql`, an `INSERT … SELECT` the router lets through, must
    /// be staged all the same: it writes a table without transactions
    /// while reading others (see `effect`), or the primary hands out ids
    /// interleaved with other sessions' (`facts::interleaved_ids`).
    pub(super) async fn must_stage(
        &mut self,
        cx: &mut Link<'_>,
        m: &Arc<Mirror>,
        route: &Route,
        sql: &[u8],
    ) -> Result<bool, SessionError> {
        if !matches!(
            route.class,
            Class::Write(WriteKind::Insert | WriteKind::Replace)
        ) || cx.table_locks
        {
            return Ok(false);
        }
        // Every INSERT comes here: one without the word pays a memchr
        // scan, not a second tokenizing.
        let select = memchr::memchr2_iter(b'S', b's', sql).any(|i| {
            sql.get(i..i + 6)
                .is_some_and(|w| w.eq_ignore_ascii_case(b"SELECT"))
        });
        if !select {
            return Ok(false);
        }
        let mut toks = Vec::new();
        lexer::tokenize(sql, &mut toks);
        if source_span(sql, &toks).is_none() {
            return Ok(false);
        }
        self.ensure_vars(cx).await?;
        let facts = self.table_facts(cx, m, route).await?;
        if facts.engine_without_transactions.is_some() {
            return Ok(self.effect_tables(cx, m, route, sql).await?.is_err());
        }
        Ok(self.interleaved_autoinc
            && super::facts::interleaved_ids(route, sql, facts.auto_increment.as_deref()).is_some())
    }

    /// Runs `sql`, an `INSERT … SELECT` on `route`, staged (see the
    /// module). Ok(false): not one this takes; nothing ran.
    pub(super) async fn staged_insert_select(
        &mut self,
        cx: &mut Link<'_>,
        m: &Arc<Mirror>,
        route: &Route,
        sql: &[u8],
        seq: u8,
    ) -> Result<bool, SessionError> {
        if cx.table_locks {
            return Ok(false);
        }
        let mut toks = Vec::new();
        lexer::tokenize(sql, &mut toks);
        let Some((start, end)) = source_span(sql, &toks) else {
            return Ok(false);
        };
        let Some(head) = head(sql, &toks, start) else {
            return Ok(false);
        };
        let at = |i: usize| toks.get(i).map_or(sql.len(), |t| t.start);
        let tail = &toks[end.min(toks.len())..];
        if toks.iter().any(|t| t.is_word(sql, "RETURNING")) {
            return Ok(false);
        }
        let db = match head
            .db
            .clone()
            .or_else(|| cx.binding.conn().current_db.clone())
        {
            Some(db) => db,
            None => return Ok(false),
        };
        // The target's columns; generated ones are the target's to compute.
        let Some(catalog) = self.target_columns(cx, &db, &head.table).await? else {
            return Ok(false);
        };
        let generated: Vec<String> = catalog
            .iter()
            .filter(|(_, g)| *g)
            .map(|(c, _)| c.to_ascii_lowercase())
            .collect();
        let all: Vec<String> = catalog.into_iter().map(|(c, _)| c).collect();
        let names = match &head.columns {
            Some(c)
                if c.iter()
                    .any(|n| generated.contains(&n.to_ascii_lowercase())) =>
            {
                return Ok(false)
            }
            Some(c) => c.clone(),
            None if !generated.is_empty() => return Ok(false),
            None => all.clone(),
        };
        if names.is_empty() {
            return Ok(false);
        }
        // ON DUPLICATE KEY UPDATE may name the target's columns only (the
        // SELECT's are gone from the VALUES form).
        let foreign = tail.iter().enumerate().any(|(i, t)| {
            let dotted = tail.get(i + 1).is_some_and(|n| n.kind == Tok::Punct(b'.'))
                || i.checked_sub(1)
                    .and_then(|p| tail.get(p))
                    .is_some_and(|p| p.kind == Tok::Punct(b'.'));
            t.kind == Tok::Quoted && !all.iter().any(|c| Some(c.clone()) == t.ident(sql)) || dotted
        });
        if foreign {
            return Ok(false);
        }
        let target = String::from_utf8_lossy(&sql[head.name.0..head.name.1]).into_owned();
        let one = Route {
            tables: vec![format!("{db}.{}", head.table)],
            ..route.clone()
        };
        let auto = self.table_facts(cx, m, &one).await?.auto_increment;
        let setup = load_stmt::staging_setup(&target, auto.as_deref());
        let cols: Vec<String> = names.iter().map(|c| quote(c)).collect();
        let fill = [
            format!(
                "INSERT {}INTO {} ({}) ",
                if head.ignore { "IGNORE " } else { "" },
                quote(load_stmt::STAGING),
                cols.join(", ")
            )
            .into_bytes(),
            sql[at(start)..at(end)].to_vec(),
        ]
        .concat();
        let packets: Vec<Vec<u8>> = setup
            .iter()
            .map(|q| query_packet(q.as_bytes()))
            .chain([query_packet(&fill)])
            .collect();
        let refs: Vec<&[u8]> = packets.iter().map(Vec::as_slice).collect();
        let mut replies = self.own_reads(cx, &refs).await?;
        if let Some(i) = replies.iter().position(|r| r.err.is_some()) {
            // The SELECT's own error (or the staging table's), as the
            // client would have met it.
            let bad = replies.swap_remove(i);
            self.drop_staging(cx).await?;
            return cx.relay(seq, bad, false).await.map(|_| true);
        }
        let values = match self
            .take_staged(cx, &names, Some((MAX_ROWS, MAX_BYTES)))
            .await?
        {
            Staged::Values(v) => v,
            Staged::Unreadable => return Ok(false),
            Staged::Empty => {
                // No row: the server's own answer to inserting none.
                let none = format!(
                    "{} INTO {target} ({}) SELECT {} FROM {target} LIMIT 0",
                    if head.replace {
                        "REPLACE"
                    } else {
                        "INSERT IGNORE"
                    },
                    cols.join(", "),
                    cols.join(", ")
                );
                cx.forward(&query_packet(none.as_bytes()), seq, Expect::ResultSet)
                    .await?;
                return Ok(true);
            }
        };
        let verb = match (head.replace, head.ignore) {
            (true, _) => "REPLACE",
            (false, true) => "INSERT IGNORE",
            (false, false) => "INSERT",
        };
        let mut insert = format!("{verb} INTO {target} ({}) VALUES ", cols.join(", ")).into_bytes();
        insert.extend_from_slice(&values);
        if end < toks.len() {
            insert.push(b' ');
            insert.extend_from_slice(&sql[at(end)..]);
        }
        let plan = cx.shared.router.plan(&insert, &mut cx.scratch);
        let Some(route) = plan.classified.statements.first().cloned() else {
            return Ok(false);
        };
        self.mirrored_write(cx, m, &route, super::WriteSrc::Query(&insert), seq)
            .await?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(sql: &str) -> Option<Head> {
        let mut toks = Vec::new();
        lexer::tokenize(sql.as_bytes(), &mut toks);
        let (start, _) = source_span(sql.as_bytes(), &toks)?;
        head(sql.as_bytes(), &toks, start)
    }

    #[test]
    fn the_head_names_the_target_and_its_columns() {
        let h = read("INSERT IGNORE INTO app.t (a, `b c`) SELECT x, y FROM u JOIN v").unwrap();
        assert!(h.ignore && !h.replace);
        assert_eq!(h.db.as_deref(), Some("app"));
        assert_eq!(h.table, "t");
        assert_eq!(h.columns.unwrap(), vec!["a", "b c"]);
        let h = read("REPLACE t SELECT * FROM u GROUP BY k").unwrap();
        assert!(h.replace && h.columns.is_none() && h.db.is_none());
        assert!(read("INSERT INTO t PARTITION (p0) SELECT * FROM u").is_none());
        assert!(read("INSERT INTO t (a) VALUES (1)").is_none());
    }
}
