//! MariaDB sequences. `NEXTVAL(s)` (`NEXT VALUE FOR s`) advances a
//! sequence outside any transaction, and only on the server it runs on: a
//! read that calls it would leave the secondary's sequence behind, and
//! after a cutover it would hand out the same values again.
//!
//! A statement that is not a write and advances sequences (`SELECT
//! NEXTVAL(s)`, `DO`, `SET @id = NEXTVAL(s)`, text or prepared) runs as
//! sent; then the session asks the primary `LASTVAL(s)` — the value it
//! just got — and journals `DO SETVAL(s, v)`, settled at once, applied
//! outside any transaction (as the primary's advance was, even inside a
//! transaction that later rolls back). SETVAL only ever moves a sequence
//! forward, so concurrent sessions' records may apply in any order and the
//! secondary ends where the primary's highest value handed out is. A
//! primary's cache (`CACHE n`) is not mirrored: the secondary continues
//! from the last value actually handed out, never one handed out before.
//! `SETVAL` called by the application, a NEXTVAL this does not read, and
//! writes that call NEXTVAL still follow `unsafe_writes` (`Usage::Refused`
//! here; writes in `router::determinism`).

use super::super::link::Link;
use super::super::SessionError;
use super::vars::first_row;
use super::Capture;
use crate::mirror::ddl::{quoted_name, UNCHECKED_DDL_TOKEN};
use crate::mirror::now_us;
use crate::mirror::record::{MirrorStatement, MirrorTxn, Pins};
use crate::mirror::runtime::Mirror;
use crate::protocol::response::Expect;
use crate::router::lexer::{Tok, Token};
use std::sync::Arc;

/// What a statement that is not a write does to sequences.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Usage {
    None,
    /// Advances these with NEXTVAL (as written: `s` or `db.s`, unquoted).
    Advances(Vec<String>),
    /// SETVAL, or a NEXTVAL whose sequence this does not read: follows
    /// `unsafe_writes`, for this reason.
    Refused(String),
}

/// Why a sequence call cannot be mirrored: a sequence moves outside
/// transactions, on the primary only, and a secondary left behind would
/// hand out the same values again after a cutover.
fn refused(call: &str) -> Usage {
    Usage::Refused(format!(
        "{call} advances a sequence outside any transaction, on the primary only; Tandem does not mirror this sequence position, so the secondary's sequence would hand out the same values again"
    ))
}

/// One pass over the statement's tokens.
pub(super) fn usage(sql: &[u8], toks: &[Token]) -> Usage {
    let name_at = |i: usize| -> Option<String> {
        let first = toks.get(i)?.ident(sql)?;
        if toks.get(i + 1).is_some_and(|t| t.kind == Tok::Punct(b'.')) {
            return Some(format!("{first}.{}", toks.get(i + 2)?.ident(sql)?));
        }
        Some(first)
    };
    let mut out: Vec<String> = Vec::new();
    for (i, t) in toks.iter().enumerate() {
        if t.kind != Tok::Word {
            continue;
        }
        let call = toks.get(i + 1).is_some_and(|n| n.kind == Tok::Punct(b'('));
        let name = if call && t.is_word(sql, "SETVAL") {
            return refused("SETVAL");
        } else if call && t.is_word(sql, "NEXTVAL") {
            name_at(i + 2)
        } else if t.is_word(sql, "NEXT")
            && toks.get(i + 1).is_some_and(|n| n.is_word(sql, "VALUE"))
            && toks.get(i + 2).is_some_and(|n| n.is_word(sql, "FOR"))
        {
            name_at(i + 3)
        } else {
            continue;
        };
        let Some(name) = name else {
            return refused("NEXTVAL");
        };
        if !out.contains(&name) {
            out.push(name);
        }
    }
    if out.is_empty() {
        Usage::None
    } else {
        Usage::Advances(out)
    }
}

