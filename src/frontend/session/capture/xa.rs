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

/// An xid in one form however it is written (`'a'`, `'a','',1`, `X'61'`,
/// `0x61`): `formatID:hex(gtrid):hex(bqual)`. None: a form Tandem does not
/// read; the text as written (whitespace left out) stands for it then.
fn canonical_xid(sql: &[u8], toks: &[Token]) -> Option<String> {
    let parts: Vec<&[Token]> = toks.split(|t| t.kind == Tok::Punct(b',')).collect();
    let one = |p: &[Token]| -> Option<Token> {
        match p {
            [t] => Some(*t),
            _ => None,
        }
    };
    let gtrid = string_value(one(parts.first()?)?.text(sql))?;
    let bqual = match parts.get(1) {
        Some(p) => string_value(one(p)?.text(sql))?,
        None => Vec::new(),
    };
    let format: u64 = match parts.get(2) {
        Some(p) => std::str::from_utf8(one(p)?.text(sql)).ok()?.parse().ok()?,
        None => 1,
    };
    if parts.len() > 3 {
        return None;
    }
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    Some(format!("{format}:{}:{}", hex(&gtrid), hex(&bqual)))
}

/// The bytes a string literal of an xid stands for: quoted
/// (`sql::string_value`), `X'…'` or `0x…`.
fn string_value(t: &[u8]) -> Option<Vec<u8>> {
    let unhex = |h: &[u8]| -> Option<Vec<u8>> {
        if !h.len().is_multiple_of(2) {
            return None;
        }
        h.chunks(2)
            .map(|c| u8::from_str_radix(std::str::from_utf8(c).ok()?, 16).ok())
            .collect()
    };
    match t {
        [b'x' | b'X', b'\'', inner @ .., b'\''] => unhex(inner),
        [b'0', b'x', digits @ ..] => unhex(digits),
        [b'\'' | b'"', ..] => crate::sql::string_value(t, false),
        _ => None,
    }
}

/// The XA statement `sql` is, if it is one. Its xid is in canonical form
/// (`canonical_xid`), or its text as written when Tandem cannot read it.
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
    let xid_toks = toks.get(2..xid_end).unwrap_or_default();
    let xid: String = canonical_xid(sql, xid_toks).unwrap_or_else(|| {
        xid_toks
            .iter()
            .map(|t| String::from_utf8_lossy(t.text(sql)).into_owned())
            .collect()
    });
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
        assert_eq!(cmd("XA START 'a'"), Some(XaCmd::Start("1:61:".into())));
        assert_eq!(
            cmd("xa begin 'a', 'b', 7"),
            Some(XaCmd::Start("7:61:62".into()))
        );
        assert_eq!(
            cmd("XA PREPARE 'a' , 'b',7"),
            Some(XaCmd::Prepare("7:61:62".into()))
        );
        assert_eq!(
            cmd("XA COMMIT 'a' ONE PHASE"),
            Some(XaCmd::Commit {
                xid: "1:61:".into(),
                one_phase: true
            })
        );
        assert_eq!(
            cmd("XA COMMIT 'a'"),
            Some(XaCmd::Commit {
                xid: "1:61:".into(),
                one_phase: false
            })
        );
        assert_eq!(
            cmd("XA ROLLBACK 'a'"),
            Some(XaCmd::Rollback("1:61:".into()))
        );
        // One xid however it is written.
        for same in ["'a', '', 1", "X'61'", "0x61", "\"a\"", "'a',''"] {
            assert_eq!(
                cmd(&format!("XA COMMIT {same}")),
                Some(XaCmd::Commit {
                    xid: "1:61:".into(),
                    one_phase: false
                }),
                "{same}"
            );
        }
        assert_eq!(
            cmd("XA ROLLBACK 'it''s', 'b\\'q'"),
            Some(XaCmd::Rollback("1:69742773:622771".into()))
        );
        assert_eq!(cmd("XA END 'a'"), Some(XaCmd::End));
        assert_eq!(cmd("XA RECOVER"), Some(XaCmd::Other));
        assert_eq!(cmd("COMMIT"), None);
    }
}
