//! One apply connection: applies a group of transactions as one secondary
//! transaction (a compound block on MariaDB), retries transient errors,
//! narrows a permanent one down to its transaction.

use super::predecessors::{apply_lock_name, end_thread_on, APPLY_LOCK_WAIT_S};
use super::*;

/// What goes before a mirrored statement on the apply connection.
pub(super) struct Prelude {
    /// `USE` and session `SET`s: the state the statement is parsed under.
    pub(super) session: Vec<u8>,
    /// `SET` of the values the primary generated (TIMESTAMP, INSERT_ID, …).
    pub(super) pins: Vec<u8>,
}

/// One apply connection and its session state.
pub(super) struct Worker {
    pub(super) index: usize,
    pub(super) cfg: Arc<ApplierConfig>,
    pub(super) stats: Arc<ApplierStats>,
    pub(super) conn: Option<Conn>,
    /// Session state last set on `conn` (avoids re-sending unchanged SETs).
    pub(super) current_db: Option<String>,
    pub(super) session: Vec<(String, String)>,
    /// The settings of the last statement prepared for `conn` (all of them
    /// are in `session`).
    pub(super) last_session: Option<super::super::record::SessionVars>,
    /// The connection's TIMESTAMP may be pinned (reset before an unpinned
    /// statement).
    pub(super) ts_pinned: bool,
    /// The secondary runs compound statements (MariaDB): groups are sent
    /// as `BEGIN NOT ATOMIC … END` blocks.
    pub(super) compound: bool,
    /// A compound block failed where the plain statements applied: plain
    /// statements from then on.
    pub(super) compound_refused: bool,
    /// The server thread of a connection given up on after a failed or
    /// timed-out attempt, until it is known to have ended.
    pub(super) abandoned: Option<u32>,
    /// The bookkeeping tables were created (if missing) on this run.
    pub(super) tables_ensured: bool,
}

/// How long one attempt to apply a DDL may take.
const DDL_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);

impl Worker {
    pub(super) fn new(index: usize, cfg: Arc<ApplierConfig>, stats: Arc<ApplierStats>) -> Self {
        Self {
            index,
            cfg,
            stats,
            conn: None,
            current_db: None,
            session: Vec::new(),
            last_session: None,
            ts_pinned: true,
            compound: false,
            compound_refused: false,
            abandoned: None,
            tables_ensured: false,
        }
    }

    /// Applies a job; returns the position it stored.
    pub(super) async fn run_job(
        &mut self,
        stop: &CancellationToken,
        job: Job,
    ) -> Result<(Outcome, Lsn), ApplierError> {
        if let Some((lsn, reason)) = job.dead {
            self.permanent(lsn, None, &reason, job.position).await?;
            return Ok((Outcome::Done, lsn));
        }
        let Some(&(last, _)) = job.txns.last() else {
            return Ok((Outcome::Done, 0));
        };
        if let (Some(expected), [(lsn, txn)]) = (job.effect, job.txns.as_slice()) {
            let outcome = self
                .apply_effect(stop, *lsn, txn, expected, job.position)
                .await?;
            return Ok((outcome, *lsn));
        }
        let outcome = self
            .apply_group(
                stop,
                &job.txns,
                job.position,
                job.first_after_start,
                job.cleanup,
            )
            .await?;
        let stored = match job.position {
            Position::Contiguous => last,
            Position::Sparse { lwm } => lwm,
        };
        Ok((outcome, stored))
    }

