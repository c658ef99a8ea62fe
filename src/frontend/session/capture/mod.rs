//! Mirror capture, a type the session calls with its `Link`: which
//! statements are journaled, when, and with which pinned values. This file
//! has the dispatch, transactions and the commit path; `write` the single
//! write, DDL and unsafe writes. See docs/mirroring.md for why the order of
//! intents is the primary's commit order.
//!
//! - A write inside a transaction runs as `[marker] [SET TIMESTAMP, seeds]
//!   stmt [SET TIMESTAMP = DEFAULT]`, pipelined (one round trip), and is
//!   buffered with its pinned values once it succeeded. The marker insert
//!   goes with the transaction's first mirrored write.
//! - COMMIT of a transaction with buffered writes: the intent is journaled
//!   (fsync; the marker insert runs meanwhile if the transaction has none
//!   yet), then COMMIT is forwarded and its answer journaled as the
//!   outcome.
//! - An autocommit write is wrapped: `[SET…] BEGIN marker stmt`, intent,
//!   `COMMIT [SET TIMESTAMP = DEFAULT]`; the client gets the statement's own
//!   answer with the in-transaction status bit cleared.
//! - DDL: intent, DDL, outcome (DDL commits by itself; no marker).
//! - Unsafe writes follow `migration.unsafe_writes`.

mod call;
mod carry;
mod commit;
mod ddl;
mod effect;
mod execute;
mod facts;
pub(super) mod found_rows;
mod isolation;
mod keyed;
mod load;
mod ordered;
pub(in crate::frontend::session) mod params;
mod routines;
mod seqdefault;
mod sequences;
mod sql_prepared;
mod staged;
mod temporary;
mod uservars;
mod vars;
mod write;
mod xa;

use super::link::{query_packet, Link};
use super::SessionError;
use crate::config::{JournalFull, UnsafeWrites};
use crate::mirror::record::{tables_of, MirrorStatement};
use crate::mirror::runtime::{Admit, Mirror};
use crate::protocol::response::Expect;
use crate::protocol::ErrSpec;
use crate::router::lexer;
use crate::router::{self, Class, Classified, Route, SchemaObject, SessionOp, TxnOp, WriteKind};
use mysql_common::constants::StatusFlags;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tracing::{error, warn};

/// Session variables that change what a write does; carried to the applier.
const CARRIED_VARS: &[&str] = &[
    "sql_mode",
    "time_zone",
    "character_set_client",
    "collation_connection",
    "foreign_key_checks",
    "unique_checks",
    "auto_increment_increment",
    "auto_increment_offset",
    "div_precision_increment",
    "group_concat_max_len",
    "explicit_defaults_for_timestamp",
];

/// Per-session capture state.
#[derive(Default)]
pub(super) struct Capture {
    /// Writes of the open transaction, in order.
    txn: Vec<MirrorStatement>,
    /// The marker row inserted in the open transaction (with its first
    /// mirrored write), if any.
    marker: Option<Marker>,
    /// Savepoint name → number of buffered writes when it was set, and
    /// whether the marker row was in the transaction then.
    savepoints: Vec<(String, usize, bool)>,
    /// Current values of `CARRIED_VARS` as SQL literals; None: read them
    /// again before the next write (after SET, change user, reset).
    vars: Option<Arc<Vec<(String, String)>>>,
    no_backslash_escapes: bool,
    /// The session's temporary tables (bare names, lower case), created
    /// while capturing: their rows exist on the primary only.
    temp_tables: Vec<String>,
    /// The session's isolation level, read with the carried settings.
    isolation: Option<isolation::Isolation>,
    /// The level `SET TRANSACTION ISOLATION LEVEL` chose for the next
    /// transaction, until one begins.
    next_isolation: Option<isolation::Isolation>,
    /// The level of the open transaction, when it was chosen for it.
    txn_isolation: Option<isolation::Isolation>,
    /// SQL-level prepared statements by name (lower case): whether the
    /// text prepared only reads.
    sql_prepared: std::collections::HashMap<String, sql_prepared::Prepared>,
    /// What `ROW_COUNT()` answers right after the client's last statement,
    /// when Tandem ran statements of its own after it (COMMIT of the
    /// autocommit wrap, `SET TIMESTAMP = DEFAULT`), which reset it. Set
    /// during a command, valid for the next one only (`next_command`).
    row_count_next: Option<i64>,
    row_count_now: Option<i64>,
    /// The client's `FOUND_ROWS()` while Tandem's own reads replaced the
    /// server's value (see `found_rows`).
    found_rows: Option<u64>,
    /// The primary runs `innodb_autoinc_lock_mode = 2` (read with the
    /// carried settings): see `facts::interleaved_ids`.
    interleaved_autoinc: bool,
    /// The xid of the session's XA transaction, from `XA START` until it
    /// is prepared or ends (see `xa`).
    xa: Option<String>,
    /// Statements journaled around the write being captured: copies of
    /// the temporary tables it reads (`carry`), a CALL's guard (`call`).
    /// Taken by `mirrored_write`.
    carried: Option<carry::Carried>,
}

