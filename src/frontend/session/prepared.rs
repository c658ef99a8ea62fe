//! Prepared statements: the client holds Tandem's own statement ids, which
//! stay valid when the session moves to another backend; each maps to the
//! backend's id (and, with shards, will map to one id per shard). Here are
//! the map and the COM_STMT_* commands.

use super::capture::found_rows::{self, Effect};
use super::capture::params::{sent_types, types_flag_at};
use super::{Session, SessionError};
use crate::protocol::command::*;
use crate::protocol::response::Expect;
use crate::protocol::{ErrSpec, ProtocolError};
use crate::router::{lexer, Classified};
use mysql_common::constants::StatusFlags;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// A statement prepared through this session.
pub(super) struct Prepared {
    /// The backend's id for it (the client holds Tandem's own id, which
    /// stays valid when the session moves to another backend).
    pub backend_id: u32,
    /// The backend knows the parameter types (an execute sent them to this
    /// backend statement); false after a re-prepare on a new primary.
    pub types_on_backend: bool,
    pub route: Arc<Classified>,
    /// The text as prepared on the backend (the mirror renders bound values
    /// into it).
    pub sql: Vec<u8>,
    /// The text as the client sent it: a move to another backend prepares
    /// it again, as that backend should get it (`backend_sql`).
    pub client_sql: Vec<u8>,
    /// Where its `?` placeholders are in `sql` (found once, at prepare).
    pub param_spans: Vec<std::ops::Range<usize>>,
    pub params: u16,
    /// Parameter types from the last execute that sent them (type, unsigned).
    pub types: Vec<(u8, bool)>,
    /// COM_STMT_SEND_LONG_DATA chunks per parameter, until the next execute.
    pub long_data: HashMap<u16, Vec<u8>>,
}

/// The session's prepared statements by the client's id.
#[derive(Default)]
pub(super) struct Statements {
    map: HashMap<u32, Prepared>,
    /// The last id handed out.
    pub next_id: u32,
    /// Statements given long data (COM_STMT_SEND_LONG_DATA) not yet
    /// executed: the data is on the session's backend connection, so the
    /// session stays there (and holds its fence ticket) until the execute.
    pub long_data_pending: HashSet<u32>,
    /// Statements with an open cursor on the session's backend connection
    /// (executed with a cursor, not fetched to the end): a fetch stays on
    /// that connection.
    pub cursors: HashSet<u32>,
}

impl Statements {
    pub fn get(&self, id: &u32) -> Option<&Prepared> {
        self.map.get(id)
    }

    pub fn get_mut(&mut self, id: &u32) -> Option<&mut Prepared> {
        self.map.get_mut(id)
    }