    /// Applies a group of committed transactions (ending at `lsn`) as one,
    /// retrying transient failures in order. A permanent failure of a group
    /// of several is narrowed down by applying its transactions one by one.
    pub(super) async fn apply_group(
        &mut self,
        stop: &CancellationToken,
        group: &[(Lsn, MirrorTxn)],
        position: Position,
        first_after_start: bool,
        cleanup: Option<Lsn>,
    ) -> Result<Outcome, ApplierError> {
        let Some(&(lsn, _)) = group.last() else {
            return Ok(Outcome::Done);
        };
        let txns: Vec<&MirrorTxn> = group.iter().map(|(_, t)| t).collect();
        let lsns: Vec<Lsn> = group.iter().map(|(l, _)| *l).collect();
        let mut attempt = 0u32;
        // A DDL may run for hours on a big table: giving it up after
        // `attempt_timeout` would restart it for ever.
        let ddl = txns.len() == 1 && txns[0].statements.iter().all(|s| s.ddl);
        loop {
            let timeout = if ddl {
                DDL_ATTEMPT_TIMEOUT
            } else {
                self.cfg.attempt_timeout
            };
            let tried = match tokio::time::timeout(timeout, async {
                // After a failure the COMMIT may have succeeded with its
                // answer lost: the stored position says whether it did,
                // once no earlier attempt can still commit.
                if let Some(thread) = self.abandoned {
                    self.end_thread(thread).await?;
                    self.abandoned = None;
                }
                if attempt > 0 && self.is_applied(lsn).await? {
                    return Ok(true);
                }
                // A DDL an earlier attempt ran (its position write then
                // failed) finds itself done: taken as applied.
                let maybe_done = first_after_start || attempt > 0;
                let r = self
                    .try_apply(&lsns, &txns, position, maybe_done, cleanup)
                    .await;
                // A carried temporary table the failed attempt created
                // would outlive it on this connection (its DROP did not
                // run) and hide a real table of that name: start afresh.
                if matches!(r, Err(mysql_async::Error::Server(_))) && carries(&txns) {
                    let _ = self.rollback().await;
                    self.drop_conn();
                }
                r.map(|_| false)
            })
            .await
            {
                Ok(r) => r,
                Err(_) => Err(mysql_async::Error::Io(mysql_async::IoError::Io(
                    std::io::Error::new(std::io::ErrorKind::TimedOut, "apply attempt timed out"),
                ))),
            };
            match tried {
                Ok(already_committed) => {
                    if already_committed {
                        info!(
                            lsn,
                            "transaction had committed before the connection was lost"
                        );
                    }
                    self.count_applied(&txns);
                    return Ok(Outcome::Done);
                }
                Err(e) if self.bookkeeping_gone(&e) => {
                    // Someone dropped Tandem's bookkeeping database or a
                    // table of it: the attempt rolled back; the tables are
                    // created again and the position is written afresh
                    // (this worker knows where it stands).
                    error!(error = %e, "the secondary's bookkeeping tables are gone; creating them again");
                    let _ = self.rollback().await;
                    self.tables_ensured = false;
                    attempt += 1;
                    tokio::select! {
                        _ = self.wait_after(attempt, &e) => {}
                        _ = stop.cancelled() => return Ok(Outcome::Stopped),
                    }
                }
                Err(e) if is_transient(&e, self.compound) => {
                    attempt += 1;
                    tokio::select! {
                        _ = self.wait_after(attempt, &e) => {}
                        _ = stop.cancelled() => return Ok(Outcome::Stopped),
                    }
                }
                Err(e) if group.len() > 1 => {
                    let _ = self.rollback().await;
                    warn!(error = %e, size = group.len(), "group failed; applying it one transaction at a time");
                    for one in group {
                        let r = Box::pin(self.apply_group(
                            stop,
                            std::slice::from_ref(one),
                            position,
                            first_after_start,
                            None,
                        ))
                        .await?;
                        if r == Outcome::Stopped {
                            return Ok(Outcome::Stopped);
                        }
                    }
                    return Ok(Outcome::Done);
                }
                Err(e) => {
                    let _ = self.rollback().await;
                    self.permanent(lsn, txns.first().copied(), &e.to_string(), position)
                        .await?;
                    return Ok(Outcome::Done);
                }
            }
        }
    }

