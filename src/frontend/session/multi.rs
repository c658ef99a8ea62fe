//! Multi-statement packets with writes, while mirroring. Each write must
//! be pinned, wrapped and journaled on its own (its own time, ids, marker
//! and commit), which capture does statement by statement; so such a
//! packet runs as its statements one after another, each through the
//! whole COM_QUERY path, and their answers make one response: every
//! answer but the last ends with SERVER_MORE_RESULTS_EXISTS and the
//! sequence ids run on, as in the server's own. Like the server, Tandem
//! stops at the first statement that fails; the statements before it
//! stand (each committed as it would have been under autocommit, or
//! still in the open transaction).
//!
//! Packets without writes, DDL or transaction control go to the server
//! whole, as without mirroring.

use super::link::MultiOut;
use super::{Session, SessionError};
use crate::protocol::command::COM_QUERY;
use crate::router::{lexer, Class, Classified};

impl Session<'_> {
    /// Whether the packet must run statement by statement.
    pub(super) fn must_split(&mut self, classified: &Classified) -> bool {
        self.link.multi.is_none()
            && classified.statements.len() > 1
            && self.link.binding.conn().multi_statements
            && self.link.capturing().is_some()
            && classified.statements.iter().any(|r| {
                matches!(
                    r.class,
                    Class::Write(_) | Class::Ddl | Class::Transaction(_)
                )
            })
    }

    /// Runs `payload`'s statements one by one as one response.
    pub(super) async fn split_query(
        &mut self,
        payload: &[u8],
        seq: u8,
    ) -> Result<(), SessionError> {
        let sql = &payload[1..];
        let texts = statement_texts(sql);
        let n = texts.len();
        let mut seq = seq;
        for (i, r) in texts.into_iter().enumerate() {
            let mut p = Vec::with_capacity(r.len() + 1);
            p.push(COM_QUERY);
            p.extend_from_slice(&sql[r]);
            self.link.multi = Some(MultiOut {
                more: i + 1 < n,
                next_seq: seq,
                errored: false,
            });
            let done = Box::pin(self.query(p, seq)).await;
            let out = self.link.multi.take();
            done?;
            let Some(out) = out else { break };
            if out.errored || !out.more {
                break;
            }
            seq = out.next_seq;
            // As between two commands: the statement's own end of
            // transaction, and what ROW_COUNT() says next.
            self.capture.check_txn_end(&mut self.link).await?;
            self.capture.next_command(false);
        }
        Ok(())
    }
}

/// The byte ranges of a packet's statements, each with the comments and
/// spaces before it, without the `;` after it.
fn statement_texts(sql: &[u8]) -> Vec<std::ops::Range<usize>> {
    let mut toks = Vec::new();
    lexer::tokenize(sql, &mut toks);
    let ranges = lexer::split_statements(sql, &toks);
    let mut out = Vec::with_capacity(ranges.len());
    let mut from = 0;
    for r in ranges {
        let end = match toks.get(r.end) {
            Some(t) => t.start,
            None => sql.len(),
        };
        out.push(from..end);
        from = toks.get(r.end).map_or(sql.len(), |t| t.end);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_keep_their_comments_and_lose_their_semicolons() {
        let sql = b"INSERT INTO t VALUES (1); /* c */ UPDATE t SET a = ';' ;SELECT 1;";
        let got: Vec<&[u8]> = statement_texts(sql).into_iter().map(|r| &sql[r]).collect();
        assert_eq!(
            got,
            vec![
                &b"INSERT INTO t VALUES (1)"[..],
                b" /* c */ UPDATE t SET a = ';' ",
                b"SELECT 1"
            ]
        );
        let sql = b"CREATE PROCEDURE p() BEGIN INSERT INTO t VALUES (1); END";
        assert_eq!(statement_texts(sql), vec![0..sql.len()]);
    }
}
