//! XA transactions (see `mirror::runtime::xa`): `XA START` begins a
//! transaction whose writes are buffered as any (the marker row goes in
//! with the first one); `XA PREPARE` is its commit point for the journal
//! (the intent is durable before PREPARE is forwarded); the decision, `XA
//! COMMIT` or `XA ROLLBACK` from any session or none, settles it. `XA
//! COMMIT … ONE PHASE` is a plain commit.

use super::super::link::Link;
use super::super::SessionError;
use super::Capture;
use crate::mirror::runtime::Mirror;
use crate::protocol::response::Expect;
use crate::router::lexer::{Tok, Token};
use std::sync::Arc;

/// One XA statement.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum XaCmd {
    Start(String),
    End,
    Prepare(String),
    Commit {
        xid: String,
        one_phase: bool,
    },
    Rollback(String),
    /// XA RECOVER and anything else: forwarded as it is.
    Other,
}

/// The XA statement `sql` is, if it is one. An xid is compared by its text
/// as written (`'a','b',1`), whitespace left out.
pub(super) fn xa_cmd(sql: &[u8], toks: &[Token]) -> Option<XaCmd> {
    if !toks.first()?.is_word(sql, "XA") {
        return None;
    }
    let verb = toks.get(1)?;
    let xid_end = toks
        .iter()
        .skip(2)
        .position(|t| t.kind == Tok::Word)
        .map_or(toks.len(), |p| p + 2);
    let xid: String = toks
        .get(2..xid_end)
        .unwrap_or_default()
        .iter()
        .map(|t| String::from_utf8_lossy(t.text(sql)).into_owned())
        .collect();
    let one_phase = toks.get(xid_end).is_some_and(|t| t.is_word(sql, "ONE"));
    Some(
        if verb.is_word(sql, "START") || verb.is_word(sql, "BEGIN") {
            XaCmd::Start(xid)
        } else if verb.is_word(sql, "END") {
            XaCmd::End
        } else if verb.is_word(sql, "PREPARE") {
            XaCmd::Prepare(xid)
        } else if verb.is_word(sql, "COMMIT") {
            XaCmd::Commit { xid, one_phase }
        } else if verb.is_word(sql, "ROLLBACK") {
            XaCmd::Rollback(xid)
        } else {
            XaCmd::Other
        },
    )
}

impl Capture {
    /// Runs an XA statement; false: not one, or one forwarded as it is by
    /// the caller.
    pub(super) async fn xa(
        &mut self,
        cx: &mut Link<'_>,
        m: &Arc<Mirror>,
        cmd: XaCmd,
        payload: &[u8],
        seq: u8,
    ) -> Result<bool, SessionError> {
        match cmd {
            XaCmd::Start(xid) => {
                let summary = cx.forward(payload, seq, Expect::ResultSet).await?;
                if summary.error.is_none() {
                    self.txn_isolation = None;
                    self.transaction_begins();
                    self.xa = Some(xid);
                }
                Ok(true)
            }
            XaCmd::Prepare(xid) if !self.txn.is_empty() => {
                let reply = self.commit_txn(cx, m, payload, Some(xid)).await?;
                self.xa = None;
                cx.relay(seq, reply, false).await?;
                Ok(true)
            }
            XaCmd::Commit {
                one_phase: true, ..
            } if !self.txn.is_empty() => {
                let reply = self.commit_txn(cx, m, payload, None).await?;
                self.xa = None;
                cx.relay(seq, reply, false).await?;
                Ok(true)
            }
            XaCmd::Prepare(_)
            | XaCmd::Commit {
                one_phase: true, ..
            } => {
                // Nothing mirrored in it.
                cx.forward(payload, seq, Expect::ResultSet).await?;
                self.end_txn(cx);
                self.xa = None;
                Ok(true)
            }
            XaCmd::Commit { xid, .. } => self.xa_decide(cx, m, &xid, true, payload, seq).await,
            XaCmd::Rollback(xid) => self.xa_decide(cx, m, &xid, false, payload, seq).await,
            XaCmd::End | XaCmd::Other => Ok(false),
        }
    }

    /// `XA COMMIT xid` (`commit`) or `XA ROLLBACK xid`: a prepared branch's
    /// decision settles its intent, whichever session prepared it.
    async fn xa_decide(
        &mut self,
        cx: &mut Link<'_>,
        m: &Arc<Mirror>,
        xid: &str,
        commit: bool,
        payload: &[u8],
        seq: u8,
    ) -> Result<bool, SessionError> {
        let summary = cx.forward(payload, seq, Expect::ResultSet).await?;
        if summary.error.is_none() {
            m.xa_decided(xid, commit);
            if self.xa.as_deref() == Some(xid) {
                // Its own branch, not prepared: it ended here (rolled back).
                self.end_txn(cx);
                self.xa = None;
            }
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(sql: &str) -> Option<XaCmd> {
        let mut toks = Vec::new();
        crate::router::lexer::tokenize(sql.as_bytes(), &mut toks);
        xa_cmd(sql.as_bytes(), &toks)
    }

    #[test]
    fn xa_statements_and_their_xids() {
        assert_eq!(cmd("XA START 'a'"), Some(XaCmd::Start("'a'".into())));
        assert_eq!(
            cmd("xa begin 'a', 'b', 7"),
            Some(XaCmd::Start("'a','b',7".into()))
        );
        assert_eq!(
            cmd("XA PREPARE 'a' , 'b',7"),
            Some(XaCmd::Prepare("'a','b',7".into()))
        );
        assert_eq!(
            cmd("XA COMMIT 'a' ONE PHASE"),
            Some(XaCmd::Commit {
                xid: "'a'".into(),
                one_phase: true
            })
        );
        assert_eq!(
            cmd("XA COMMIT 'a'"),
            Some(XaCmd::Commit {
                xid: "'a'".into(),
                one_phase: false
            })
        );
        assert_eq!(cmd("XA ROLLBACK 'a'"), Some(XaCmd::Rollback("'a'".into())));
        assert_eq!(cmd("XA END 'a'"), Some(XaCmd::End));
        assert_eq!(cmd("XA RECOVER"), Some(XaCmd::Other));
        assert_eq!(cmd("COMMIT"), None);
    }
}
