//! INSERT … SELECT on a cluster: the SELECT runs as any read does (on the
//! shards its tables' rows are on, merged), its rows are kept (up to the
//! cluster's `merge_buffer`), and the statement goes on as INSERT … VALUES
//! with those rows written as literals: each row is then placed by its
//! shard key, ids come from the global sequence, and the write is one
//! statement per shard, all committed or none, like any multi-row INSERT.

use super::read::Kept;
use super::values::{self, Column};
use super::{not_supported, ClusterSession};
use crate::frontend::session::link::query_packet;
use crate::frontend::session::SessionError;
use crate::protocol::wire::write_frames;
use crate::protocol::ErrSpec;
use crate::router::lexer::{self, Tok, Token};
use crate::router::shard::route::Merge;

/// Where an INSERT … SELECT's SELECT starts (token index) and where what
/// follows it (ON DUPLICATE KEY UPDATE) starts; None: not one.
pub(in crate::frontend::session) fn source_span(
    sql: &[u8],
    toks: &[Token],
) -> Option<(usize, usize)> {
    let first = toks.first()?;
    if !(first.is_word(sql, "INSERT") || first.is_word(sql, "REPLACE")) {
        return None;
    }
    let depths = lexer::depths(toks);
    let top = |i: usize, w: &str| depths[i] == 0 && toks[i].is_word(sql, w);
    let start = (1..toks.len()).find(|&i| {
        top(i, "VALUES")
            || top(i, "VALUE")
            || top(i, "SET")
            || top(i, "SELECT")
            || top(i, "WITH")
            || (depths[i] == 0
                && toks[i].kind == Tok::Punct(b'(')
                && toks
                    .get(i + 1)
                    .is_some_and(|t| t.is_word(sql, "SELECT") || t.is_word(sql, "WITH")))
    })?;
    if top(start, "VALUES") || top(start, "VALUE") || top(start, "SET") {
        return None;
    }
    let end = (start..toks.len())
        .find(|&i| {
            (top(i, "ON") && toks.get(i + 1).is_some_and(|t| t.is_word(sql, "DUPLICATE")))
                || (depths[i] == 0 && toks[i].kind == Tok::Punct(b';'))
        })
        .unwrap_or(toks.len());
    Some((start, end))
}

/// A text-protocol value of column `c` as an SQL literal.
pub(super) fn literal(c: &Column, v: Option<&[u8]>, nbe: bool) -> String {
    let Some(v) = v else {
        return "NULL".into();
    };
    let numeric = matches!(
        c.order(),
        Ok(values::Order::Decimal) | Ok(values::Order::Float)
    );
    if numeric
        && !v.is_empty()
        && v.iter()
            .all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E'))
    {
        return String::from_utf8_lossy(v).into_owned();
    }
    let string = matches!(c.kind, 0x0f | 0xf9..=0xfe | 0xff);
    if (c.charset == 63 && string) || c.kind == 0x10 {
        // Binary strings, BIT and geometry: the bytes exactly.
        if v.is_empty() {
            return "''".into();
        }
        let hex: String = v.iter().map(|b| format!("{b:02X}")).collect();
        return format!("X'{hex}'");
    }
    mysql_common::value::Value::Bytes(v.to_vec()).as_sql(nbe)
}

/// Text-protocol rows written as `(v, …), (v, …)`, each value the literal
/// that reads back the same. None: a row Tandem cannot read.
pub(in crate::frontend::session) fn values_text(
    columns: &[Column],
    rows: &[Vec<u8>],
    nbe: bool,
) -> Option<Vec<u8>> {
    let mut text = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        let fields = values::fields(row, columns.len())?;
        if i > 0 {
            text.extend_from_slice(b", ");
        }
        text.push(b'(');
        for (j, (f, c)) in fields.iter().zip(columns).enumerate() {
            if j > 0 {
                text.extend_from_slice(b", ");
            }
            let v = f.as_ref().map(|r| &row[r.clone()]);
            text.extend_from_slice(literal(c, v, nbe).as_bytes());
        }
        text.push(b')');
    }
    Some(text)
}