    /// Runs `st`'s prelude on its own (`USE`, session `SET`s, pinned
    /// values), before a statement run outside a compound block (DDL,
    /// writes without transactions).
    pub(super) async fn set_prelude(
        &mut self,
        st: &super::super::record::MirrorStatement,
    ) -> Result<(), mysql_async::Error> {
        let prelude = self.prelude(st);
        let sql = [prelude.session, prelude.pins].concat();
        if !sql.is_empty() {
            self.conn().await?.query_drop(sql).await?;
        }
        Ok(())
    }

    /// Counts an applied group in the stats (lag, totals).
    pub(super) fn count_applied(&self, txns: &[&MirrorTxn]) {
        let now = super::super::now_us();
        for t in txns {
            self.stats
                .lag
                .record((now - t.committed_at_us).max(0) as u64);
        }
        self.stats
            .applied
            .fetch_add(txns.len() as u64, Ordering::Relaxed);
        self.stats.groups.fetch_add(1, Ordering::Relaxed);
        if let Some(t) = txns.last() {
            self.stats
                .last_committed_at_us
                .fetch_max(t.committed_at_us, Ordering::Relaxed);
        }
    }

    /// Applies `txns` (committed transactions at `lsns`) as one secondary
    /// transaction with the position update, sent as one query (see
    /// `script`): one round trip however many statements.
    pub(super) async fn try_apply(
        &mut self,
        lsns: &[Lsn],
        txns: &[&MirrorTxn],
        position: Position,
        first_after_start: bool,
        cleanup: Option<Lsn>,
    ) -> Result<(), mysql_async::Error> {
        // Connect first: connecting resets the cached session state the
        // scripts below are built against.
        self.conn().await?;
        let last_commit = txns.last().map_or(0, |t| t.committed_at_us);
        let ddl_only = txns.len() == 1
            && !txns[0].statements.is_empty()
            && txns[0].statements.iter().all(|s| s.ddl);
        if ddl_only {
            for st in &txns[0].statements {
                self.set_prelude(st).await?;
                let r = self.conn().await?.query_drop(st.sql.as_slice()).await;
                match r {
                    Err(mysql_async::Error::Server(e))
                        if first_after_start && is_replayed_ddl(e.code) =>
                    {
                        info!(
                            lsn = lsns.last().copied().unwrap_or_default(),
                            code = e.code,
                            "DDL already applied before the restart"
                        );
                    }
                    other => other?,
                }
            }
            return self.store_position(lsns, last_commit, position).await;
        }
        let compound = self.compound && !self.compound_refused;
        if compound {
            let script = self.script(true, lsns, txns, position, cleanup);
            match self.send_script(script).await {
                Ok(()) => return Ok(()),
                Err(e) if is_transient(&e, self.compound) => return Err(e),
                Err(e) => {
                    // The same group as plain statements: a server that
                    // refuses the compound form for these statements still
                    // applies them, and a real failure fails again there.
                    self.rollback().await?;
                    let plain = self.script(false, lsns, txns, position, cleanup);
                    self.send_script(plain).await?;
                    self.stats.plain_fallbacks.fetch_add(1, Ordering::Relaxed);
                    warn!(error = %e, "secondary refused a compound apply statement that applies as plain statements; this connection sends plain statements from now on");
                    self.compound_refused = true;
                    return Ok(());
                }
            }
        }
        let script = self.script(false, lsns, txns, position, cleanup);
        self.send_script(script).await
    }

    /// Sends one apply script; after a failure, which SETs ran is unknown,
    /// so the next attempt starts clean.
    pub(super) async fn send_script(&mut self, script: Vec<u8>) -> Result<(), mysql_async::Error> {
        let r = self.conn().await?.query_drop(script).await;
        if r.is_err() {
            self.current_db = None;
            self.session.clear();
            self.last_session = None;
            self.ts_pinned = true;
        }
        r
    }

