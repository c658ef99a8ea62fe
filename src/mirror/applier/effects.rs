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
        let Some((last, before)) = txn.statements.split_last() else {
            return Ok(Ok(()));
        };
        if pending == Some(lsn) {
            // Begun before a stop: whether it ran is unknown, unless its
            // first generated id says so.
            match self.inserted_row(last, expected).await? {
                Some(true) => {
                    info!(
                        lsn,
                        "write without transactions had run before the stop (its row is there)"
                    );
                    self.store_position(&[lsn], txn.committed_at_us, position)
                        .await?;
                    return Ok(Ok(()));
                }
                Some(false) => {
                    info!(lsn, "write without transactions had not run before the stop (its row is not there)");
                }
                None => return Ok(Err(UNKNOWN_ON_SECONDARY.into())),
            }
        }
        // What goes before the write (a user variables' SET) can run again.
        for st in before {
            self.set_prelude(st).await?;
            self.conn().await?.query_drop(st.sql.as_slice()).await?;
        }
        self.set_prelude(last).await?;
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

    /// For a plain `INSERT` (not IGNORE, REPLACE or ON DUPLICATE KEY
    /// UPDATE) that succeeded on the primary with a generated id: whether
    /// the row with that id is on the secondary. A statement runs to its
    /// end on the server even when its client is gone, so the row tells
    /// whether it ran there. None: nothing tells.
    async fn inserted_row(
        &mut self,
        st: &crate::mirror::record::MirrorStatement,
        expected: Option<u16>,
    ) -> Result<Option<bool>, mysql_async::Error> {
        let (Some(id), None, [table]) = (st.pins.insert_id, expected, st.tables.as_slice()) else {
            return Ok(None);
        };
        let mut toks = Vec::new();
        crate::router::lexer::tokenize(&st.sql, &mut toks);
        let plain_insert = toks.first().is_some_and(|t| t.is_word(&st.sql, "INSERT"))
            && !toks
                .iter()
                .any(|t| t.is_word(&st.sql, "IGNORE") || t.is_word(&st.sql, "DUPLICATE"));
        if !plain_insert {
            return Ok(None);
        }
        let (db, name) = match table.split_once('.') {
            Some((d, t)) => (Some(d.to_string()), t.to_string()),
            None => (
                st.db
                    .clone()
                    .or_else(|| self.cfg.secondary.database.clone()),
                table.clone(),
            ),
        };
        let Some(db) = db else { return Ok(None) };
        let lit = |s: &str| crate::sql::sql_literal(s.as_bytes());
        let column: Option<String> = self
            .conn()
            .await?
            .query_first(format!(
                "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = {} \
                 AND TABLE_NAME = {} AND EXTRA LIKE '%auto_increment%'",
                lit(&db),
                lit(&name)
            ))
            .await?;
        let Some(column) = column else {
            return Ok(None);
        };
        let found: Option<u8> = self
            .conn()
            .await?
            .query_first(format!(
                "SELECT 1 FROM {} WHERE {} = {id}",
                crate::sql::qualified(Some(&db), &name),
                crate::sql::quote(&column)
            ))
            .await?;
        Ok(Some(found.is_some()))
    }
}