impl Capture {
    pub(super) fn reset(&mut self) {
        *self = Capture::default();
    }

    /// Writes of an open transaction are buffered.
    pub(super) fn has_writes(&self) -> bool {
        !self.txn.is_empty()
    }

    /// A new client command begins: the row count the previous one left
    /// applies to this one only — and to the next too when this one
    /// (`keeps`: a prepare, a ping, a close) leaves the server's
    /// ROW_COUNT() as it is.
    pub(super) fn next_command(&mut self, keeps: bool) {
        self.row_count_now = self.row_count_next.take();
        if keeps {
            self.row_count_next = self.row_count_now;
        }
    }

    /// What `ROW_COUNT()` must answer in this command, when Tandem's own
    /// statements changed it (see `row_count_next`).
    pub(super) fn row_count(&self) -> Option<i64> {
        self.row_count_now
    }

    /// Read the carried session variables again before the next write.
    pub(super) fn forget_vars(&mut self) {
        self.vars = None;
    }
}

/// A marker row inserted in the open transaction. Its token stays in flight
/// (so marker clean-up keeps the row) until the transaction reaches the
/// journal through `take`; dropped with the transaction (rolled back,
/// session gone), the token is abandoned.
pub(super) struct Marker {
    token: u64,
    mirror: Option<Arc<Mirror>>,
}

impl Marker {
    fn take(mut self) -> u64 {
        self.mirror = None;
        self.token
    }
}

impl Drop for Marker {
    fn drop(&mut self) {
        if let Some(m) = self.mirror.take() {
            m.abandon(self.token);
        }
    }
}