    /// The group as one query: `START TRANSACTION`, each statement after
    /// its `USE`/`SET` prelude, the position, `COMMIT`.
    ///
    /// Plain, it is a multi-statement script, which the server answers with
    /// a packet per statement. `compound` wraps the statements in MariaDB
    /// `BEGIN NOT ATOMIC … END` blocks, answered with one packet per block,
    /// which cuts MariaDB's CPU per applied transaction by a quarter (groups
    /// of 1) to two thirds (groups of 16) (`scripts/apply-cost.sh`; about
    /// 50 µs per sysbench transaction under load). `USE` and session `SET`s stay outside the
    /// blocks, so that every block is parsed under the session state its
    /// statements were written for (a block is parsed whole before it runs,
    /// and a stored program restores `sql_mode` when it ends); the pinned
    /// values (TIMESTAMP, INSERT_ID, LAST_INSERT_ID, RAND seeds) are set
    /// inside, before each statement, as in the plain form.
    pub(super) fn script(
        &mut self,
        compound: bool,
        lsns: &[Lsn],
        txns: &[&MirrorTxn],
        position: Position,
        cleanup: Option<Lsn>,
    ) -> Vec<u8> {
        const OPEN: &[u8] = b"BEGIN NOT ATOMIC\n";
        const START: &[u8] = b"START TRANSACTION;\n";
        let text: usize = txns
            .iter()
            .flat_map(|t| &t.statements)
            .map(|st| st.sql.len() + 64)
            .sum();
        let mut script = Vec::with_capacity(text + 256);
        let mut open = false;
        let mut started = false;
        for txn in txns {
            for st in &txn.statements {
                let prelude = self.prelude(st);
                if !prelude.session.is_empty() {
                    if open {
                        script.extend_from_slice(b"END;\n");
                        open = false;
                    }
                    script.extend_from_slice(&prelude.session);
                }
                if compound && !open {
                    script.extend_from_slice(OPEN);
                    open = true;
                }
                if !started {
                    script.extend_from_slice(START);
                    started = true;
                }
                script.extend_from_slice(&prelude.pins);
                script.extend_from_slice(&st.sql);
                // Not just ";": a trailing `--` comment must not swallow it.
                script.extend_from_slice(b"\n;\n");
            }
        }
        if compound && !open {
            script.extend_from_slice(OPEN);
        }
        if !started {
            script.extend_from_slice(START);
        }
        if let Some(below) = cleanup {
            script.extend_from_slice(
                format!(
                    "DELETE FROM {} WHERE {} AND lsn <= {below};\n",
                    applied_table(&self.cfg.secondary),
                    mine(&self.cfg.secondary)
                )
                .as_bytes(),
            );
        }
        let last_commit = txns.last().map_or(0, |t| t.committed_at_us);
        script.extend_from_slice(self.position_sql(lsns, last_commit, position).as_bytes());
        script.extend_from_slice(if compound {
            b";\nCOMMIT;\nEND"
        } else {
            b";\nCOMMIT"
        });
        script
    }

    /// The statements (each ending in `;\n`) that put the connection in
    /// `st`'s session state and pin its generated values; updates the
    /// cached state.
    pub(super) fn prelude(&mut self, st: &super::super::record::MirrorStatement) -> Prelude {
        let mut session = Vec::new();
        // No database: the secondary URL's own (the primary URL's maps to it).
        let target = st.db.as_ref().or(self.cfg.secondary.database.as_ref());
        if let Some(db) = target.filter(|db| self.current_db.as_ref() != Some(*db)) {
            session.extend_from_slice(format!("USE {};\n", crate::sql::quote(db)).as_bytes());
            self.current_db = Some(db.clone());
        }
        // Statements of one session share their settings (one `Arc`), and
        // they rarely change: compared as a whole first.
        let same = self
            .last_session
            .as_ref()
            .is_some_and(|l| Arc::ptr_eq(l, &st.session) || **l == *st.session);
        if !same {
            let changed: Vec<String> = st
                .session
                .iter()
                .filter(|(k, v)| !self.session.iter().any(|(k2, v2)| k2 == k && v2 == v))
                .map(|(k, v)| format!("SESSION {k} = {v}"))
                .collect();
            if !changed.is_empty() {
                session.extend_from_slice(format!("SET {};\n", changed.join(", ")).as_bytes());
            }
            for (k, v) in st.session.iter() {
                self.session.retain(|(k2, _)| k2 != k);
                self.session.push((k.clone(), v.clone()));
            }
            self.last_session = Some(st.session.clone());
        }
        let mut sets = Vec::new();
        let p = &st.pins;
        match p.timestamp_us {
            Some(t) => {
                sets.push(format!(
                    "TIMESTAMP = {}.{:06}",
                    t.div_euclid(1_000_000),
                    t.rem_euclid(1_000_000)
                ));
                self.ts_pinned = true;
            }
            None if self.ts_pinned => {
                sets.push("TIMESTAMP = DEFAULT".into());
                self.ts_pinned = false;
            }
            None => {}
        }
        if let Some(id) = p.insert_id {
            sets.push(format!("INSERT_ID = {id}"));
        }
        if let Some(id) = p.last_insert_id {
            sets.push(format!("LAST_INSERT_ID = {id}"));
        }
        if let Some((a, b)) = p.rand_seeds {
            sets.push(format!("@@rand_seed1 = {a}, @@rand_seed2 = {b}"));
        }
        let pins = if sets.is_empty() {
            Vec::new()
        } else {
            format!("SET {};\n", sets.join(", ")).into_bytes()
        };
        Prelude { session, pins }
    }

