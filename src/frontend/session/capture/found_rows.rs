//! `FOUND_ROWS()` stays the client's. Tandem's own reads on the client's
//! connection (the carried settings, `LAST_INSERT_ID()`, user variables,
//! sequence positions, a keyed write's locking read, catalog facts) are
//! SELECTs, and every SELECT sets what `FOUND_ROWS()` answers next.
//!
//! So the first of them since the client's value was last known is
//! preceded, in the same pipelined batch, by `SELECT FOUND_ROWS()`, and the
//! value is held (`Capture::found_rows`). While it is held, each client
//! statement is sorted by what it does to the server's value:
//! - it keeps it (DML without a subquery, DDL, SET, DO, transaction
//!   control: checked against MariaDB 10.11): `FOUND_ROWS()` calls in it
//!   are answered with the held value (a literal, so a write that reads it
//!   replays exactly), and the value stays held;
//! - it sets it (a plain SELECT): the same rewrite, and the server's value
//!   is the client's again once it succeeds;
//! - anything else (SHOW, CALL, EXECUTE, a statement with a subquery,
//!   several statements in one packet): the server is given the held value
//!   back first (`SELECT SQL_CALC_FOUND_ROWS … LIMIT 0` over a sequence
//!   table, one round trip), and the statement runs as sent.

use super::super::link::{query_packet, Link, Reply};
use super::super::SessionError;
use super::vars::{first_number, first_row, number};
use super::Capture;
use crate::protocol::response::Expect;
use crate::router::lexer::{Tok, Token};

const PROBE: &[u8] = b"SELECT FOUND_ROWS()";

/// What a client statement does to the server's `FOUND_ROWS()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in super::super) enum Effect {
    Keeps,
    Sets,
    Unknown,
}

/// Sorts one statement (its tokens) by its effect on `FOUND_ROWS()`.
pub(in super::super) fn effect(sql: &[u8], toks: &[Token]) -> Effect {
    let Some(first) = toks.first() else {
        return Effect::Keeps;
    };
    if toks[..toks.len() - 1]
        .iter()
        .any(|t| t.kind == Tok::Punct(b';'))
    {
        return Effect::Unknown;
    }
    if first.is_word(sql, "SELECT") {
        return Effect::Sets;
    }
    const UNKNOWN: &[&str] = &[
        "SHOW", "DESC", "DESCRIBE", "EXPLAIN", "ANALYZE", "CALL", "EXECUTE", "HELP", "VALUES",
        "TABLE", "WITH", "HANDLER",
    ];
    if first.kind == Tok::Punct(b'(')
        || UNKNOWN.iter().any(|w| first.is_word(sql, w))
        || toks.iter().any(|t| t.is_word(sql, "SELECT"))
    {
        return Effect::Unknown;
    }
    Effect::Keeps
}

/// Whether the statement calls `FOUND_ROWS()`.
pub(in super::super) fn calls(sql: &[u8], toks: &[Token]) -> bool {
    toks.windows(3).any(|w| {
        w[0].is_word(sql, "FOUND_ROWS")
            && w[1].kind == Tok::Punct(b'(')
            && w[2].kind == Tok::Punct(b')')
    })
}

/// The statement that makes the server's `FOUND_ROWS()` answer `n`.
/// MariaDB's sequence tables (`seq_1_to_N`) exist in every database; the
/// bookkeeping database is one the session's account may read.
fn restore_sql(n: u64, bookkeeping_db: &str) -> String {
    match n {
        0 => "SELECT 1 FROM DUAL WHERE 0".into(),
        1 => "SELECT 1".into(),
        n => format!(
            "SELECT SQL_CALC_FOUND_ROWS 1 FROM {}.seq_1_to_{n} LIMIT 0",
            crate::sql::quote(bookkeeping_db)
        ),
    }
}

impl Capture {
    /// The packet to pipeline before Tandem's own SELECT when the client's
    /// `FOUND_ROWS()` is not held yet; its reply goes to `hold_probe`.
    pub(super) fn probe(&self) -> Option<Vec<u8>> {
        self.found_rows.is_none().then(|| query_packet(PROBE))
    }

    /// Holds the client's value from the probe's reply.
    pub(super) fn hold_probe(&mut self, reply: &Reply, deprecate_eof: bool) {
        self.found_rows = first_number(reply, deprecate_eof);
    }

    /// Runs Tandem's own reads (`packets`, pipelined), first probing the
    /// client's `FOUND_ROWS()` if it is not held; their replies in order.
    pub(super) async fn own_reads(
        &mut self,
        cx: &mut Link<'_>,
        packets: &[&[u8]],
    ) -> Result<Vec<Reply>, SessionError> {
        let probe = self.probe();
        let mut batch: Vec<&[u8]> = Vec::with_capacity(packets.len() + 1);
        batch.extend(probe.as_deref());
        batch.extend_from_slice(packets);
        cx.send_backend(&batch).await?;
        if probe.is_some() {
            let r = cx.read_reply(Expect::ResultSet).await?;
            self.hold_probe(&r, cx.deprecate_eof());
        }
        let mut out = Vec::with_capacity(packets.len());
        for _ in packets {
            out.push(cx.read_reply(Expect::ResultSet).await?);
        }
        Ok(out)
    }

