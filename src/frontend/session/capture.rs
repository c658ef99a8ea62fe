//! Mirror capture in the session: which statements are journaled, when, and
//! with which pinned values. See ARCHITECTURE.md ("Mirror capture") for why
//! the order of intents is the primary's commit order.
//!
//! - A write inside a transaction runs as `[marker] [SET TIMESTAMP, seeds]
//!   stmt [SET TIMESTAMP = DEFAULT]`, pipelined (one round trip), and is
//!   buffered with its pinned values once it succeeded. The marker insert
//!   goes with the transaction's first mirrored write.
//! - COMMIT of a transaction with buffered writes: the intent is journaled
//!   (fsync; the marker insert runs meanwhile if the transaction has none
//!   yet), then COMMIT is forwarded and its answer journaled as the
//!   outcome.
//! - An autocommit write is wrapped: `[SET…] BEGIN stmt marker`, intent,
//!   `COMMIT [SET TIMESTAMP = DEFAULT]`; the client gets the statement's own
//!   answer with the in-transaction status bit cleared.
//! - DDL: intent, DDL, outcome (DDL commits by itself; no marker).
//! - Unsafe writes follow `migration.unsafe_writes`.

use super::link::{query_packet, Link, Reply};
use super::prepared::{Prepared, Statements};
use super::SessionError;
use crate::config::UnsafeWrites;
use crate::mirror::now_us;
use crate::mirror::record::{tables_of, MirrorStatement, MirrorTxn, Pins};
use crate::mirror::runtime::{Admit, Mirror, DDL_TOKEN};
use crate::protocol::packets::{get_lenenc, OkInfo};
use crate::protocol::response::Expect;
use crate::protocol::ErrSpec;
use crate::router::lexer;
use crate::router::{Class, Classified, Route, SessionOp, TxnOp, WriteKind};
use crate::sql::sql_literal;
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
}

impl Capture {
    pub(super) fn reset(&mut self) {
        *self = Capture::default();
    }