/// Where a captured write's text comes from.
pub(super) enum WriteSrc<'a> {
    /// COM_QUERY text (CONNECTION_ID() already rewritten).
    Query(&'a [u8]),
    /// COM_STMT_EXECUTE: the packet to forward and the statement with its
    /// bound values rendered as literals.
    Execute { packet: &'a [u8], rendered: Vec<u8> },
}

impl Capture {
    /// Handles a COM_QUERY when mirroring needs to. Returns false when the
    /// caller should forward it as usual.
    pub(super) async fn query(
        &mut self,
        cx: &mut Link<'_>,
        m: &Arc<Mirror>,
        classified: &Classified,
        payload: &[u8],
        seq: u8,
    ) -> Result<bool, SessionError> {
        let routes = &classified.statements;
        self.carried = None;
        // Not a write, but it may call a stored function that writes.
        let writes = routes
            .iter()
            .any(|r| matches!(r.class, Class::Write(_) | Class::Ddl));
        if !writes {
            if let Some(f) = self.writing_call(cx, m, &payload[1..]).await? {
                let reason = routines::reason(&f);
                self.unsafe_write(cx, m, &[], &reason, payload, seq).await?;
                return Ok(true);
            }
            match sequences::usage(&payload[1..], &cx.scratch.tokens) {
                sequences::Usage::None => {}
                sequences::Usage::Advances(names) if routes.len() == 1 => {
                    self.advance_sequences(cx, m, &names, payload, seq).await?;
                    return Ok(true);
                }
                sequences::Usage::Advances(_) => {
                    let reason = "a multi-statement packet advances a sequence; send the statement that calls NEXTVAL on its own";
                    self.unsafe_write(cx, m, &[], reason, payload, seq).await?;
                    return Ok(true);
                }
                sequences::Usage::Refused(reason) => {
                    self.unsafe_write(cx, m, &[], &reason, payload, seq).await?;
                    return Ok(true);
                }
            }
        }
        if routes.len() > 1 {
            let changes = routes.iter().any(|r| {
                matches!(
                    r.class,
                    Class::Write(_) | Class::Ddl | Class::Transaction(_)
                )
            });
            if !changes {
                if routes
                    .iter()
                    .any(|r| r.class == Class::Session(SessionOp::Set))
                {
                    // A SET among them may change a carried setting.
                    self.vars = None;
                }
                return Ok(false);
            }
            let tables: Vec<String> = routes.iter().flat_map(|r| r.tables.clone()).collect();
            let reason =
                "a multi-statement packet with writes cannot be pinned statement by statement";
            self.unsafe_write(cx, m, &tables, reason, payload, seq)
                .await?;
            return Ok(true);
        }
        let Some(route) = routes.first() else {
            return Ok(false);
        };
        let sql = &payload[1..];
        let real;
        let route = if self.temp_tables.is_empty() {
            route
        } else {
            use temporary::Temporary;
            match self.temporary(cx, m, route, (sql, payload), seq).await? {
                Temporary::Usual => route,
                Temporary::Done(done) => return Ok(done),
                Temporary::Carried(r) => {
                    real = r;
                    &real
                }
            }
        };
        match &route.class {
            Class::Write(kind) => {
                if !self.mirrored(cx, route) {
                    return Ok(false);
                }
                if *kind == WriteKind::LoadData && self.load_data(cx, m, route, sql, seq).await? {
                    return Ok(true);
                }
                // Staged first where its order is not all that replay
                // would miss (see `staged`).
                if self.must_stage(cx, m, route, sql).await?
                    && self.staged_insert_select(cx, m, route, sql, seq).await?
                {
                    return Ok(true);
                }
                if *kind == WriteKind::Call {
                    if let Err(why) = self.call(cx, m, route, (sql, false), seq).await? {
                        let reason = call::refusal(&why);
                        self.unsafe_write(cx, m, &[], &reason, payload, seq).await?;
                    }
                    return Ok(true);
                }
                if let Some(reason) = keyed::unsafe_reason(route) {
                    if !self.order_free_insert(cx, m, route, sql).await? {
                        if let Some(ordered) = self.ordered_insert_select(cx, m, route, sql).await?
                        {
                            lexer::tokenize(&ordered, &mut cx.scratch.tokens);
                            self.mirrored_write(cx, m, route, WriteSrc::Query(&ordered), seq)
                                .await?;
                            return Ok(true);
                        }
                        if staged::stageable(route)
                            && self.staged_insert_select(cx, m, route, sql, seq).await?
                        {
                            return Ok(true);
                        }
                        let tables = route.tables.clone();
                        self.unsafe_write(cx, m, &tables, &reason.to_string(), payload, seq)
                            .await?;
                        return Ok(true);
                    }
                }
                self.mirrored_write(cx, m, route, WriteSrc::Query(sql), seq)
                    .await?;
                Ok(true)
            }
            Class::Ddl => {
                if route.object == Some(SchemaObject::TemporaryTable) {
                    return self.temporary_table(cx, route, (sql, payload), seq).await;
                }
                if let Some(reason) = &route.determinism.unsafe_reason {
                    // A DDL Tandem cannot tell the tables of: run (if at
                    // all) after the open transaction is journaled.
                    let run = cx.shared.config.load().unsafe_writes == UnsafeWrites::PrimaryOnly;
                    if run && !self.commit_implicitly(cx, m, seq).await? {
                        return Ok(true);
                    }
                    let reason =
                        format!("{reason}, so Tandem cannot tell which tables this DDL changes");
                    self.unsafe_write(cx, m, &route.tables, &reason, payload, seq)
                        .await?;
                    return Ok(true);
                }
                if !self.commit_implicitly(cx, m, seq).await? {
                    return Ok(true);
                }
                // Triggers, routines and events name no table, and the
                // secondary needs them as much as its tables (events
                // disabled there until a cutover: `mirror::events`).
                let object = matches!(
                    route.object,
                    Some(SchemaObject::Trigger | SchemaObject::Routine | SchemaObject::Event)
                );
                if !object && (route.tables.is_empty() || !self.mirrored(cx, route)) {
                    return Ok(false);
                }
                self.mirrored_ddl(cx, m, route, payload, sql, seq).await?;
                Ok(true)
            }
            Class::Transaction(op) => self.transaction_op(cx, m, *op, payload, sql, seq).await,
            Class::Session(SessionOp::Set) => {
                let commits = router::may_commit_implicitly(route, sql, &cx.scratch.tokens);
                if commits && !self.commit_implicitly(cx, m, seq).await? {
                    return Ok(true);
                }
                // Carried values are read again before the next write; the
                // session relays the SET and keeps it for a move.
                self.vars = None;
                Ok(false)
            }
            Class::Session(SessionOp::PreparedSql) => {
                use sql_prepared::SqlPrepared;
                match sql_prepared::sql_prepared(sql, &cx.scratch.tokens) {
                    SqlPrepared::Prepare(name, reads, text) => {
                        let p = sql_prepared::Prepared { reads, text };
                        self.sql_prepared.insert(name, p);
                        Ok(false)
                    }
                    SqlPrepared::Deallocate(name) => {
                        self.sql_prepared.remove(&name);
                        Ok(false)
                    }
                    SqlPrepared::Execute(name, _) if self.executes_a_read(&name) => Ok(false),
                    SqlPrepared::Execute(name, values) => {
                        let text = self.sql_prepared.get(&name).and_then(|p| p.text.clone());
                        let rendered = match text {
                            Some(t) => sql_prepared::substitute(&t, &values),
                            None => {
                                Err("its text came from a variable, which Tandem does not see"
                                    .into())
                            }
                        };
                        match rendered {
                            // As a query of its own, through the whole
                            // capture path; the same OK answers a write.
                            Ok(text) => {
                                let plan = cx.shared.router.plan(&text, &mut cx.scratch);
                                let packet = query_packet(&text);
                                let done =
                                    Box::pin(self.query(cx, m, &plan.classified, &packet, seq))
                                        .await?;
                                if !done {
                                    cx.forward(&packet, seq, Expect::ResultSet).await?;
                                }
                                Ok(true)
                            }
                            Err(why) => {
                                let reason = format!("SQL-level EXECUTE of a statement that may write, and {why}; use server-side prepared statements (COM_STMT_EXECUTE)");
                                self.unsafe_write(cx, m, &[], &reason, payload, seq).await?;
                                Ok(true)
                            }
                        }
                    }
                    SqlPrepared::Other => Ok(false),
                }
            }
            Class::Session(SessionOp::LockTables | SessionOp::UnlockTables) | Class::Other => {
                // May commit implicitly: journal the open transaction first.
                // (What does not, such as DO or a comment, leaves it open.)
                let commits = router::may_commit_implicitly(route, sql, &cx.scratch.tokens);
                if commits && !self.commit_implicitly(cx, m, seq).await? {
                    return Ok(true);
                }
                Ok(false)
            }
            Class::Read { .. } | Class::Session(_) => Ok(false),
        }
    }

    /// Whether a write's tables are mirrored (`mirror: false` rules).
    fn mirrored(&self, cx: &Link<'_>, route: &Route) -> bool {
        let cfg = cx.shared.config.load();
        route.tables.is_empty() || route.tables.iter().any(|t| cfg.rules.mirrored(bare(t)))
    }

    async fn transaction_op(
        &mut self,
        cx: &mut Link<'_>,
        m: &Arc<Mirror>,
        op: TxnOp,
        payload: &[u8],
        sql: &[u8],
        seq: u8,
    ) -> Result<bool, SessionError> {
        if matches!(op, TxnOp::Commit | TxnOp::Rollback) {
            // The server drops a level chosen for the next transaction at
            // any COMMIT or ROLLBACK, even with nothing open.
            self.next_isolation = None;
        }
        match op {
            TxnOp::Commit if !self.txn.is_empty() => {
                let reply = self.commit_txn(cx, m, payload, None).await?;
                cx.relay(seq, reply, false).await?;
                Ok(true)
            }
            TxnOp::Commit | TxnOp::Rollback => {
                let summary = cx.forward(payload, seq, Expect::ResultSet).await?;
                if summary.error.is_none() || op == TxnOp::Rollback {
                    self.end_txn(cx);
                }
                Ok(true)
            }
            TxnOp::Begin => {
                // BEGIN inside a transaction commits it.
                if !self.commit_implicitly(cx, m, seq).await? {
                    return Ok(true);
                }
                self.txn_isolation = None;
                self.transaction_begins();
                Ok(false)
            }
            TxnOp::Savepoint | TxnOp::RollbackToSavepoint | TxnOp::ReleaseSavepoint => {
                let name = lexer::savepoint_name(sql, &cx.scratch.tokens);
                let summary = cx.forward(payload, seq, Expect::ResultSet).await?;
                if summary.error.is_some() {
                    return Ok(true);
                }
                let Some(name) = name else { return Ok(true) };
                let marked = self.marker.is_some();
                let sp = &mut self.savepoints;
                let pos = sp.iter().rposition(|(n, _, _)| *n == name);
                match op {
                    TxnOp::Savepoint => {
                        // Re-using a name moves the savepoint.
                        if let Some(i) = pos {
                            sp.remove(i);
                        }
                        sp.push((name, self.txn.len(), marked));
                    }
                    TxnOp::RollbackToSavepoint => {
                        if let Some(i) = pos {
                            let (_, keep, had_marker) = sp[i];
                            sp.truncate(i + 1);
                            self.txn.truncate(keep);
                            if !had_marker {
                                // The marker row was rolled back with the
                                // rest; the next write inserts another.
                                self.marker = None;
                            }
                        }
                    }
                    _ => {
                        if let Some(i) = pos {
                            sp.truncate(i);
                        }
                    }
                }
                Ok(true)
            }
            TxnOp::Other
                if cx
                    .scratch
                    .tokens
                    .first()
                    .is_some_and(|t| t.is_word(sql, "SET")) =>
            {
                // SET [SESSION|GLOBAL] TRANSACTION …: the isolation level of
                // the next transaction or of the session.
                let set = isolation::isolation_set(sql, &cx.scratch.tokens);
                let summary = cx.forward(payload, seq, Expect::ResultSet).await?;
                if summary.error.is_none() {
                    match set {
                        isolation::IsolationSet::NextTransaction(level) => {
                            self.next_isolation = Some(level)
                        }
                        isolation::IsolationSet::Session => {
                            // Also drops the next transaction's level.
                            self.vars = None;
                            self.next_isolation = None;
                        }
                        isolation::IsolationSet::None => {}
                    }
                }
                Ok(true)
            }
            TxnOp::Other => match xa::xa_cmd(sql, &cx.scratch.tokens) {
                Some(cmd) => self.xa(cx, m, cmd, payload, seq).await,
                None => Ok(false),
            },
        }
    }

    fn end_txn(&mut self, cx: &mut Link<'_>) {
        self.txn.clear();
        self.marker = None;
        self.savepoints.clear();
        self.txn_isolation = None;
        cx.after_error = false;
    }

    /// Called after every command: a transaction with buffered writes that
    /// ended without Tandem's COMMIT path. An error may have rolled it back
    /// on the server (a deadlock always does, a lock wait timeout under
    /// `innodb_rollback_on_timeout`, and so may others); an ERR packet
    /// carries no status, so after one the server is asked (`DO 0`, whose
    /// OK carries it, and which opens no transaction). Rolled back: the
    /// buffered writes are dropped, whatever the client sends next (a
    /// COMMIT or BEGIN would otherwise journal them as committed). Ended
    /// without an error: a statement Tandem did not expect to commit did,
    /// and the tables are marked divergent.
    pub(super) async fn check_txn_end(&mut self, cx: &mut Link<'_>) -> Result<(), SessionError> {
        let after_error = std::mem::take(&mut cx.after_error);
        if (self.txn.is_empty() && self.marker.is_none()) || (self.xa.is_some() && !after_error) {
            // (An XA branch's status bits change with XA END; its XA
            // statements end it.)
            return Ok(());
        }
        if after_error {
            if let Some(ok) = cx.run_aux(&[b"DO 0"]).await? {
                cx.status = ok.status_flags();
            }
        }
        if cx.status.contains(StatusFlags::SERVER_STATUS_IN_TRANS) {
            return Ok(());
        }
        if !after_error && !self.txn.is_empty() {
            let tables = tables_of(&self.txn);
            if let Some(m) = cx.capturing() {
                m.mark_divergent(
                    &tables,
                    "a transaction ended without a COMMIT Tandem could journal",
                );
            }
            warn!(
                conn = cx.id,
                ?tables,
                "transaction ended outside Tandem's commit path"
            );
        }
        self.end_txn(cx);
        Ok(())
    }

    /// Before a statement that commits implicitly: journals and commits the
    /// open transaction. False when that failed (the client got the error).
    async fn commit_implicitly(
        &mut self,
        cx: &mut Link<'_>,
        m: &Arc<Mirror>,
        seq: u8,
    ) -> Result<bool, SessionError> {
        if self.txn.is_empty() {
            // A marker row without writes (the first write failed) commits
            // with the statement and belongs to no intent; the next
            // transaction needs its own.
            self.marker = None;
            return Ok(true);
        }
        let reply = self
            .commit_txn(cx, m, &query_packet(b"COMMIT"), None)
            .await?;
        if reply.err.is_some() {
            cx.relay(seq, reply, false).await?;
            return Ok(false);
        }
        Ok(true)
    }

    /// The journal size limit for a statement that commits by itself
    /// (autocommit write, DDL), before anything runs: `Some(())` when the
    /// client has been answered (refused: ERR, nothing ran; degraded: the
    /// statement ran unmirrored), `None` to journal it as usual.
    async fn journal_room(
        &mut self,
        cx: &mut Link<'_>,
        m: &Arc<Mirror>,
        tables: &[String],
        packet: &[u8],
        seq: u8,
    ) -> Result<Option<()>, SessionError> {
        let limit = cx.shared.config.load().journal_limit;
        match m.admit(&limit, tables).await {
            Admit::Journal => Ok(None),
            Admit::Degraded => {
                cx.forward(packet, seq, Expect::ResultSet).await?;
                Ok(Some(()))
            }
            Admit::Refused(msg) => {
                cx.reply_err(seq, &ErrSpec::new(1105, "HY000", msg)).await?;
                Ok(Some(()))
            }
        }
    }

    /// A COMMIT answered with an error need not have rolled back (an
    /// interruption that lands after the engine committed): its marker row
    /// decides, read in the background by the in-doubt resolver (a locking
    /// read, so it waits for a transaction still open).
    fn commit_failed(&self, m: &Arc<Mirror>, lsn: Option<u64>, token: u64) {
        match lsn {
            Some(lsn) => m.in_doubt(lsn, token, None),
            None => m.abandon(token),
        }
    }

    fn settle(&self, m: &Arc<Mirror>, lsn: Option<u64>, token: u64, committed: bool) {
        match lsn {
            Some(lsn) => m.outcome(lsn, token, committed),
            None => m.abandon(token),
        }
    }

    /// An intent could not be journaled (its write or fsync failed: disk
    /// full, I/O error). Under `journal_full: block` the write must not
    /// commit: the error to answer with (the caller rolls back). Under
    /// `degrade` it commits unmirrored and its tables are marked divergent.
    fn journal_failed(
        &self,
        cx: &Link<'_>,
        m: &Mirror,
        tables: &[String],
        e: &str,
    ) -> Option<String> {
        m.stats.journal_errors.fetch_add(1, Ordering::Relaxed);
        match cx.shared.config.load().journal_limit.when_full {
            JournalFull::Block => {
                error!(conn = cx.id, error = %e, "journal write failed; the write is refused");
                Some(format!(
                    "Tandem: not committed: the mirror journal could not be written ({e}); migration.journal_full is block"
                ))
            }
            JournalFull::Degrade => {
                error!(conn = cx.id, error = %e, "journal write failed; the write is not mirrored");
                m.mark_divergent(tables, "the mirror journal could not be written");
                None
            }
        }
    }
}

/// `db.t` → `t` (rules name bare tables).
fn bare(t: &str) -> &str {
    t.rsplit('.').next().unwrap_or(t)
}
