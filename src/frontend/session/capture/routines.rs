//! A statement that is not a write but calls a stored function that may
//! write (`SELECT f()`, `DO f()`, `SET @x = f()`): its writes happen on the
//! primary only and no write path journals them. Such a call follows
//! `unsafe_writes`. Which functions may write: `mirror::runtime::routines`.

use super::super::link::Link;
use super::super::SessionError;
use super::vars::rows;
use super::Capture;
use crate::mirror::runtime::routines::writers;
use crate::mirror::runtime::Mirror;
use crate::router::lexer::Tok;
use crate::sql::sql_literal;
use std::sync::Arc;

/// Built-in functions a read commonly calls: an unqualified call of one
/// never runs a stored function, so it needs no look-up.
const BUILTINS: &[&str] = &[
    "count",
    "sum",
    "min",
    "max",
    "avg",
    "concat",
    "concat_ws",
    "coalesce",
    "ifnull",
    "if",
    "nullif",
    "now",
    "date",
    "lower",
    "upper",
    "length",
    "substring",
    "substr",
    "round",
    "abs",
    "cast",
    "convert",
    "group_concat",
    "date_format",
    "unix_timestamp",
    "from_unixtime",
    "json_extract",
    "json_unquote",
    "in",
    "exists",
    "values",
    "trim",
    "replace",
    "left",
    "right",
    "floor",
    "ceil",
    "greatest",
    "least",
    "char_length",
    "found_rows",
    "last_insert_id",
    "database",
    "version",
    "connection_id",
];

/// Why a statement calling writing function `f` cannot be mirrored.
pub(super) fn reason(f: &str) -> String {
    format!(
        "it calls stored function `{f}`, whose body writes, from a statement that is not a write, so its writes would not be journaled; run them as statements of their own"
    )
}

impl Capture {
    /// The stored function (`db.f` or `f`) the statement whose tokens are
    /// in the session's scratch calls and that may write, if any.
    pub(super) async fn writing_call(
        &mut self,
        cx: &mut Link<'_>,
        m: &Mirror,
        sql: &[u8],
    ) -> Result<Option<String>, SessionError> {
        let toks = &cx.scratch.tokens;
        let mut calls: Vec<(Option<String>, String)> = Vec::new();
        for i in 0..toks.len().saturating_sub(1) {
            if toks[i + 1].kind != Tok::Punct(b'(') {
                continue;
            }
            let Some(name) = toks[i].ident(sql) else {
                continue;
            };
            let db = (i >= 2 && toks[i - 1].kind == Tok::Punct(b'.'))
                .then(|| toks[i - 2].ident(sql))
                .flatten();
            let name = name.to_lowercase();
            if db.is_none() && BUILTINS.contains(&name.as_str()) {
                continue;
            }
            calls.push((db, name));
        }
        if calls.is_empty() {
            return Ok(None);
        }
        let current = cx.binding.conn().current_db.clone();
        for (db, name) in calls {
            let Some(db) = db.or_else(|| current.clone()) else {
                continue;
            };
            let set = match m.writing_functions(&db) {
                Some(set) => set,
                None => {
                    let set = Arc::new(self.read_functions(cx, &db).await?);
                    m.set_writing_functions(&db, set.clone());
                    set
                }
            };
            if set.contains(&name) {
                return Ok(Some(format!("{db}.{name}")));
            }
        }
        Ok(None)
    }

    /// The functions of `db` that may write, from the primary's catalog.
    async fn read_functions(
        &mut self,
        cx: &mut Link<'_>,
        db: &str,
    ) -> Result<std::collections::HashSet<String>, SessionError> {
        let sql = format!(
            "SELECT ROUTINE_NAME, ROUTINE_DEFINITION FROM information_schema.ROUTINES \
             WHERE ROUTINE_SCHEMA = {} AND ROUTINE_TYPE = 'FUNCTION'",
            sql_literal(db.as_bytes())
        );
        let reply = self.own_read(cx, sql.as_bytes()).await?;
        let text =
            |v: &Option<Vec<u8>>| v.as_ref().map(|v| String::from_utf8_lossy(v).into_owned());
        let functions: Vec<(String, Option<String>)> = rows(&reply, cx.deprecate_eof())
            .unwrap_or_default()
            .iter()
            .filter_map(|r| Some((text(r.first()?)?, text(r.get(1)?))))
            .collect();
        Ok(writers(&functions))
    }
}