    /// Writes of an open transaction are buffered.
    pub(super) fn has_writes(&self) -> bool {
        !self.txn.is_empty()
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

/// The first row of a text result set, as raw column values.
fn first_row(reply: &Reply, deprecate_eof: bool) -> Option<Vec<Option<Vec<u8>>>> {
    let (n, _) = get_lenenc(reply.packets.first()?)?;
    let row = reply
        .packets
        .get(1 + n as usize + usize::from(!deprecate_eof))?;
    let mut out = Vec::with_capacity(n as usize);
    let mut at = 0;
    for _ in 0..n {
        if row.get(at) == Some(&0xFB) {
            out.push(None);
            at += 1;
            continue;
        }
        let (len, k) = get_lenenc(row.get(at..)?)?;
        let start = at + k;
        let end = start.checked_add(len as usize)?;
        out.push(Some(row.get(start..end)?.to_vec()));
        at = end;
    }
    Some(out)
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
        if routes.len() > 1 {
            let changes = routes.iter().any(|r| {
                matches!(
                    r.class,
                    Class::Write(_) | Class::Ddl | Class::Transaction(_)
                )
            });
            if !changes {
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
        match &route.class {
            Class::Write(_) => {
                if !self.mirrored(cx, route) {
                    return Ok(false);
                }
                if let Some(reason) = &route.determinism.unsafe_reason {
                    let tables = route.tables.clone();
                    self.unsafe_write(cx, m, &tables, &reason.to_string(), payload, seq)
                        .await?;
                    return Ok(true);
                }
                self.mirrored_write(cx, m, route, WriteSrc::Query(sql), seq)
                    .await?;
                Ok(true)
            }
            Class::Ddl => {
                if !self.commit_implicitly(cx, m, seq).await? {
                    return Ok(true);
                }
                if route.tables.is_empty() || !self.mirrored(cx, route) {
                    return Ok(false);
                }
                self.mirrored_ddl(cx, m, route, payload, sql, seq).await?;
                Ok(true)
            }
            Class::Transaction(op) => self.transaction_op(cx, m, *op, payload, sql, seq).await,
            Class::Session(SessionOp::Set) => {
                let mentions_autocommit = cx
                    .scratch
                    .tokens
                    .iter()
                    .any(|t| t.is_word(sql, "autocommit"));
                if mentions_autocommit && !self.commit_implicitly(cx, m, seq).await? {
                    return Ok(true);
                }
                // Carried values are read again before the next write; the
                // session relays the SET and keeps it for a move.
                self.vars = None;
                Ok(false)
            }
            Class::Session(SessionOp::PreparedSql) => {
                let executes = cx
                    .scratch
                    .tokens
                    .first()
                    .is_some_and(|t| t.is_word(sql, "EXECUTE"));
                if !executes {
                    return Ok(false);
                }
                let reason = "SQL-level EXECUTE runs a statement Tandem does not see; use server-side prepared statements (COM_STMT_EXECUTE)";
                self.unsafe_write(cx, m, &[], reason, payload, seq).await?;
                Ok(true)
            }
            Class::Session(SessionOp::LockTables | SessionOp::UnlockTables) | Class::Other => {
                // May commit implicitly: journal the open transaction first.
                if !self.commit_implicitly(cx, m, seq).await? {
                    return Ok(true);
                }
                Ok(false)
            }
            Class::Read { .. } | Class::Session(_) => Ok(false),
        }
    }

    /// COM_STMT_EXECUTE while mirroring: writes are rendered with their
    /// bound values and go through the same path as text writes.
    /// `payload` is already mapped to the backend's statement id; `id` is
    /// the client's.
    pub(super) async fn execute(
        &mut self,
        cx: &mut Link<'_>,
        stmts: &mut Statements,
        id: Option<u32>,
        payload: Vec<u8>,
        seq: u8,
    ) -> Result<(), SessionError> {
        let prepared = id
            .and_then(|id| stmts.get(&id))
            .map(|p| (p.route.clone(), p.sql.clone()));
        let (Some(m), Some((route, sql))) = (cx.capturing(), prepared) else {
            cx.forward(&payload, seq, Expect::ResultSet).await?;
            return Ok(());
        };
        let [r] = route.statements.as_slice() else {
            cx.forward(&payload, seq, Expect::ResultSet).await?;
            return Ok(());
        };
        if matches!(r.class, Class::Write(_))
            && self.mirrored(cx, r)
            && r.determinism.unsafe_reason.is_none()
        {
            // Rendering depends on NO_BACKSLASH_ESCAPES.
            self.ensure_vars(cx).await?;
        }
        // Only mirrored writes are rendered (the parameter types an execute
        // carries were recorded by `stmt_command`). Long data is used once.
        let rendered = match &r.class {
            Class::Write(_) if self.mirrored(cx, r) && r.determinism.unsafe_reason.is_none() => {
                self.render_execute(stmts, id, &payload)
            }
            _ => None,
        };
        if let Some(p) = id.and_then(|id| stmts.get_mut(&id)) {
            p.long_data.clear();
        }
        match &r.class {
            Class::Write(_) if self.mirrored(cx, r) => {
                if let Some(reason) = &r.determinism.unsafe_reason {
                    let reason = reason.to_string();
                    return self
                        .unsafe_write(cx, &m, &r.tables, &reason, &payload, seq)
                        .await;
                }
                match rendered {
                    Some(rendered) => {
                        let src = WriteSrc::Execute {
                            packet: &payload,
                            rendered,
                        };
                        self.mirrored_write(cx, &m, r, src, seq).await
                    }
                    None => {
                        let reason = "its bound values could not be decoded";
                        self.unsafe_write(cx, &m, &r.tables, reason, &payload, seq)
                            .await
                    }
                }
            }
            Class::Transaction(TxnOp::Commit) if !self.txn.is_empty() => {
                let reply = self.commit_txn(cx, &m, &payload).await?;
                cx.relay(seq, reply, false).await
            }
            Class::Transaction(TxnOp::Rollback) => {
                cx.forward(&payload, seq, Expect::ResultSet).await?;
                self.end_txn(cx);
                Ok(())
            }
            Class::Ddl if !r.tables.is_empty() && self.mirrored(cx, r) => {
                if self.commit_implicitly(cx, &m, seq).await? {
                    self.mirrored_ddl(cx, &m, r, &payload, &sql, seq).await?;
                }
                Ok(())
            }
            _ => {
                cx.forward(&payload, seq, Expect::ResultSet).await?;
                Ok(())
            }
        }
    }

    /// The prepared statement's text with this execute's bound values
    /// rendered in.
    fn render_execute(
        &self,
        stmts: &Statements,
        id: Option<u32>,
        payload: &[u8],
    ) -> Option<Vec<u8>> {
        let nbe = self.no_backslash_escapes;
        let p = stmts.get(&id?)?;
        let values = decode_params(payload, p, nbe)?;
        lexer::render_params(&p.sql, &p.param_spans, &values)
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
        match op {
            TxnOp::Commit if !self.txn.is_empty() => {
                let reply = self.commit_txn(cx, m, payload).await?;
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
            TxnOp::Other => {
                // XA: a prepared transaction can be committed by another
                // connection or after a restart, outside the session that
                // would journal it. Under primary_only it runs, and its
                // tables are marked divergent when it ends (check_txn_end).
                let toks = &cx.scratch.tokens;
                let xa_start = toks.first().is_some_and(|t| t.is_word(sql, "XA"))
                    && toks
                        .get(1)
                        .is_some_and(|t| t.is_word(sql, "START") || t.is_word(sql, "BEGIN"));
                if xa_start && cx.shared.config.load().unsafe_writes == UnsafeWrites::Reject {
                    let reason = "XA transactions are not mirrored: a prepared one can be committed outside the session Tandem journals it from";
                    self.unsafe_write(cx, m, &[], reason, payload, seq).await?;
                    return Ok(true);
                }
                Ok(false)
            }
        }
    }

    fn end_txn(&mut self, cx: &mut Link<'_>) {
        self.txn.clear();
        self.marker = None;
        self.savepoints.clear();
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
        if self.txn.is_empty() && self.marker.is_none() {
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
        let reply = self.commit_txn(cx, m, &query_packet(b"COMMIT")).await?;
        if reply.err.is_some() {
            cx.relay(seq, reply, false).await?;
            return Ok(false);
        }
        Ok(true)
    }

    /// The commit path of a transaction with buffered writes. Returns the
    /// reply for the client (COMMIT's answer, or the error that stopped it).
    async fn commit_txn(
        &mut self,
        cx: &mut Link<'_>,
        m: &Arc<Mirror>,
        commit: &[u8],
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
                if let Some(ok) = cx.run_aux(&[b"ROLLBACK"]).await? {
                    cx.status = ok.status_flags();
                }
                return Ok(Reply {
                    packets: vec![ErrSpec::new(1105, "HY000", msg).encode()],
                    ok: None,
                    err: Some(1105),
                });
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
                self.journal_failed(cx, m, &tables, &e.to_string());
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
                }
                self.settle(m, lsn, token, committed);
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

    fn settle(&self, m: &Arc<Mirror>, lsn: Option<u64>, token: u64, committed: bool) {
        match lsn {
            Some(lsn) => m.outcome(lsn, token, committed),
            None => m.abandon(token),
        }
    }

    fn journal_failed(&self, cx: &Link<'_>, m: &Mirror, tables: &[String], e: &str) {
        m.stats.journal_errors.fetch_add(1, Ordering::Relaxed);
        error!(conn = cx.id, error = %e, "journal write failed; the write is not mirrored");
        m.mark_divergent(tables, "the mirror journal could not be written");
    }

    /// Reads the carried session variables if they are not known.
    async fn ensure_vars(
        &mut self,
        cx: &mut Link<'_>,
    ) -> Result<Arc<Vec<(String, String)>>, SessionError> {
        if let Some(v) = &self.vars {
            return Ok(v.clone());
        }
        let sql = format!(
            "SELECT {}",
            CARRIED_VARS
                .iter()
                .map(|v| format!("@@session.{v}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        cx.send_backend(&[&query_packet(sql.as_bytes())]).await?;
        let reply = cx.read_reply(Expect::ResultSet).await?;
        let row = first_row(&reply, cx.deprecate_eof()).unwrap_or_default();
        let mut vars = Vec::with_capacity(CARRIED_VARS.len());
        for (name, value) in CARRIED_VARS.iter().zip(row) {
            let Some(value) = value else { continue };
            let lit = if value.iter().all(|b| b.is_ascii_digit()) && !value.is_empty() {
                String::from_utf8_lossy(&value).into_owned()
            } else {
                sql_literal(&value)
            };
            if *name == "sql_mode" {
                self.no_backslash_escapes = String::from_utf8_lossy(&value)
                    .to_ascii_uppercase()
                    .contains("NO_BACKSLASH_ESCAPES");
            }
            vars.push((name.to_string(), lit));
        }
        let vars = Arc::new(vars);
        self.vars = Some(vars.clone());
        Ok(vars)
    }

    /// Database the secondary should run a statement in: None means the
    /// secondary URL's own database (the primary URL's maps to it).
    fn mirror_db(&mut self, cx: &mut Link<'_>) -> Option<String> {
        let primary_db = cx.shared.config.load().primary_backend().database.clone();
        let current = cx.binding.conn().current_db.clone();
        if current == primary_db {
            None
        } else {
            current
        }
    }

    /// `sql` as the secondary should run it (see `rename::secondary_text`).
    fn for_secondary(&self, cx: &Link<'_>, sql: Vec<u8>) -> Result<Vec<u8>, String> {
        use crate::router::rename;
        if !rename::may_qualify(&sql) {
            return Ok(sql);
        }
        Ok(rename::secondary_text(&cx.shared.config.load(), &sql)?.unwrap_or(sql))
    }

    /// A write that can be mirrored: pins, runs, buffers or commits.
    pub(super) async fn mirrored_write(
        &mut self,
        cx: &mut Link<'_>,
        m: &Arc<Mirror>,
        route: &Route,
        src: WriteSrc<'_>,
        seq: u8,
    ) -> Result<(), SessionError> {
        let vars = self.ensure_vars(cx).await?;
        let uses = route.determinism.uses;
        let (packet, record_sql) = match src {
            WriteSrc::Query(sql) => {
                let rewritten = if uses.needs_rewrite() {
                    lexer::pin_rewrite(sql, &cx.scratch.tokens, new_uuid)
                } else {
                    None
                };
                let sql = rewritten.unwrap_or_else(|| sql.to_vec());
                (query_packet(&sql), sql)
            }
            WriteSrc::Execute { packet, rendered } => {
                if uses.needs_rewrite() {
                    // The server's prepared text would evaluate UUID() and
                    // SYSDATE() itself; run the rendered text instead (a
                    // write's answer is the same OK packet either way).
                    let mut toks = Vec::new();
                    lexer::tokenize(&rendered, &mut toks);
                    let sql = lexer::pin_rewrite(&rendered, &toks, new_uuid).unwrap_or(rendered);
                    (query_packet(&sql), sql)
                } else {
                    (packet.to_vec(), rendered)
                }
            }
        };
        let record_sql = match self.for_secondary(cx, record_sql) {
            Ok(sql) => sql,
            Err(reason) => {
                return self
                    .unsafe_write(cx, m, &route.tables, &reason, &packet, seq)
                    .await
            }
        };
        // Pin the statement time only where something reads it: a time
        // function in the statement or a timestamp default / trigger on
        // the table. Unpinned writes cost no extra statements.
        let pin = uses.time || uses.rand || self.table_reads_time(cx, m, route).await?;
        let ts = pin.then(now_us);
        let seeds = uses.rand.then(|| {
            (
                rand::random::<u32>() % 0x3FFF_FFFF,
                rand::random::<u32>() % 0x3FFF_FFFF,
            )
        });
        let autocommit = cx.status.contains(StatusFlags::SERVER_STATUS_AUTOCOMMIT)
            && !cx.status.contains(StatusFlags::SERVER_STATUS_IN_TRANS);
        if autocommit {
            if let Some(done) = self
                .journal_room(cx, m, &route.tables, &packet, seq)
                .await?
            {
                return Ok(done);
            }
        }
        let kind = match route.class {
            Class::Write(k) => Some(k),
            _ => None,
        };
        let insert_id_of = |ok: Option<OkInfo>| match (kind, ok) {
            (Some(WriteKind::Insert | WriteKind::Replace), Some(ok)) if ok.last_insert_id != 0 => {
                Some(ok.last_insert_id)
            }
            _ => None,
        };
        let statement = |db, insert_id, lid| MirrorStatement {
            db,
            sql: record_sql.clone(),
            tables: route.tables.clone(),
            ddl: false,
            pins: Pins {
                timestamp_us: ts,
                insert_id,
                last_insert_id: lid,
                rand_seeds: seeds,
            },
            session: vars.clone(),
        };
        // The first mirrored write of a transaction takes the marker row
        // along (pipelined before it), so COMMIT needs no round trip of its
        // own for it.
        let early = (!autocommit && self.marker.is_none()).then(|| m.token());
        if !autocommit && !pin && !uses.last_insert_id && early.is_none() {
            // Inside a transaction with nothing to pin: relayed as it
            // streams, like any statement; buffered for the commit if it
            // succeeded.
            let summary = cx.forward(&packet, seq, Expect::ResultSet).await?;
            if summary.error.is_none() {
                let db = self.mirror_db(cx);
                let st = statement(db, insert_id_of(summary.last_ok), None);
                self.txn.push(st);
            }
            return Ok(());
        }
        let set_p = ts.map(|ts| {
            let mut set = format!(
                "SET TIMESTAMP = {}.{:06}",
                ts.div_euclid(1_000_000),
                ts.rem_euclid(1_000_000)
            );
            if let Some((a, b)) = seeds {
                set.push_str(&format!(", @@rand_seed1 = {a}, @@rand_seed2 = {b}"));
            }
            query_packet(set.as_bytes())
        });
        let token = autocommit.then(|| m.token());
        let lid_p = query_packet(b"SELECT LAST_INSERT_ID()");
        let begin_p = query_packet(b"BEGIN");
        let reset_p = query_packet(b"SET TIMESTAMP = DEFAULT");
        let marker_p = token.map(|t| query_packet(m.marker_insert(t).as_bytes()));
        let early_p = early.map(|t| query_packet(m.marker_insert(t).as_bytes()));
        let mut batch: Vec<&[u8]> = Vec::with_capacity(6);
        if let Some(p) = &early_p {
            batch.push(p);
        }
        if let Some(p) = &set_p {
            batch.push(p);
        }
        if uses.last_insert_id {
            batch.push(&lid_p);
        }
        if autocommit {
            batch.push(&begin_p);
        }
        batch.push(&packet);
        match &marker_p {
            Some(mp) => batch.push(mp),
            None if pin => batch.push(&reset_p),
            None => {}
        }
        let has_tail = marker_p.is_some() || pin;
        let phase1 = async {
            cx.send_backend(&batch).await?;
            let early_r = match early_p {
                Some(_) => Some(cx.read_reply(Expect::ResultSet).await?),
                None => None,
            };
            let set_r = match set_p {
                Some(_) => Some(cx.read_reply(Expect::ResultSet).await?),
                None => None,
            };
            let lid_r = if uses.last_insert_id {
                Some(cx.read_reply(Expect::ResultSet).await?)
            } else {
                None
            };
            let begin_r = if autocommit {
                Some(cx.read_reply(Expect::ResultSet).await?)
            } else {
                None
            };
            let stmt_r = cx.read_reply(Expect::ResultSet).await?;
            let tail_r = if has_tail {
                Some(cx.read_reply(Expect::ResultSet).await?)
            } else {
                None
            };
            Ok::<_, SessionError>((early_r, set_r, lid_r, begin_r, stmt_r, tail_r))
        };
        let (early_r, set_r, lid_r, begin_r, stmt_r, tail_r) = match phase1.await {
            Ok(x) => x,
            Err(e) => {
                for t in token.into_iter().chain(early) {
                    m.abandon(t);
                }
                return Err(e);
            }
        };
        if let Some(t) = early {
            if early_r.is_some_and(|r| r.err.is_none()) {
                self.marker = Some(Marker {
                    token: t,
                    mirror: Some(m.clone()),
                });
            } else {
                // No marker yet: COMMIT inserts one.
                m.abandon(t);
            }
        }
        let lid = lid_r.as_ref().and_then(|r| {
            first_row(r, cx.deprecate_eof())
                .and_then(|row| row.into_iter().next().flatten())
                .and_then(|v| String::from_utf8_lossy(&v).parse::<u64>().ok())
        });
        let failed = |r: &Option<Reply>| r.as_ref().is_some_and(|r| r.err.is_some());
        // A pin that did not take: the write ran with the primary's own
        // time, seeds or LAST_INSERT_ID(), which the record does not hold.
        let unpinned = failed(&set_r) || (uses.last_insert_id && lid.is_none());
        let aux_failed = unpinned || failed(&begin_r) || (autocommit && failed(&tail_r));
        let db = self.mirror_db(cx);
        let st = statement(db, insert_id_of(stmt_r.ok), lid);
        const UNPINNED: &str = "a write ran without the values Tandem pins (its SET TIMESTAMP or SELECT LAST_INSERT_ID() failed)";
        if !autocommit {
            if let Some(ok) = tail_r.as_ref().and_then(|r| r.ok).or(stmt_r.ok) {
                cx.status = ok.status_flags();
            }
            // (A failed statement sets it in `relay`.)
            if aux_failed {
                cx.after_error = true;
            }
            if stmt_r.err.is_none() {
                // The write stands in the transaction whatever failed
                // around it: mirrored, and marked when not pinned.
                if unpinned {
                    m.mark_divergent(&tables_of(std::slice::from_ref(&st)), UNPINNED);
                }
                self.txn.push(st);
            }
            return cx.relay(seq, stmt_r, false).await;
        }
        let token = token.unwrap_or_default();
        if failed(&begin_r) && stmt_r.err.is_none() {
            // Without its BEGIN the statement committed on its own, with
            // no marker and no intent: the client gets its answer, and the
            // tables are marked.
            m.abandon(token);
            if let Some(ok) = tail_r.as_ref().and_then(|r| r.ok).or(stmt_r.ok) {
                cx.status = ok.status_flags();
            }
            if pin {
                cx.run_aux(&[b"SET TIMESTAMP = DEFAULT"]).await?;
            }
            m.mark_divergent(
                &tables_of(std::slice::from_ref(&st)),
                "a write committed on the primary without the BEGIN Tandem wraps it in",
            );
            return cx.relay(seq, stmt_r, false).await;
        }
        if stmt_r.err.is_some() || aux_failed {
            m.abandon(token);
            let undo: &[&[u8]] = if pin {
                &[b"ROLLBACK", b"SET TIMESTAMP = DEFAULT"]
            } else {
                &[b"ROLLBACK"]
            };
            if let Some(ok) = cx.run_aux(undo).await? {
                cx.status = ok.status_flags();
            }
            let reply = if stmt_r.err.is_some() {
                Some(stmt_r)
            } else {
                [set_r, lid_r, begin_r, tail_r]
                    .into_iter()
                    .flatten()
                    .find(|r| r.err.is_some())
            };
            return match reply {
                Some(r) => cx.relay(seq, r, false).await,
                // LAST_INSERT_ID() answered something unreadable: the
                // statement was rolled back, which the client must hear.
                None => {
                    let msg = "Tandem: statement rolled back: its LAST_INSERT_ID() could not be read to mirror it";
                    cx.reply_err(seq, &ErrSpec::new(1105, "HY000", msg)).await
                }
            };
        }
        let txn = MirrorTxn {
            committed_at_us: now_us(),
            conn_id: cx.id,
            statements: vec![st],
        };
        let lsn = match m.intent(token, txn).await {
            Ok(lsn) => Some(lsn),
            Err(e) => {
                self.journal_failed(cx, m, &route.tables, &e.to_string());
                None
            }
        };
        let commit_p = query_packet(b"COMMIT");
        let commit_batch: Vec<&[u8]> = if pin {
            vec![&commit_p, &reset_p]
        } else {
            vec![&commit_p]
        };
        let replies = async {
            cx.send_backend(&commit_batch).await?;
            let c = cx.read_reply(Expect::ResultSet).await?;
            let r = if pin {
                Some(cx.read_reply(Expect::ResultSet).await?)
            } else {
                None
            };
            Ok::<_, SessionError>((c, r))
        };
        let (commit_r, reset_r) = match replies.await {
            Ok(x) => x,
            Err(e) => {
                match lsn {
                    Some(lsn) => m.in_doubt(lsn, token, Some(cx.backend_thread())),
                    None => m.abandon(token),
                }
                return Err(e);
            }
        };
        if let Some(ok) = reset_r.and_then(|r| r.ok).or(commit_r.ok) {
            cx.status = ok.status_flags();
        }
        if commit_r.err.is_some() {
            self.settle(m, lsn, token, false);
            return cx.relay(seq, commit_r, false).await;
        }
        m.stats.statements.fetch_add(1, Ordering::Relaxed);
        self.settle(m, lsn, token, true);
        cx.relay(seq, stmt_r, true).await
    }

    /// Whether writing to the route's tables reads the statement time (a
    /// timestamp default or ON UPDATE column, or a trigger), from the
    /// primary's information_schema, cached per table until DDL passes.
    async fn table_reads_time(
        &mut self,
        cx: &mut Link<'_>,
        m: &Mirror,
        route: &Route,
    ) -> Result<bool, SessionError> {
        let current = cx.binding.conn().current_db.clone();
        let mut unknown = Vec::new();
        for t in &route.tables {
            let (db, table) = match t.split_once('.') {
                Some((d, t)) => (Some(d.to_string()), t.to_string()),
                None => (current.clone(), t.clone()),
            };
            let Some(db) = db else { return Ok(true) };
            match m.reads_time(&db, &table) {
                Some(true) => return Ok(true),
                Some(false) => {}
                None => unknown.push((db, table)),
            }
        }
        for (db, table) in unknown {
            let lit = |s: &str| sql_literal(s.as_bytes());
            let sql = format!(
                "SELECT (SELECT COUNT(*) FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = {d} AND TABLE_NAME = {t} \
                 AND (UPPER(COLUMN_DEFAULT) LIKE '%CURRENT_TIMESTAMP%' OR UPPER(COLUMN_DEFAULT) LIKE '%NOW(%' \
                 OR UPPER(EXTRA) LIKE '%ON UPDATE%')) + \
                 (SELECT COUNT(*) FROM information_schema.TRIGGERS WHERE EVENT_OBJECT_SCHEMA = {d} AND EVENT_OBJECT_TABLE = {t})",
                d = lit(&db),
                t = lit(&table)
            );
            cx.send_backend(&[&query_packet(sql.as_bytes())]).await?;
            let reply = cx.read_reply(Expect::ResultSet).await?;
            // When in doubt, pin.
            let reads = first_row(&reply, cx.deprecate_eof())
                .and_then(|row| row.into_iter().next().flatten())
                .and_then(|v| String::from_utf8_lossy(&v).parse::<u64>().ok())
                .is_none_or(|n| n > 0);
            m.set_reads_time(&db, &table, reads);
            if reads {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// DDL: intent first (its metadata lock orders it against the writes
    /// around it), then the DDL, then the outcome.
    async fn mirrored_ddl(
        &mut self,
        cx: &mut Link<'_>,
        m: &Arc<Mirror>,
        route: &Route,
        payload: &[u8],
        sql: &[u8],
        seq: u8,
    ) -> Result<(), SessionError> {
        let sql = match self.for_secondary(cx, sql.to_vec()) {
            Ok(sql) => sql,
            Err(reason) => {
                return self
                    .unsafe_write(cx, m, &route.tables, &reason, payload, seq)
                    .await
            }
        };
        if let Some(done) = self
            .journal_room(cx, m, &route.tables, payload, seq)
            .await?
        {
            return Ok(done);
        }
        let vars = self.ensure_vars(cx).await?;
        let statement = MirrorStatement {
            db: self.mirror_db(cx),
            sql,
            tables: route.tables.clone(),
            ddl: true,
            pins: Pins::default(),
            session: vars.clone(),
        };
        let txn = MirrorTxn {
            committed_at_us: now_us(),
            conn_id: cx.id,
            statements: vec![statement],
        };
        let lsn = match m.intent(DDL_TOKEN, txn).await {
            Ok(lsn) => Some(lsn),
            Err(e) => {
                self.journal_failed(cx, m, &route.tables, &e.to_string());
                None
            }
        };
        let reply = match cx.send_backend(&[payload]).await {
            Ok(()) => cx.read_reply(Expect::ResultSet).await,
            Err(e) => Err(e),
        };
        let reply = match reply {
            Ok(r) => r,
            Err(e) => {
                // DDL carries no marker: an unknown answer is applied (a
                // replay that finds it done is skipped by the applier).
                self.settle(m, lsn, DDL_TOKEN, true);
                return Err(e);
            }
        };
        if let Some(ok) = reply.ok {
            cx.status = ok.status_flags();
        }
        if reply.err.is_none() {
            m.stats.statements.fetch_add(1, Ordering::Relaxed);
            m.schema_changed();
        }
        self.settle(m, lsn, DDL_TOKEN, reply.err.is_none());
        cx.relay(seq, reply, false).await
    }

    /// A write that cannot be mirrored deterministically.
    pub(super) async fn unsafe_write(
        &mut self,
        cx: &mut Link<'_>,
        m: &Arc<Mirror>,
        tables: &[String],
        reason: &str,
        payload: &[u8],
        seq: u8,
    ) -> Result<(), SessionError> {
        let policy = cx.shared.config.load().unsafe_writes;
        match policy {
            UnsafeWrites::Reject => {
                m.stats.unsafe_rejected.fetch_add(1, Ordering::Relaxed);
                warn!(conn = cx.id, reason, "unsafe write rejected");
                let msg = format!(
                    "Tandem: statement not executed: it cannot be mirrored deterministically ({reason}); migration.unsafe_writes is reject"
                );
                cx.reply_err(seq, &ErrSpec::new(1105, "HY000", msg)).await
            }
            UnsafeWrites::PrimaryOnly => {
                let summary = cx.forward(payload, seq, Expect::ResultSet).await?;
                if summary.error.is_none() {
                    m.stats.unsafe_primary_only.fetch_add(1, Ordering::Relaxed);
                    let tables = if tables.is_empty() {
                        vec!["(unknown)".to_string()]
                    } else {
                        tables.iter().map(|t| bare(t).to_string()).collect()
                    };
                    m.mark_divergent(
                        &tables,
                        &format!("unsafe write run on the primary only: {reason}"),
                    );
                }
                Ok(())
            }
        }
    }
}

/// Bound values of a COM_STMT_EXECUTE as SQL literals: stmt id (4), flags
/// (1), iteration count (4), NULL bitmap, new-params-bound flag, types (when
/// bound), then the non-NULL values that were not sent as long data.
/// Bound values of an execute as SQL literals. The parameter types are
/// `p.types`, which `carry_param_types` (session.rs) recorded from this
/// execute or an earlier one.
fn decode_params(payload: &[u8], p: &Prepared, nbe: bool) -> Option<Vec<String>> {
    use mysql_common::constants::{ColumnFlags, ColumnType};
    use mysql_common::io::ParseBuf;
    use mysql_common::value::{BinValue, Value, ValueDeserializer};
    let n = p.params as usize;
    if n == 0 {
        return Some(Vec::new());
    }
    let mut at = 10;
    let bitmap = payload.get(at..at + n.div_ceil(8))?;
    at += bitmap.len();
    let bound = *payload.get(at)?;
    at += 1;
    if bound == 1 {
        at += 2 * n;
    }
    if p.types.len() != n {
        return None;
    }
    let mut buf = ParseBuf(payload.get(at..)?);
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        if let Some(d) = p.long_data.get(&(i as u16)) {
            out.push(Value::Bytes(d.clone()).as_sql(nbe));
            continue;
        }
        if bitmap[i / 8] & (1 << (i % 8)) != 0 {
            out.push("NULL".into());
            continue;
        }
        let (t, unsigned) = p.types[i];
        let ct = ColumnType::try_from(t).ok()?;
        let flags = if unsigned {
            ColumnFlags::UNSIGNED_FLAG
        } else {
            ColumnFlags::empty()
        };
        let v: ValueDeserializer<BinValue> = buf.parse((ct, flags)).ok()?;
        out.push(match v.0 {
            // The server widens a FLOAT parameter exactly; print that value.
            Value::Float(f) => format!("{}", f as f64),
            other => other.as_sql(nbe),
        });
    }
    Some(out)
}

/// `db.t` → `t` (rules name bare tables).
fn bare(t: &str) -> &str {
    t.rsplit('.').next().unwrap_or(t)
}

/// A UUID in MySQL's UUID() text form (version 1 layout is not needed by
/// anything that compares them; a random v4 has the same shape).
fn new_uuid() -> String {
    let b: [u8; 16] = rand::random();
    let h = |r: std::ops::Range<usize>| b[r].iter().map(|x| format!("{x:02x}")).collect::<String>();
    format!(
        "{}-{}-{}-{}-{}",
        h(0..4),
        h(4..6),
        h(6..8),
        h(8..10),
        h(10..16)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_have_the_server_shape() {
        let u = new_uuid();
        assert_eq!(u.len(), 36);
        assert_eq!(u.matches('-').count(), 4);
    }
}
