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

impl Capture {
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
        let catalog = format!(
            "SELECT COLUMN_NAME, EXTRA FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = {} \
             AND TABLE_NAME = {} ORDER BY ORDINAL_POSITION",
            sql_literal(db.as_bytes()),
            sql_literal(head.table.as_bytes())
        );
        let catalog = self.own_read(cx, catalog.as_bytes()).await?;
        let Some(catalog) = rows(&catalog, cx.deprecate_eof()) else {
            return Ok(false);
        };
        let text = |v: &Option<Vec<u8>>| {
            String::from_utf8_lossy(v.as_deref().unwrap_or_default()).into_owned()
        };
        let generated: Vec<String> = catalog
            .iter()
            .filter(|r| text(&r[1]).to_ascii_uppercase().contains("GENERATED"))
            .map(|r| text(&r[0]).to_ascii_lowercase())
            .collect();
        let all: Vec<String> = catalog.iter().map(|r| text(&r[0])).collect();
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
        let extended = cx.ext_caps & crate::backend::MARIADB_EXTENDED_METADATA != 0;
        let limited = |q: String| format!("{q} LIMIT {}", MAX_ROWS + 1);
        let mut staged = self
            .own_read(
                cx,
                limited(load_stmt::select_staged(&names, None)).as_bytes(),
            )
            .await?;
        if let Some((types, _)) = rows_of(&staged.packets, extended, cx.deprecate_eof())
            .filter(|(c, _)| load_stmt::reread(c))
        {
            let exact = limited(load_stmt::select_staged(&names, Some(&types)));
            staged = self.own_read(cx, exact.as_bytes()).await?;
        }
        let size: usize = staged.packets.iter().map(Vec::len).sum();
        let read = rows_of(&staged.packets, extended, cx.deprecate_eof())
            .filter(|(c, r)| c.len() == names.len() && r.len() <= MAX_ROWS && size <= MAX_BYTES);
        let Some((types, found)) = read else {
            self.drop_staging(cx).await?;
            return Ok(false);
        };
        if found.is_empty() {
            // No row: the server's own answer to inserting none.
            let none = format!(
                "{} INTO {target} ({}) {}",
                if head.replace {
                    "REPLACE"
                } else {
                    "INSERT IGNORE"
                },
                cols.join(", "),
                load_stmt::select_staged(&names, None)
            );
            cx.forward(&query_packet(none.as_bytes()), seq, Expect::ResultSet)
                .await?;
            self.drop_staging(cx).await?;
            self.row_count_next = Some(0);
            return Ok(true);
        }
        let Some(values) = values_text(&types, found, self.no_backslash_escapes) else {
            self.drop_staging(cx).await?;
            return Ok(false);
        };
        self.drop_staging(cx).await?;
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