/// The `NEXTVAL(s)` / `NEXT VALUE FOR s` calls of an `INSERT`/`REPLACE …
/// VALUES`, in the order the server evaluates them (text order, row by
/// row): each call's byte span and sequence name. Err: one this cannot
/// take in advance (in `ON DUPLICATE KEY UPDATE`, evaluated only on a
/// conflict; a name it cannot read).
pub(super) fn nextval_sites(
    sql: &[u8],
    toks: &[Token],
) -> Result<Vec<(std::ops::Range<usize>, String)>, String> {
    let name_at = |i: usize| -> Option<(String, usize)> {
        let first = toks.get(i)?.ident(sql)?;
        if toks.get(i + 1).is_some_and(|t| t.kind == Tok::Punct(b'.')) {
            return Some((format!("{first}.{}", toks.get(i + 2)?.ident(sql)?), i + 2));
        }
        Some((first, i))
    };
    let mut out = Vec::new();
    let mut on_duplicate = false;
    for (i, t) in toks.iter().enumerate() {
        if t.is_word(sql, "DUPLICATE") {
            on_duplicate = true;
        }
        let call = toks.get(i + 1).is_some_and(|n| n.kind == Tok::Punct(b'('));
        let site = if call && t.is_word(sql, "NEXTVAL") {
            name_at(i + 2).and_then(|(name, last)| {
                let close = toks.get(last + 1).filter(|c| c.kind == Tok::Punct(b')'))?;
                Some((t.start..close.end, name))
            })
        } else if t.is_word(sql, "NEXT")
            && toks.get(i + 1).is_some_and(|n| n.is_word(sql, "VALUE"))
            && toks.get(i + 2).is_some_and(|n| n.is_word(sql, "FOR"))
        {
            name_at(i + 3).map(|(name, last)| (t.start..toks[last].end, name))
        } else {
            continue;
        };
        let Some(site) = site else {
            return Err("a NEXTVAL call whose sequence Tandem cannot read".into());
        };
        if on_duplicate {
            return Err("NEXTVAL in ON DUPLICATE KEY UPDATE runs only on a conflict; Tandem cannot take its value in advance".into());
        }
        out.push(site);
    }
    Ok(out)
}

/// Column `i` of a text row when it is an integer (a sequence value).
fn integer_cell(row: &[Option<Vec<u8>>], i: usize) -> Option<String> {
    let v = String::from_utf8_lossy(row.get(i)?.as_ref()?).into_owned();
    let digits = v.trim_start_matches('-');
    (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())).then_some(v)
}

