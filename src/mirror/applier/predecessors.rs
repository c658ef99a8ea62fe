//! Apply connections of a previous process. Each apply connection holds
//! a named lock for its life; a starting applier waits for every index's
//! lock before it reads the stored position, since a connection of a
//! killed process may still be committing (the server runs what it was
//! sent to its end, a lock wait included), and a position read before
//! that commit would apply its transactions a second time.

use super::worker::Worker;
use super::*;

/// How long an apply connection waits for its lock (see `conn`).
pub(super) const APPLY_LOCK_WAIT_S: u32 = 60;

/// The named lock of apply connection `index` to `b`'s database: taken by
/// each apply connection for its life, so that none starts while one of a
/// previous process that uses the same index is still running there.
pub(super) fn apply_lock_name(b: &BackendConfig, index: usize) -> String {
    crate::mirror::guard::named_lock(
        &format!("tandem_apply:{index}:"),
        b.database.as_deref().unwrap_or(""),
    )
}

/// Waits until no apply connection of a previous process to `b` is still
/// running (each holds its index's lock until it ends): a COMMIT such a
/// connection sent before its process was killed may still be running,
/// and a position read before it ends would apply its transactions again.
pub(super) async fn wait_for_earlier_appliers(
    conn: &mut Conn,
    b: &BackendConfig,
) -> Result<(), mysql_async::Error> {
    for index in 0..crate::config::MAX_APPLY_WORKERS {
        let name = apply_lock_name(b, index);
        let got: Option<Option<i64>> = conn
            .exec_first("SELECT GET_LOCK(?, ?)", (&name, APPLY_LOCK_WAIT_S))
            .await?;
        if got.flatten() == Some(1) {
            conn.exec_drop("DO RELEASE_LOCK(?)", (&name,)).await?;
        }
    }
    Ok(())
}

impl Worker {
    /// Before anything reads the position: waits (retrying) until no
    /// apply connection of a previous process is still running.
    pub(super) async fn await_earlier_appliers(
        &mut self,
        stop: &CancellationToken,
    ) -> Result<(), ApplierError> {
        let mut attempt = 0;
        loop {
            let b = self.cfg.secondary.clone();
            let r = async { wait_for_earlier_appliers(self.conn().await?, &b).await }.await;
            match r {
                Ok(()) => return Ok(()),
                Err(e) if is_transient(&e, self.compound) && !stop.is_cancelled() => {
                    attempt += 1;
                    self.wait_after(attempt, &e).await;
                }
                Err(e) => return Err(ApplierError::Secondary(e.to_string())),
            }
        }
    }
}

/// KILLs `thread` over `conn` and returns once the server lists it no more.
pub(super) async fn end_thread_on(conn: &mut Conn, thread: u32) -> Result<(), mysql_async::Error> {
    match conn.query_drop(format!("KILL {thread}")).await {
        // 1094: no such thread (it ended by itself).
        Err(mysql_async::Error::Server(e)) if e.code == 1094 => {}
        other => other?,
    }
    loop {
        let left: Option<u64> = conn
            .exec_first(
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = ?",
                (thread,),
            )
            .await?;
        if left == Some(0) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