    /// The stored position (highest over the workers' rows) and the
    /// intents above it that are applied already.
    pub(super) async fn load_position(
        &mut self,
    ) -> Result<(Lsn, HashSet<Lsn>), mysql_async::Error> {
        let b = self.cfg.secondary.clone();
        if !self.tables_ensured {
            ensure_tables(self.conn().await?, &b).await?;
            self.tables_ensured = true;
        }
        let conn = self.conn().await?;
        let lsn: Option<Option<u64>> = conn
            .query_first(format!(
                "SELECT MAX(lsn) FROM {} WHERE {}",
                position_table(&b),
                mine(&b)
            ))
            .await?;
        let lsn = lsn.flatten().unwrap_or(0);
        let above: Vec<u64> = conn
            .query(format!(
                "SELECT lsn FROM {} WHERE {} AND lsn > {lsn}",
                applied_table(&b),
                mine(&b)
            ))
            .await?;
        Ok((lsn, above.into_iter().collect()))
    }

    /// Deletes the secondary's stored position (see `Applier::run`: it
    /// belonged to an earlier journal).
    pub(super) async fn forget_position(&mut self) -> Result<(), mysql_async::Error> {
        let b = self.cfg.secondary.clone();
        let conn = self.conn().await?;
        conn.query_drop(format!(
            "DELETE FROM {} WHERE {}",
            position_table(&b),
            mine(&b)
        ))
        .await?;
        conn.query_drop(format!(
            "DELETE FROM {} WHERE {}",
            applied_table(&b),
            mine(&b)
        ))
        .await
    }

    /// An error that says Tandem's own bookkeeping table or database is
    /// missing (not an application table).
    pub(super) fn bookkeeping_gone(&self, e: &mysql_async::Error) -> bool {
        matches!(e, mysql_async::Error::Server(s)
        if crate::mirror::bookkeeping::is_missing(s.code)
            && {
                let book = &self.cfg.secondary.bookkeeping;
                s.message.contains(&format!("'{book}."))
                    || s.message.contains(&format!("'{book}'"))
            })
    }

    /// Whether the transaction at `lsn` is applied on the secondary.
    pub(super) async fn is_applied(&mut self, lsn: Lsn) -> Result<bool, mysql_async::Error> {
        let (stored, above) = self.load_position().await?;
        Ok(stored >= lsn || above.contains(&lsn))
    }