impl ClusterSession<'_> {
    /// An INSERT … SELECT written as INSERT … VALUES with the SELECT's
    /// rows. Ok(None): not an INSERT … SELECT; Ok(Some(None)): the client
    /// has its answer (an error, or no row to insert).
    pub(super) async fn insert_values(
        &mut self,
        sql: &[u8],
        seq: u8,
    ) -> Result<Option<Option<Vec<u8>>>, SessionError> {
        let mut toks = Vec::new();
        lexer::tokenize(sql, &mut toks);
        let Some((start, end)) = source_span(sql, &toks) else {
            return Ok(None);
        };
        let at = |i: usize| toks.get(i).map_or(sql.len(), |t| t.start);
        let select = &sql[at(start)..at(end)];
        let (plan, targets) = match self.plan_statement(select, false).await {
            Ok(p) => p,
            Err(e) => {
                self.reply_err(seq, &e).await?;
                return Ok(Some(None));
            }
        };
        let mut packets = Vec::with_capacity(targets.len());
        for &t in &targets {
            match self.text_for(t, plan.text_for(t, select)) {
                Ok(x) => packets.push(query_packet(&x)),
                Err(e) => {
                    self.reply_err(seq, &e).await?;
                    return Ok(Some(None));
                }
            }
        }
        let merge = match plan.merge {
            Merge::Relay => Merge::Concat {
                offset: 0,
                limit: None,
            },
            m => m,
        };
        let max = self.merge_buffer();
        let answer = match self.read_kept(&targets, packets, &merge, seq, max).await? {
            Kept::Rows(p) => p,
            Kept::Answered => return Ok(Some(None)),
            Kept::Unreachable(why) => {
                let e = ErrSpec::new(2013, "HY000", format!("Tandem (cluster): {why}"));
                self.reply_err(seq, &e).await?;
                return Ok(Some(None));
            }
            Kept::TooLarge => {
                let e = not_supported(format!(
                    "an INSERT … SELECT whose rows are more than merge_buffer ({max} bytes)"
                ));
                self.reply_err(seq, &e).await?;
                return Ok(Some(None));
            }
        };
        let nbe = self.no_backslash_escapes;
        let (first, last) = (answer.first(), answer.last());
        if let Some(err) = [first, last]
            .into_iter()
            .flatten()
            .find(|p| p.first() == Some(&0xFF))
        {
            let mut s = seq;
            write_frames(&mut self.client.wbuf, &mut s, err);
            self.client.flush().await?;
            return Ok(Some(None));
        }
        let Some((columns, rows)) = self.kept_rows(&answer) else {
            let e =
                not_supported("an INSERT … SELECT whose SELECT returns no rows Tandem can read");
            self.reply_err(seq, &e).await?;
            return Ok(Some(None));
        };
        if rows.is_empty() {
            // Nothing to insert: one database's answer.
            self.reply_ok(seq).await?;
            return Ok(Some(None));
        }
        let Some(values) = values_text(&columns, rows, nbe) else {
            let e = ErrSpec::new(1105, "HY000", "Tandem: a row it cannot read");
            self.reply_err(seq, &e).await?;
            return Ok(Some(None));
        };
        let mut text = sql[..at(start)].to_vec();
        text.extend_from_slice(b"VALUES ");
        text.extend_from_slice(&values);
        if end < toks.len() {
            text.push(b' ');
            text.extend_from_slice(&sql[at(end)..]);
        }
        Ok(Some(Some(text)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(sql: &str) -> Option<(String, String)> {
        let mut toks = Vec::new();
        lexer::tokenize(sql.as_bytes(), &mut toks);
        let (s, e) = source_span(sql.as_bytes(), &toks)?;
        let at = |i: usize| toks.get(i).map_or(sql.len(), |t| t.start);
        Some((
            sql[at(s)..at(e)].trim().to_string(),
            sql[at(e)..].to_string(),
        ))
    }

    #[test]
    fn the_select_of_an_insert_is_found() {
        assert_eq!(
            span("INSERT INTO t (a, b) SELECT x, y FROM u WHERE z IN (SELECT 1)"),
            Some((
                "SELECT x, y FROM u WHERE z IN (SELECT 1)".into(),
                String::new()
            ))
        );
        assert_eq!(
            span("INSERT IGNORE INTO t (SELECT * FROM u) ON DUPLICATE KEY UPDATE a = 1"),
            Some((
                "(SELECT * FROM u)".into(),
                "ON DUPLICATE KEY UPDATE a = 1".into()
            ))
        );
        assert_eq!(span("INSERT INTO t (a) VALUES ((SELECT 1))"), None);
        assert_eq!(span("INSERT INTO t SET a = (SELECT 1)"), None);
        assert_eq!(span("SELECT 1"), None);
    }

    #[test]
    fn values_are_written_as_the_literals_that_read_back_the_same() {
        let col = |kind, charset| Column {
            charset,
            kind,
            flags: 0,
            decimals: 0,
        };
        assert_eq!(literal(&col(0x08, 63), Some(b"-12"), false), "-12");
        assert_eq!(literal(&col(0xf6, 63), Some(b"1.50"), false), "1.50");
        assert_eq!(literal(&col(0xfd, 45), Some(b"it's"), false), "'it\\'s'");
        assert_eq!(literal(&col(0xfd, 45), Some(b"it's"), true), "'it''s'");
        assert_eq!(literal(&col(0xfd, 63), Some(b"\x00\xff"), false), "X'00FF'");
        assert_eq!(literal(&col(0x0c, 63), None, false), "NULL");
        assert_eq!(
            literal(&col(0x0c, 63), Some(b"2024-01-02 03:04:05"), false),
            "'2024-01-02 03:04:05'"
        );
    }
}