    pub fn insert(&mut self, id: u32, p: Prepared) {
        self.map.insert(id, p);
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut Prepared> {
        self.map.values_mut()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn clear(&mut self) {
        self.map.clear();
        self.long_data_pending.clear();
        self.cursors.clear();
    }

    /// A statement is done with (closed or reset): no long data, no cursor.
    fn settle(&mut self, id: u32) {
        self.long_data_pending.remove(&id);
        self.cursors.remove(&id);
    }

    /// COM_STMT_SEND_LONG_DATA: keeps the chunk for rendering (only the
    /// mirror renders bound values, so only while it captures).
    pub fn long_data(&mut self, payload: &[u8]) {
        let (Some(id), Some(param)) = (
            stmt_id(payload),
            payload.get(5..7).map(|b| u16::from_le_bytes([b[0], b[1]])),
        ) else {
            return;
        };
        if let Some(p) = self.map.get_mut(&id) {
            p.long_data
                .entry(param)
                .or_default()
                .extend_from_slice(&payload[7..]);
        }
    }
}

impl Session<'_> {
    pub(super) async fn prepare(&mut self, payload: Vec<u8>, seq: u8) -> Result<(), SessionError> {
        let sql = &payload[1..];
        let route = self.link.shared.router.route(sql, &mut self.link.scratch);
        let sent = match self.sql_for_backend(sql, route.calls_connection_id, "prepared") {
            Ok(t) => t.map(|t| {
                let mut p = vec![COM_STMT_PREPARE];
                p.extend_from_slice(&t);
                p
            }),
            Err(err) => return self.link.reply_err(seq, &err).await,
        };
        let client_id = self.stmts.next_id.wrapping_add(1).max(1);
        let packet = sent.as_deref().unwrap_or(&payload);
        let summary = self
            .link
            .forward_with(packet, seq, Expect::Prepare, None, Some(client_id))
            .await?;
        if let Some((backend_id, _cols, params)) = summary.prepared {
            self.stmts.next_id = client_id;
            let client_sql = sql.to_vec();
            let sql = sent.as_ref().map_or(sql, |p| &p[1..]).to_vec();
            let param_spans = lexer::param_spans(&sql);
            self.stmts.insert(
                client_id,
                Prepared {
                    backend_id,
                    types_on_backend: false,
                    route,
                    sql,
                    client_sql,
                    param_spans,
                    params,
                    types: Vec::new(),
                    long_data: HashMap::new(),
                },
            );
        }
        Ok(())
    }

    /// The class of the client's statement `id` (None: unknown id).
    fn stmt_class(&self, id: Option<u32>) -> Option<crate::router::Class> {
        let p = self.stmts.get(&id?)?;
        p.route.statements.first().map(|r| r.class.clone())
    }

    /// COM_STMT_EXECUTE/FETCH/RESET: passes the boundary (an execute may
    /// need a fence ticket), maps the client's id to the backend's and, for
    /// an execute of a statement re-prepared by a move, re-sends parameter
    /// types the client sent earlier. None: the id is unknown (the client
    /// got ERR 1243).
    async fn stmt_command(
        &mut self,
        payload: Vec<u8>,
        seq: u8,
    ) -> Result<Option<Vec<u8>>, SessionError> {
        let cmd = payload[0];
        let id = stmt_id(&payload);
        if cmd == COM_STMT_EXECUTE {
            let class = self.stmt_class(id);
            let needs = class.as_ref().is_none_or(|c| self.needs_ticket(c));
            self.last_class = class.as_ref().map_or(5, crate::metrics::class_index);
            self.boundary(needs).await?;
        } else {
            self.boundary(false).await?;
        }
        let Some(mut payload) = self.map_stmt_id(payload)? else {
            let name = match cmd {
                COM_STMT_EXECUTE => "mysqld_stmt_execute",
                COM_STMT_FETCH => "mysqld_stmt_fetch",
                _ => "mysqld_stmt_reset",
            };
            let err = ErrSpec::new(
                1243,
                "HY000",
                format!(
                    "Unknown prepared statement handler ({}) given to {name}",
                    id.unwrap_or(0)
                ),
            );
            self.link.reply_err(seq, &err).await?;
            return Ok(None);
        };
        if cmd == COM_STMT_EXECUTE {
            if let Some(p) = id.and_then(|id| self.stmts.get_mut(&id)) {
                carry_param_types(&mut payload, p);
            }
        }
        Ok(Some(payload))
    }

    /// Rewrites the statement id of a COM_STMT_* packet from the client's
    /// (Tandem's) id to the backend's. None: no such statement here.
    fn map_stmt_id(&self, mut payload: Vec<u8>) -> Result<Option<Vec<u8>>, SessionError> {
        let id = stmt_id(&payload).ok_or(ProtocolError::Malformed("short statement command"))?;
        let Some(p) = self.stmts.get(&id) else {
            return Ok(None);
        };
        payload[1..5].copy_from_slice(&p.backend_id.to_le_bytes());
        Ok(Some(payload))
    }

    /// COM_STMT_EXECUTE. False when the id was unknown (answered with ERR
    /// 1243, no latency observed).
    pub(super) async fn execute(
        &mut self,
        payload: Vec<u8>,
        seq: u8,
    ) -> Result<bool, SessionError> {
        let id = stmt_id(&payload);
        let Some(payload) = self.stmt_command(payload, seq).await? else {
            return Ok(false);
        };
        if self.capture.held_found_rows().is_some() {
            // FOUND_ROWS() in a prepared statement cannot be rewritten:
            // the server is given the client's value back instead.
            let effect = id
                .and_then(|id| self.stmts.get_mut(&id))
                .map_or(Effect::Unknown, |p| {
                    let mut toks = Vec::new();
                    lexer::tokenize(&p.sql, &mut toks);
                    match found_rows::effect(&p.sql, &toks) {
                        _ if found_rows::calls(&p.sql, &toks) => Effect::Unknown,
                        e => e,
                    }
                });
            self.settle_found_rows(effect).await?;
        }
        if let (Some(n), Some(id)) = (self.capture.row_count(), id) {
            if self.execute_with_row_count(id, &payload, n, seq).await? {
                self.stmts.settle(id);
                return Ok(true);
            }
        }
        // CURSOR_TYPE_READ_ONLY in the execute's flags byte.
        let cursor = payload.get(5).is_some_and(|f| f & 0x01 != 0);
        if self.link.capturing().is_some() {
            self.capture
                .execute(&mut self.link, &mut self.stmts, id, payload, seq)
                .await?;
        } else {
            self.link.forward(&payload, seq, Expect::ResultSet).await?;
        }
        if let Some(id) = id {
            self.stmts.settle(id);
            if cursor
                && self
                    .link
                    .status
                    .contains(StatusFlags::SERVER_STATUS_CURSOR_EXISTS)
            {
                self.stmts.cursors.insert(id);
            }
        }
        Ok(true)
    }

    /// A read calling `ROW_COUNT()` right after Tandem's own statements
    /// reset the server's count: it runs as a statement prepared with the
    /// client's count in place of the call (same parameters, same column
    /// names), then closed. False: not such a read (or one whose execute
    /// does not carry its parameter types), run as usual.
    async fn execute_with_row_count(
        &mut self,
        id: u32,
        payload: &[u8],
        n: i64,
        seq: u8,
    ) -> Result<bool, SessionError> {
        let Some(p) = self.stmts.get(&id) else {
            return Ok(false);
        };
        if !matches!(
            p.route.statements.first().map(|r| &r.class),
            Some(crate::router::Class::Read { .. })
        ) {
            return Ok(false);
        }
        // Parameter types: a new statement must be sent them.
        let flag_at = types_flag_at(p.params as usize);
        if p.params > 0 && payload.get(flag_at) != Some(&1) {
            return Ok(false);
        }
        let mut toks = Vec::new();
        lexer::tokenize(&p.sql, &mut toks);
        let Some(text) = lexer::rewrite_calls(&p.sql, &toks, "ROW_COUNT", &n.to_string()) else {
            return Ok(false);
        };
        let Ok(tmp) = self.link.binding.conn().prepare(&text).await else {
            return Ok(false);
        };
        let mut run = payload.to_vec();
        run[1..5].copy_from_slice(&tmp.to_le_bytes());
        // No cursor: the rows come with the execute.
        if let Some(flags) = run.get_mut(5) {
            *flags &= !0x01;
        }
        self.link.forward(&run, seq, Expect::ResultSet).await?;
        let mut close = vec![COM_STMT_CLOSE];
        close.extend_from_slice(&tmp.to_le_bytes());
        self.link.send_to_backend(&close).await?;
        Ok(true)
    }

    /// COM_STMT_FETCH and COM_STMT_RESET (which also drops long data).
    pub(super) async fn fetch_or_reset(
        &mut self,
        payload: Vec<u8>,
        seq: u8,
    ) -> Result<(), SessionError> {
        let cmd = payload[0];
        let id = stmt_id(&payload);
        if cmd == COM_STMT_RESET {
            if let Some(p) = id.and_then(|id| self.stmts.get_mut(&id)) {
                p.long_data.clear();
            }
        }
        let expect = match cmd {
            COM_STMT_FETCH => Expect::Fetch,
            _ => Expect::Single,
        };
        let Some(payload) = self.stmt_command(payload, seq).await? else {
            return Ok(());
        };
        let summary = self.link.forward(&payload, seq, expect).await?;
        if let Some(id) = id {
            let ended = cmd == COM_STMT_RESET
                || summary.error.is_none()
                    && !self
                        .link
                        .status
                        .contains(StatusFlags::SERVER_STATUS_CURSOR_EXISTS)
                || self
                    .link
                    .status
                    .contains(StatusFlags::SERVER_STATUS_LAST_ROW_SENT);
            if ended {
                self.stmts.settle(id);
            }
        }
        Ok(())
    }

    /// COM_STMT_SEND_LONG_DATA and COM_STMT_CLOSE, which get no answer: an
    /// unknown id is dropped here, as the server would ignore it.
    pub(super) async fn unanswered(&mut self, payload: Vec<u8>) -> Result<(), SessionError> {
        let id = stmt_id(&payload);
        if payload[0] == COM_STMT_CLOSE {
            if let Some(id) = id {
                self.stmts.map.remove(&id);
                self.stmts.settle(id);
            }
        } else if let Some(id) = id.filter(|id| self.stmts.get(id).is_some()) {
            // The data goes to the connection the execute will run on: the
            // boundary first (a write takes its fence ticket now and keeps
            // it until the execute, so a cutover waits for it), then the
            // session stays put until the execute.
            if !self.stmts.long_data_pending.contains(&id) {
                let needs = self
                    .stmt_class(Some(id))
                    .as_ref()
                    .is_none_or(|c| self.needs_ticket(c));
                self.boundary(needs).await?;
                self.stmts.long_data_pending.insert(id);
            }
            if self.link.capturing().is_some() {
                self.stmts.long_data(&payload);
            }
        }
        if let Some(payload) = self.map_stmt_id(payload)? {
            self.link.send_to_backend(&payload).await?;
        }
        Ok(())
    }
}

/// COM_STMT_EXECUTE carries parameter types only when they change
/// (`new_params_bound_flag`); a statement re-prepared on a new backend has
/// none yet, so the types the client sent before are put in.
fn carry_param_types(payload: &mut Vec<u8>, p: &mut Prepared) {
    let n = p.params as usize;
    if n == 0 {
        return;
    }
    let flag_at = types_flag_at(n);
    match payload.get(flag_at) {
        Some(1) => {
            if let Some(types) = sent_types(payload, n) {
                p.types = types;
                p.types_on_backend = true;
            }
        }
        Some(0) if !p.types_on_backend && p.types.len() == n => {
            let types: Vec<u8> = p
                .types
                .iter()
                .flat_map(|(t, unsigned)| [*t, if *unsigned { 0x80 } else { 0 }])
                .collect();
            payload[flag_at] = 1;
            payload.splice(flag_at + 1..flag_at + 1, types);
            p.types_on_backend = true;
        }
        _ => {}
    }
}

pub(super) fn stmt_id(payload: &[u8]) -> Option<u32> {
    payload
        .get(1..5)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}
