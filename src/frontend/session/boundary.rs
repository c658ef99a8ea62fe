//! The cutover boundary: before a command, a statement that may open a
//! transaction or write passes the fence; outside a transaction, a session
//! still on a former primary moves to the current one, carrying its state.

use super::query::backend_sql;
use super::{Session, SessionError};
use crate::backend::BackendError;
use crate::protocol::command::COM_SET_OPTION;
use crate::protocol::response::Expect;
use crate::protocol::ProtocolError;
use crate::router::{lexer, Class, SessionOp};
use mysql_common::constants::StatusFlags;
use tracing::{debug, warn};

impl Session<'_> {
    /// After a command, while holding a fence ticket: releases it once no
    /// transaction or lock is open, else says what holds it (named by a
    /// cutover that waits too long).
    pub(super) fn note_holding(&mut self) {
        let why = if !self.in_txn() {
            self.ticket = None;
            None
        } else if self.link.table_locks {
            Some("holds LOCK TABLES")
        } else if self.replay.named_locks > 0 {
            Some("holds a named lock (GET_LOCK)")
        } else if self.link.xa_branch {
            Some("holds a prepared XA branch (XA PREPARE without its XA COMMIT or ROLLBACK)")
        } else if !self.stmts.long_data_pending.is_empty() {
            Some("has sent long data for a prepared statement it has not executed")
        } else {
            Some("is in a transaction")
        };
        let mut h = self.held();
        h.since = match (h.since, why) {
            (_, None) => None,
            (Some((since, _)), Some(why)) => Some((since, why)),
            (None, Some(why)) => Some((std::time::Instant::now(), why)),
        };
    }

    pub(super) fn held(&self) -> std::sync::MutexGuard<'_, crate::frontend::registry::Holding> {
        self.holding.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// In a transaction (or holding table locks): the session stays on its
    /// backend and keeps its fence ticket.
    pub(super) fn in_txn(&self) -> bool {
        self.link
            .status
            .contains(StatusFlags::SERVER_STATUS_IN_TRANS)
            || self.capture.has_writes()
            || self.link.table_locks
            || self.replay.named_locks > 0
            || self.link.xa_branch
            || !self.stmts.long_data_pending.is_empty()
    }

    /// Before a command: a statement that may start a transaction or write
    /// passes the cutover fence (waiting while it is closed); outside a
    /// transaction, a session still on a former primary moves to the
    /// current one first.
    pub(super) async fn boundary(&mut self, needs_ticket: bool) -> Result<(), SessionError> {
        let shared = self.link.shared;
        if needs_ticket && self.ticket.is_none() {
            let (ticket, waited) = shared.cutover.fence.enter().await;
            if let Some(d) = waited {
                shared.metrics.fence_wait.observe(d.as_secs_f64());
            }
            self.ticket = Some(ticket);
        }
        // An open cursor keeps a session that only reads (fetches, other
        // reads) where the cursor is; anything that needs the primary
        // moves it, and the cursor is gone (the server answers a later
        // fetch with its own error).
        let cursor_pins = !needs_ticket && !self.stmts.cursors.is_empty();
        if !self.in_txn() && !cursor_pins {
            let cfg = shared.config.load();
            if cfg.primary != self.link.binding.backend() {
                let to = cfg.primary.clone();
                drop(cfg);
                self.move_to(&to).await?;
            }
        }
        Ok(())
    }

    /// Whether a statement of `class` may open a transaction or write.
    pub(super) fn needs_ticket(&self, class: &Class) -> bool {
        if !self
            .link
            .status
            .contains(StatusFlags::SERVER_STATUS_AUTOCOMMIT)
        {
            // With autocommit off, anything but a session statement opens
            // a transaction.
            return !matches!(class, Class::Session(op) if *op != SessionOp::LockTables);
        }
        !matches!(class, Class::Read { .. } | Class::Session(_))
            || *class == Class::Session(SessionOp::LockTables)
    }

    /// Moves the session to backend `to` (the new primary after a
    /// cutover), carrying its state: current database (mapped to `to`'s),
    /// the multi-statement option, the session SETs it ran, and its
    /// prepared statements (re-prepared; client ids stay valid).
    async fn move_to(&mut self, to: &str) -> Result<(), SessionError> {
        let Some(pool) = self.link.shared.pools.load().get(to).cloned() else {
            return Err(BackendError::Protocol(ProtocolError::Malformed(
                "the new primary has no connection pool",
            ))
            .into());
        };
        let account = self
            .link
            .shared
            .config
            .load()
            .accounts
            .get(&self.user)
            .cloned();
        // What the session's next statements may ask of the connection it
        // leaves; the new one is given the same.
        let (last_insert_id, found_rows) = self
            .capture
            .session_values(&mut self.link)
            .await
            .unwrap_or((0, 0));
        // SETs that only assign variables are carried by value (their
        // expressions must not run again); the others are replayed.
        let (mut users, mut system, mut verbatim) = (Vec::new(), Vec::new(), Vec::new());
        let mut toks = Vec::new();
        for set in &self.replay.sets {
            lexer::tokenize(&set[1..], &mut toks);
            match super::state::assigned(&set[1..], &toks) {
                Some((u, s)) => {
                    users.extend(u);
                    system.extend(s);
                }
                None => verbatim.push(set.clone()),
            }
        }
        system.sort();
        system.dedup();
        let (carried, lost) = self
            .capture
            .carried_vars(&mut self.link, &users, &system)
            .await?;
        if !lost.is_empty() {
            warn!(
                conn = self.link.id,
                ?lost,
                "moving session: variables whose value cannot be written back are not carried"
            );
        }
        let mut lease = pool
            .acquire(
                self.link.caps,
                self.link.ext_caps,
                self.link.collation,
                account.as_ref(),
            )
            .await?;
        lease.reusable = false;
        let conn = lease.conn();
        let db = self.link.current_db_on(&self.link.shared.config.load(), to);
        if let Some(db) = &db {
            if conn.current_db.as_deref() != Some(db.as_str()) {
                // Never leave the session in another database than its
                // own: the move fails, the client gets the reason and its
                // connection closes (a reconnect starts afresh).
                if let Err(e) = conn.init_db(db).await {
                    warn!(conn = self.link.id, %db, error = %e, "moving session: cannot select its database");
                    let (code, message) = match e {
                        BackendError::Server { code, message } => (code, message),
                        e => (2013, e.to_string()),
                    };
                    return Err(BackendError::Server {
                        code,
                        message: format!(
                            "the session cannot move to the new primary {to}: selecting its database {db} failed there: {message}"
                        ),
                    }
                    .into());
                }
            }
        }
        let multi = self.link.binding.conn().multi_statements;
        if conn.multi_statements != multi {
            let option: u16 = if multi { 0 } else { 1 };
            let mut p = vec![COM_SET_OPTION];
            p.extend_from_slice(&option.to_le_bytes());
            conn.run(&p, Expect::Single).await?;
            conn.multi_statements = multi;
        }
        let carried = carried.iter().map(|sql| super::link::query_packet(sql));
        for set in verbatim.into_iter().chain(carried) {
            match conn.run(&set, Expect::ResultSet).await {
                Ok(_) => {}
                Err(BackendError::Server { code, message }) => warn!(
                    conn = self.link.id,
                    code,
                    %message,
                    sql = %String::from_utf8_lossy(&set[1..]),
                    "moving session: a SET it ran fails on the new primary"
                ),
                Err(e) => return Err(e.into()),
            }
        }
        if last_insert_id != 0 {
            let p = super::link::query_packet(
                format!("SELECT LAST_INSERT_ID({last_insert_id})").as_bytes(),
            );
            if let Err(e) = conn.run(&p, Expect::ResultSet).await {
                warn!(conn = self.link.id, error = %e, "moving session: cannot carry LAST_INSERT_ID() over");
            }
        }
        let mut lost = 0;
        for p in self.stmts.values_mut() {
            let mut toks = Vec::new();
            lexer::tokenize(&p.client_sql, &mut toks);
            let calls_id = p.route.calls_connection_id;
            match backend_sql(
                self.link.shared,
                self.link.id,
                to,
                &p.client_sql,
                &toks,
                calls_id,
            ) {
                Ok(t) => p.sql = t.unwrap_or_else(|| p.client_sql.clone()),
                Err(reason) => {
                    lost += 1;
                    warn!(conn = self.link.id, %reason, "moving session: a prepared statement cannot be renamed for the new primary");
                    p.backend_id = u32::MAX;
                    p.types_on_backend = false;
                    continue;
                }
            }
            p.param_spans = lexer::param_spans(&p.sql);
            match conn.prepare(&p.sql).await {
                Ok(id) => p.backend_id = id,
                Err(BackendError::Server { code, message }) => {
                    lost += 1;
                    warn!(conn = self.link.id, code, %message, "moving session: a prepared statement does not prepare on the new primary");
                    p.backend_id = u32::MAX;
                }
                Err(e) => return Err(e.into()),
            }
            p.types_on_backend = false;
        }
        lease.reusable = true;
        // The old connection goes back to its pool (reset there).
        let from = self.link.binding.rebind(lease, to);
        self.stmts.cursors.clear();
        self.capture.forget_vars();
        self.capture.hold_found_rows(found_rows);
        debug!(
            conn = self.link.id,
            %from,
            %to,
            statements = self.stmts.len(),
            lost,
            sets = self.replay.sets.len(),
            "session moved to the new primary"
        );
        Ok(())
    }
}