    /// The statements recording that `lsns` are applied (this worker's row
    /// of the position table; under `Sparse` also the LSNs themselves),
    /// separated by `;\n`.
    pub(super) fn position_sql(
        &self,
        lsns: &[Lsn],
        committed_at_us: i64,
        position: Position,
    ) -> String {
        let b = &self.cfg.secondary;
        let id = self.index + 1;
        match position {
            Position::Contiguous => {
                let lsn = lsns.last().copied().unwrap_or_default();
                advance_position_sql(b, id, lsn, committed_at_us)
            }
            Position::Sparse { lwm } => {
                let me = crate::mirror::bookkeeping::owner(b);
                let values: Vec<String> = lsns.iter().map(|l| format!("({me}, {l})")).collect();
                format!(
                    "INSERT INTO {} (db, lsn) VALUES {};\n{}",
                    applied_table(b),
                    values.join(", "),
                    advance_position_sql(b, id, lwm, committed_at_us)
                )
            }
        }
    }

    pub(super) async fn store_position(
        &mut self,
        lsns: &[Lsn],
        committed_at_us: i64,
        position: Position,
    ) -> Result<(), mysql_async::Error> {
        let sql = format!(
            "START TRANSACTION;\n{};\nCOMMIT",
            self.position_sql(lsns, committed_at_us, position)
        );
        self.conn().await?.query_drop(sql).await
    }

    /// A transaction the secondary refuses: recorded in the dead-letter
    /// file (statements, reason, `action`); under `continue` skipped with
    /// its tables marked divergent, under `halt` the applier stops before
    /// it (nothing skipped, the position stays).
    pub(super) async fn permanent(
        &mut self,
        lsn: Lsn,
        txn: Option<&MirrorTxn>,
        reason: &str,
        position: Position,
    ) -> Result<(), ApplierError> {
        let tables: Vec<String> = txn
            .map(|t| super::super::record::tables_of(&t.statements))
            .unwrap_or_default();
        let statements = txn.map(|t| {
            t.statements
                .iter()
                .map(|s| String::from_utf8_lossy(&s.sql).into_owned())
                .collect::<Vec<_>>()
        });
        let halt = self.cfg.on_permanent_error.get() == ApplyErrors::Halt;
        let entry = serde_json::json!({
            "lsn": lsn,
            // skipped: not applied, never will be; halted: the applier
            // stopped before it and applies it once resumed.
            "action": if halt { "halted" } else { "skipped" },
            "conn_id": txn.map(|t| t.conn_id),
            "committed_at_us": txn.map(|t| t.committed_at_us),
            "reason": reason,
            "tables": tables,
            "statements": statements,
        });
        {
            // Workers share the file: one line at a time.
            let _guard = self
                .stats
                .dead_letter_lock
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if let Some(dir) = self.cfg.dead_letter.parent() {
                crate::mirror::journal::create_private_dir(dir)
                    .map_err(ApplierError::DeadLetter)?;
            }
            let mut f = crate::mirror::journal::private_file()
                .create(true)
                .append(true)
                .open(&self.cfg.dead_letter)
                .map_err(ApplierError::DeadLetter)?;
            writeln!(f, "{entry}").map_err(ApplierError::DeadLetter)?;
            f.sync_data().map_err(ApplierError::DeadLetter)?;
        }
        if halt {
            warn!(
                lsn,
                reason,
                ?tables,
                "mirrored transaction refused by the secondary; applier halted before it (apply_errors: halt)"
            );
            return Err(ApplierError::Halted {
                lsn,
                reason: reason.to_string(),
                tables,
            });
        }
        self.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
        self.stats
            .divergent_tables
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(tables.iter().cloned());
        self.stats.note_marked(tables.iter());
        warn!(
            lsn,
            reason,
            ?tables,
            "mirrored transaction dead-lettered; tables marked divergent"
        );
        let committed = txn.map_or(0, |t| t.committed_at_us);
        let mut attempt = 0;
        loop {
            match self.store_position(&[lsn], committed, position).await {
                Ok(()) => return Ok(()),
                Err(e) if self.bookkeeping_gone(&e) => {
                    error!(error = %e, "the secondary's bookkeeping tables are gone; creating them again");
                    let _ = self.rollback().await;
                    let b = self.cfg.secondary.clone();
                    if let Ok(conn) = self.conn().await {
                        let _ = ensure_tables(conn, &b).await;
                    }
                    attempt += 1;
                    self.wait_after(attempt, &e).await;
                }
                Err(e) if is_transient(&e, self.compound) => {
                    attempt += 1;
                    self.wait_after(attempt, &e).await;
                }
                Err(e) => return Err(ApplierError::Secondary(e.to_string())),
            }
        }
    }

