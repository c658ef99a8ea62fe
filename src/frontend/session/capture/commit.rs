//! The commit path of a transaction with buffered writes: admission to
//! the journal, the marker row, the intent (durable before COMMIT is
//! forwarded), COMMIT and its outcome.

use super::super::link::{query_packet, Link, Reply};
use super::super::SessionError;
use super::{Capture, Marker};
use crate::mirror::bookkeeping;
use crate::mirror::now_us;
use crate::mirror::record::{tables_of, MirrorTxn};
use crate::mirror::runtime::{Admit, Mirror};
use crate::protocol::response::Expect;
use crate::protocol::ErrSpec;
use std::sync::atomic::Ordering;
use std::sync::Arc;

impl Capture {
    /// The commit path of a transaction with buffered writes. Returns the
    /// reply for the client (COMMIT's answer, or the error that stopped it).
    /// `xa`: `commit` is the `XA PREPARE` of this xid: the intent waits
    /// for the branch's decision instead of being settled (see `xa`).
    pub(super) async fn commit_txn(
        &mut self,
        cx: &mut Link<'_>,
        m: &Arc<Mirror>,
        commit: &[u8],
        xa: Option<String>,
    ) -> Result<Reply, SessionError> {
        let limit = cx.shared.config.load().journal_limit;
        match m.admit(&limit, &tables_of(&self.txn)).await {
            Admit::Journal => {}
            Admit::Degraded => {
                // Committed unmirrored; the tables are marked divergent.
                self.end_txn(cx);
                cx.send_backend(&[commit]).await?;
                let reply = cx.read_reply(Expect::ResultSet).await?;
                if let Some(ok) = reply.ok {
                    cx.status = ok.status_flags();
                }
                return Ok(reply);
            }
            Admit::Refused(msg) => {
                // Nothing was committed: roll back and say why.
                self.end_txn(cx);
                return rolled_back(cx, msg).await;
            }
        }
        // Normally the marker row went in with the first write; if that
        // insert failed, it is inserted now, while the intent is fsynced.
        let early = self.marker.take().map(Marker::take);
        let token = early.unwrap_or_else(|| m.token());
        let statements = std::mem::take(&mut self.txn);
        self.savepoints.clear();
        cx.after_error = false;
        let tables = tables_of(&statements);
        let n = statements.len() as u64;
        let txn = MirrorTxn {
            committed_at_us: now_us(),
            conn_id: cx.id,
            statements,
        };
        if early.is_none() {
            let marker = query_packet(m.marker_insert(token).as_bytes());
            if let Err(e) = cx.send_backend(&[&marker]).await {
                m.abandon(token);
                return Err(e);
            }
        }
        let lsn = match m.intent(token, txn).await {
            Ok(lsn) => Some(lsn),
            Err(e) => {
                if let Some(msg) = self.journal_failed(cx, m, &tables, &e.to_string()) {
                    m.abandon(token);
                    if early.is_none() {
                        // The marker insert's answer.
                        cx.read_reply(Expect::ResultSet).await?;
                    }
                    return rolled_back(cx, msg).await;
                }
                None
            }
        };
        if early.is_none() {
            let marker_reply = match cx.read_reply(Expect::ResultSet).await {
                Ok(r) => r,
                Err(e) => {
                    // Connection gone before COMMIT: the server rolled back.
                    self.settle(m, lsn, token, false);
                    return Err(e);
                }
            };
            let marker_reply = match marker_reply.err {
                Some(code)
                    if bookkeeping::is_missing(code) && m.restore_bookkeeping().await.is_ok() =>
                {
                    let marker = query_packet(m.marker_insert(token).as_bytes());
                    let again = async {
                        cx.send_backend(&[&marker]).await?;
                        cx.read_reply(Expect::ResultSet).await
                    };
                    match again.await {
                        Ok(r) => r,
                        Err(e) => {
                            self.settle(m, lsn, token, false);
                            return Err(e);
                        }
                    }
                }
                _ => marker_reply,
            };
            if marker_reply.err.is_some() {
                // Without its marker the transaction must not commit.
                let _ = cx.run_aux(&[b"ROLLBACK"]).await;
                self.settle(m, lsn, token, false);
                return Ok(marker_reply);
            }
        }
        if let Err(e) = cx.send_backend(&[commit]).await {
            self.settle(m, lsn, token, false);
            return Err(e);
        }
        match cx.read_reply(Expect::ResultSet).await {
            Ok(reply) => {
                let committed = reply.err.is_none();
                if committed {
                    m.stats.statements.fetch_add(n, Ordering::Relaxed);
                    match (xa, lsn) {
                        (Some(xid), Some(lsn)) => m.xa_prepared(xid, lsn, token),
                        (_, lsn) => self.settle(m, lsn, token, true),
                    }
                } else {
                    self.commit_failed(m, lsn, token);
                }
                if let Some(ok) = reply.ok {
                    cx.status = ok.status_flags();
                }
                Ok(reply)
            }
            Err(e) => {
                match lsn {
                    Some(lsn) => m.in_doubt(lsn, token, Some(cx.backend_thread())),
                    None => m.abandon(token),
                }
                Err(e)
            }
        }
    }
}

/// Rolls the session's transaction back and answers the COMMIT with why.
async fn rolled_back(cx: &mut Link<'_>, msg: String) -> Result<Reply, SessionError> {
    if let Some(ok) = cx.run_aux(&[b"ROLLBACK"]).await? {
        cx.status = ok.status_flags();
    }
    Ok(Reply {
        packets: vec![ErrSpec::new(1105, "HY000", msg).encode()],
        ok: None,
        err: Some(1105),
    })
}
