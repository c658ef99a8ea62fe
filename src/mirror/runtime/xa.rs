//! Prepared XA transactions. A session's XA transaction is journaled at
//! `XA PREPARE` (its intent durable before PREPARE is forwarded, its
//! marker row inserted with its first write, as for COMMIT); its outcome
//! is the `XA COMMIT` or `XA ROLLBACK` that follows — from the same
//! session, from another one, through Tandem or not, or after a restart.
//! One that comes through Tandem settles the intent at once
//! (`xa_decided`); otherwise a watcher settles it from the marker row,
//! which the prepared branch holds locked until it is decided: a locking
//! read that waits a second at a time. Until then the applier waits before
//! it, as a transaction manager waits for the branch.

use super::*;

/// Longest pause between two looks at an undecided branch's marker.
const WATCH_MAX: Duration = Duration::from_secs(10);

impl Mirror {
    /// `XA PREPARE` succeeded: the intent at `lsn` (marker `token`) waits
    /// for the branch's decision. `xid` as the client wrote it (empty when
    /// unknown, after a restart).
    pub fn xa_prepared(self: &Arc<Self>, xid: String, lsn: Lsn, token: u64) {
        // In flight until settled: marker clean-up keeps its row.
        self.with_tokens(|g| g.in_flight.insert(token));
        self.xa_prepared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(lsn, (token, xid));
        tokio::spawn(watch(Arc::downgrade(self), lsn, token));
    }

    /// `XA COMMIT` / `XA ROLLBACK` of `xid` succeeded through Tandem.
    pub fn xa_decided(&self, xid: &str, committed: bool) {
        let found = {
            let mut g = self.xa_prepared.lock().unwrap_or_else(|p| p.into_inner());
            let lsn = g.iter().find(|(_, (_, x))| x == xid).map(|(l, _)| *l);
            lsn.and_then(|l| g.remove(&l).map(|(t, _)| (l, t)))
        };
        if let Some((lsn, token)) = found {
            self.outcome(lsn, token, committed);
        }
    }

    /// Settles `lsn` unless a decision through Tandem did first.
    fn xa_settle(&self, lsn: Lsn, committed: bool) -> bool {
        let entry = self
            .xa_prepared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&lsn);
        match entry {
            Some((token, _)) => {
                info!(lsn, committed, "prepared XA transaction decided outside Tandem's sessions; settled from its marker");
                self.outcome(lsn, token, committed);
                true
            }
            None => false,
        }
    }

    fn xa_pending(&self, lsn: Lsn) -> bool {
        self.xa_prepared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&lsn)
    }

    /// The marker of `token`, read with a lock that waits at most a
    /// second: Some(found) once no prepared branch holds it.
    pub(super) async fn marker_now(&self, token: u64) -> Result<Option<bool>, mysql_async::Error> {
        let roles = self.roles();
        let mut conn =
            crate::backend::own_conn(crate::backend::own_opts(&roles.primary).await).await?;
        conn.query_drop("SET SESSION innodb_lock_wait_timeout = 1")
            .await?;
        let r: Result<Option<u64>, _> = conn
            .query_first(marker_read(
                &roles.marker,
                &roles.marker_owner,
                &token.to_string(),
            ))
            .await;
        let _ = conn.disconnect().await;
        match r {
            Ok(found) => Ok(Some(found.is_some())),
            Err(mysql_async::Error::Server(e)) if e.code == 1205 => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Looks at an undecided branch's marker until it is decided (or settled
/// by a decision through Tandem, or the mirror stops).
async fn watch(mirror: std::sync::Weak<Mirror>, lsn: Lsn, token: u64) {
    let mut wait = Duration::from_millis(500);
    loop {
        let stop = match mirror.upgrade() {
            Some(m) => m.stop.clone(),
            None => return,
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.cancelled() => return,
        }
        let Some(m) = mirror.upgrade() else { return };
        if !m.xa_pending(lsn) {
            return;
        }
        match m.marker_now(token).await {
            Ok(Some(committed)) => {
                m.xa_settle(lsn, committed);
                return;
            }
            Ok(None) => {}
            Err(e) => {
                warn!(lsn, error = %e, "cannot look at a prepared XA transaction's marker yet")
            }
        }
        wait = (wait * 2).min(WATCH_MAX);
    }
}
