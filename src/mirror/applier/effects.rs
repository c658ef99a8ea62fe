//! Applying an effect (a write to tables without transactions; see
//! `mirror::effect`): alone, outside a transaction, announced first in
//! `effect_pending` so that a crash in the middle is found, and checked
//! against the primary's answer (the same error, or none).

use super::worker::Worker;
use super::*;
use crate::mirror::effect::{pending_query, pending_sql, UNKNOWN_ON_SECONDARY};

impl Worker {
    pub(super) async fn apply_effect(
        &mut self,
        stop: &CancellationToken,
        lsn: Lsn,
        txn: &MirrorTxn,
        expected: Option<u16>,
        position: Position,
    ) -> Result<Outcome, ApplierError> {
        let mut attempt = 0u32;
        loop {
            let tried = tokio::time::timeout(
                self.cfg.attempt_timeout,
                self.try_effect(lsn, txn, expected, position),
            )
            .await
            .unwrap_or_else(|_| {
                Err(mysql_async::Error::Io(mysql_async::IoError::Io(
                    std::io::Error::new(std::io::ErrorKind::TimedOut, "apply attempt timed out"),
                )))
            });
            match tried {
                Ok(Ok(())) => {
                    self.count_applied(&[txn]);
                    return Ok(Outcome::Done);
                }
                Ok(Err(reason)) => {
                    self.permanent(lsn, Some(txn), &reason, position).await?;
                    return Ok(Outcome::Done);
                }
                Err(e) if errors::is_transient(&e, self.compound) || self.bookkeeping_gone(&e) => {
                    // The connection may be gone with the statement sent:
                    // the next attempt finds the pending row and says so.
                    self.drop_conn();
                    self.tables_ensured = false;
                    attempt += 1;
                    tokio::select! {
                        _ = self.wait_after(attempt, &e) => {}
                        _ = stop.cancelled() => return Ok(Outcome::Stopped),
                    }
                }
                Err(e) => {
                    self.permanent(lsn, Some(txn), &e.to_string(), position)
                        .await?;
                    return Ok(Outcome::Done);
                }
            }
        }
    }

    /// One attempt. Ok(Err(reason)): the effect cannot be applied exactly.
    async fn try_effect(
        &mut self,
        lsn: Lsn,
        txn: &MirrorTxn,
        expected: Option<u16>,
        position: Position,
    ) -> Result<Result<(), String>, mysql_async::Error> {
        if self.is_applied(lsn).await? {
            return Ok(Ok(()));
        }
        let b = self.cfg.secondary.clone();
        let pending: Option<u64> = self.conn().await?.query_first(pending_query(&b)).await?;
        if pending == Some(lsn) {
            return Ok(Err(UNKNOWN_ON_SECONDARY.into()));
        }
        let Some((last, before)) = txn.statements.split_last() else {
            return Ok(Ok(()));
        };
        // What goes before the write (a user variables' SET) can run again.
        for st in before {
            self.run_with_prelude(st).await?;
        }
        let prelude = self.prelude(last);
        let setup = [prelude.session, prelude.pins].concat();
        if !setup.is_empty() {
            self.conn().await?.query_drop(setup).await?;
        }
        self.conn().await?.query_drop(pending_sql(&b, lsn)).await?;
        let got = match self.conn().await?.query_drop(last.sql.as_slice()).await {
            Ok(()) => None,
            Err(mysql_async::Error::Server(e)) => Some(e.code),
            Err(e) => return Err(e),
        };
        if got != expected {
            let say = |c: Option<u16>| c.map_or("success".to_string(), |c| format!("ERROR {c}"));
            return Ok(Err(format!(
                "a write to a table without transactions answered {} on the primary and {} on the secondary: their rows differ",
                say(expected),
                say(got)
            )));
        }
        self.store_position(&[lsn], txn.committed_at_us, position)
            .await?;
        Ok(Ok(()))
    }

    async fn run_with_prelude(
        &mut self,
        st: &crate::mirror::record::MirrorStatement,
    ) -> Result<(), mysql_async::Error> {
        let prelude = self.prelude(st);
        let setup = [prelude.session, prelude.pins].concat();
        let conn = self.conn().await?;
        if !setup.is_empty() {
            conn.query_drop(setup).await?;
        }
        conn.query_drop(st.sql.as_slice()).await
    }
}