impl Capture {
    /// A write's NEXTVAL calls (rows of VALUES, `nextval_sites`) taken in
    /// advance: one `SELECT NEXTVAL(s), …` on the primary, in the calls'
    /// order, whose values replace the calls in the text the primary runs
    /// and the mirror replays; each sequence's last value is journaled as
    /// `DO SETVAL` (as after a read that advances it). To the client the
    /// sequence moves as the statement would have moved it, and `LASTVAL`
    /// answers the same. Ok(Err(why)) when it cannot be done: the write
    /// follows `unsafe_writes`.
    pub(super) async fn pin_nextval(
        &mut self,
        cx: &mut Link<'_>,
        m: &Arc<Mirror>,
        sql: &[u8],
    ) -> Result<Result<Vec<u8>, String>, SessionError> {
        let mut toks = Vec::new();
        crate::router::lexer::tokenize(sql, &mut toks);
        let sites = match nextval_sites(sql, &toks) {
            Ok(s) if !s.is_empty() => s,
            Ok(_) => return Ok(Ok(sql.to_vec())),
            Err(why) => return Ok(Err(why)),
        };
        let select = format!(
            "SELECT {}",
            sites
                .iter()
                .map(|(_, n)| format!("NEXTVAL({})", quoted_name(n)))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let reply = self.own_read(cx, select.as_bytes()).await?;
        if reply.err.is_some() {
            return Ok(Err(
                "its sequence could not be advanced in advance (the server refused NEXTVAL)".into(),
            ));
        }
        let row = first_row(&reply, cx.deprecate_eof()).unwrap_or_default();
        let mut values = Vec::with_capacity(sites.len());
        for i in 0..sites.len() {
            match integer_cell(&row, i) {
                Some(v) => values.push(v),
                None => return Ok(Err("a sequence's next value could not be read".into())),
            }
        }
        // Each sequence stands at its last call's value.
        let mut last: Vec<(String, String)> = Vec::new();
        for ((_, name), v) in sites.iter().zip(&values) {
            match last.iter_mut().find(|(n, _)| n == name) {
                Some(e) => e.1 = v.clone(),
                None => last.push((name.clone(), v.clone())),
            }
        }
        let vars = self.ensure_vars(cx).await?;
        for (name, value) in &last {
            self.journal_setval(cx, m, name, value, &vars).await;
        }
        let mut out = Vec::with_capacity(sql.len());
        let mut at = 0;
        for ((span, _), v) in sites.iter().zip(&values) {
            out.extend_from_slice(&sql[at..span.start]);
            out.extend_from_slice(v.as_bytes());
            at = span.end;
        }
        out.extend_from_slice(&sql[at..]);
        Ok(Ok(out))
    }

    /// Journals `DO SETVAL(name, value)`, applied at once and outside any
    /// transaction (a sequence moves outside transactions on the primary).
    async fn journal_setval(
        &mut self,
        cx: &mut Link<'_>,
        m: &Arc<Mirror>,
        name: &str,
        value: &str,
        vars: &crate::mirror::record::SessionVars,
    ) {
        let text = format!("DO SETVAL({}, {value})", quoted_name(name)).into_bytes();
        let text = match self.for_secondary(cx, text) {
            Ok(t) => t,
            Err(reason) => {
                m.mark_divergent(&[name.to_string()], &reason);
                return;
            }
        };
        let txn = MirrorTxn {
            committed_at_us: now_us(),
            conn_id: cx.id,
            statements: vec![MirrorStatement {
                db: self.mirror_db(cx),
                sql: text,
                tables: vec![name.to_string()],
                // Outside any transaction, as on the primary.
                ddl: true,
                pins: Pins::default(),
                session: vars.clone(),
            }],
        };
        match m.intent(UNCHECKED_DDL_TOKEN, txn).await {
            Ok(lsn) => m.outcome(lsn, UNCHECKED_DDL_TOKEN, true),
            Err(e) => {
                m.stats
                    .journal_errors
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                m.mark_divergent(
                    &[name.to_string()],
                    &format!("a sequence's position could not be journaled ({e})"),
                );
            }
        }
    }

    /// Runs `payload` (a statement that advances `names` and writes
    /// nothing else), then journals where each sequence now stands.
    pub(super) async fn advance_sequences(
        &mut self,
        cx: &mut Link<'_>,
        m: &Arc<Mirror>,
        names: &[String],
        payload: &[u8],
        seq: u8,
    ) -> Result<(), SessionError> {
        let summary = cx.forward(payload, seq, Expect::ResultSet).await?;
        let sql = format!(
            "SELECT {}",
            names
                .iter()
                .map(|n| format!("LASTVAL({})", quoted_name(n)))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let reply = self.own_read(cx, sql.as_bytes()).await?;
        let row = first_row(&reply, cx.deprecate_eof()).unwrap_or_default();
        let vars = self.ensure_vars(cx).await?;
        let mut lost = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let Some(value) = integer_cell(&row, i) else {
                // Not advanced by this session (the statement failed
                // before calling it), or not readable.
                if summary.error.is_none() {
                    lost.push(name.clone());
                }
                continue;
            };
            self.journal_setval(cx, m, name, &value, &vars).await;
        }
        if !lost.is_empty() {
            m.mark_divergent(
                &lost,
                "a sequence advanced on the primary and its position could not be read",
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::lexer;

    fn names(sql: &str) -> Option<Vec<String>> {
        let mut toks = Vec::new();
        lexer::tokenize(sql.as_bytes(), &mut toks);
        match usage(sql.as_bytes(), &toks) {
            Usage::Advances(n) => Some(n),
            _ => None,
        }
    }

    #[test]
    fn reads_the_sequences_a_statement_advances() {
        assert_eq!(names("SELECT NEXTVAL(s)"), Some(vec!["s".into()]));
        assert_eq!(
            names("SELECT next value for shop.`my s`, NEXTVAL(s), nextval(shop.`my s`)"),
            Some(vec!["shop.my s".into(), "s".into()])
        );
        assert_eq!(names("SELECT LASTVAL(s)"), None);
        assert_eq!(names("DO SETVAL(s, 5), NEXTVAL(s)"), None);
        let mut toks = Vec::new();
        let sql = b"DO SETVAL(s, 5)";
        lexer::tokenize(sql, &mut toks);
        assert!(matches!(usage(sql, &toks), Usage::Refused(r) if r.contains("SETVAL")));
        assert_eq!(names("SELECT 1"), None);
    }
}