    pub(super) async fn load_position_retrying(
        &mut self,
        stop: &CancellationToken,
    ) -> Result<(Lsn, HashSet<Lsn>), ApplierError> {
        let mut attempt = 0;
        loop {
            match self.load_position().await {
                Ok(v) => return Ok(v),
                Err(e) if is_transient(&e, self.compound) && !stop.is_cancelled() => {
                    attempt += 1;
                    self.wait_after(attempt, &e).await;
                }
                Err(e) => return Err(ApplierError::Secondary(e.to_string())),
            }
        }
    }

    pub(super) async fn wait_after(&mut self, attempt: u32, e: &mysql_async::Error) {
        self.stats.retried.fetch_add(1, Ordering::Relaxed);
        // The server may still be running what the attempt sent (a
        // statement waiting for a lock notices no closed socket): its
        // thread is ended before the next attempt looks at the position.
        if let Some(c) = self.conn.as_ref() {
            self.abandoned.get_or_insert(c.id());
        }
        self.drop_conn();
        let wait = backoff(attempt);
        warn!(attempt, error = %e, ?wait, worker = self.index, "secondary unavailable; retrying in order");
        tokio::time::sleep(wait).await;
    }

    pub(super) async fn conn(&mut self) -> Result<&mut Conn, mysql_async::Error> {
        if self.conn.is_none() {
            let b = &self.cfg.secondary;
            let mut conn = crate::backend::own_conn(crate::backend::own_opts(b).await).await?;
            // A connection this worker gave up on holds the lock below
            // until it ends: it is ended first (see `end_thread`).
            if let Some(thread) = self.abandoned {
                end_thread_on(&mut conn, thread).await?;
                self.abandoned = None;
            }
            // This apply connection's lock, held for its life: a connection
            // of a previous process (killed while its COMMIT was still
            // running) must end before this one reads or writes anything.
            let got: Option<Option<i64>> = conn
                .exec_first(
                    "SELECT GET_LOCK(?, ?)",
                    (apply_lock_name(b, self.index), APPLY_LOCK_WAIT_S),
                )
                .await?;
            if got.flatten() != Some(1) {
                return Err(mysql_async::Error::Io(mysql_async::IoError::Io(
                    std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "an apply connection of a previous process is still running",
                    ),
                )));
            }
            let version: Option<String> = conn.query_first("SELECT VERSION()").await?;
            self.compound = version.is_some_and(|v| v.contains("MariaDB"));
            self.conn = Some(conn);
            self.current_db = b.database.clone();
            self.session.clear();
            self.last_session = None;
            self.ts_pinned = false;
        }
        Ok(self.conn.as_mut().expect("connected above"))
    }

    pub(super) async fn rollback(&mut self) -> Result<(), mysql_async::Error> {
        if let Some(c) = self.conn.as_mut() {
            c.query_drop("ROLLBACK").await?;
        }
        Ok(())
    }

    pub(super) fn drop_conn(&mut self) {
        self.conn = None;
    }

    /// KILLs the server thread of a connection this worker gave up on and
    /// returns once the server lists it no more: from then on what it ran
    /// has committed or rolled back for good.
    pub(super) async fn end_thread(&mut self, thread: u32) -> Result<(), mysql_async::Error> {
        let conn = self.conn().await?;
        end_thread_on(conn, thread).await
    }
}

/// Whether a transaction of `txns` carries a temporary table.
fn carries(txns: &[&MirrorTxn]) -> bool {
    txns.iter().any(|t| {
        t.statements
            .iter()
            .any(|s| s.sql.starts_with(crate::mirror::record::CARRIED_COPY))
    })
}