    /// One read of Tandem's own (`sql`), probing first as `own_reads`.
    pub(super) async fn own_read(
        &mut self,
        cx: &mut Link<'_>,
        sql: &[u8],
    ) -> Result<Reply, SessionError> {
        let mut r = self.own_reads(cx, &[&query_packet(sql)]).await?;
        Ok(r.pop().expect("own_reads answers every packet"))
    }

    /// The client's `FOUND_ROWS()`, when Tandem's reads replaced the
    /// server's value.
    pub(in super::super) fn held_found_rows(&self) -> Option<u64> {
        self.found_rows
    }

    /// Before a client statement with `effect` while a value is held:
    /// `Unknown` gives the server the value back; `Sets` lets it go (the
    /// statement will set the server's own). Returns what to give back
    /// with `found_rows_failed` if the statement fails.
    pub(in super::super) async fn settle_found_rows(
        &mut self,
        cx: &mut Link<'_>,
        effect: Effect,
        bookkeeping_db: &str,
    ) -> Result<Option<u64>, SessionError> {
        let Some(n) = self.found_rows else {
            return Ok(None);
        };
        match effect {
            Effect::Keeps => Ok(None),
            Effect::Sets => {
                self.found_rows = None;
                Ok(Some(n))
            }
            Effect::Unknown => {
                let sql = restore_sql(n, bookkeeping_db);
                cx.send_backend(&[&query_packet(sql.as_bytes())]).await?;
                let r = cx.read_reply(Expect::ResultSet).await?;
                if let Some(e) = &r.err {
                    tracing::warn!(conn = cx.id, error = %e, "could not give FOUND_ROWS() its value back");
                }
                self.found_rows = None;
                Ok(None)
            }
        }
    }

    /// Before a session moves to another backend: its `LAST_INSERT_ID()`
    /// and `FOUND_ROWS()` on the one it leaves (the held value, if any).
    pub(in super::super) async fn session_values(
        &mut self,
        cx: &mut Link<'_>,
    ) -> Result<(u64, u64), SessionError> {
        cx.send_backend(&[&query_packet(b"SELECT LAST_INSERT_ID(), FOUND_ROWS()")])
            .await?;
        let r = cx.read_reply(Expect::ResultSet).await?;
        let row = first_row(&r, cx.deprecate_eof()).unwrap_or_default();
        let num = |i: usize| row.get(i).and_then(number).unwrap_or(0);
        Ok((num(0), self.found_rows.unwrap_or_else(|| num(1))))
    }

    /// After a move: the client's `FOUND_ROWS()` is `n`, whatever the new
    /// connection says, until a statement sets it.
    pub(in super::super) fn hold_found_rows(&mut self, n: u64) {
        self.found_rows = Some(n);
    }

    /// A statement that would have set the server's value failed, so the
    /// value the client had still holds (unless Tandem probed since).
    pub(in super::super) fn found_rows_failed(&mut self, n: u64) {
        if self.found_rows.is_none() {
            self.found_rows = Some(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::lexer;

    fn eff(sql: &str) -> Effect {
        let mut t = Vec::new();
        lexer::tokenize(sql.as_bytes(), &mut t);
        effect(sql.as_bytes(), &t)
    }

    #[test]
    fn statements_are_sorted_by_what_they_do_to_found_rows() {
        for s in [
            "INSERT INTO t VALUES (1)",
            "update t set a = 1 where id = 2",
            "DELETE FROM t WHERE id = 3",
            "SET @a = 1",
            "BEGIN",
            "COMMIT",
            "ALTER TABLE t ADD c INT",
            "DO 1",
            "",
        ] {
            assert_eq!(eff(s), Effect::Keeps, "{s}");
        }
        for s in ["SELECT 1", "select sql_calc_found_rows * from t limit 2"] {
            assert_eq!(eff(s), Effect::Sets, "{s}");
        }
        for s in [
            "SHOW TABLES",
            "CALL p()",
            "EXECUTE s",
            "(SELECT 1)",
            "WITH a AS (SELECT 1) SELECT * FROM a",
            "INSERT INTO t SELECT * FROM u",
            "SET @x = (SELECT COUNT(*) FROM t)",
            "SELECT 1; SELECT 2",
            "DESCRIBE t",
        ] {
            assert_eq!(eff(s), Effect::Unknown, "{s}");
        }
    }

    #[test]
    fn restoring_uses_the_cheapest_statement() {
        assert_eq!(restore_sql(0, "tandem"), "SELECT 1 FROM DUAL WHERE 0");
        assert_eq!(restore_sql(1, "tandem"), "SELECT 1");
        assert_eq!(
            restore_sql(42, "tandem"),
            "SELECT SQL_CALC_FOUND_ROWS 1 FROM `tandem`.seq_1_to_42 LIMIT 0"
        );
    }
}
